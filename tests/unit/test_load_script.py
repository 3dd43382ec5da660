"""tests/scripts.py: a script file loads as a module registered under its name (dataclasses and pickle need
that), once, and a script that fails to load leaves nothing behind."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.scripts import load_script

SCRIPT = """
from __future__ import annotations
from dataclasses import dataclass

LOADS = [1]

@dataclass(frozen=True)
class Point:
    x: int
    y: list[int]
"""


@pytest.fixture
def write_script(tmp_path: Path) -> Iterator[Callable[[str, str], str]]:
    """write_script(name, text) -> path of a script file; its module is gone from sys.modules afterwards."""
    names: list[str] = []

    def write(name: str, text: str) -> str:
        assert name not in sys.modules
        names.append(name)
        path = tmp_path / f"{name}.py"
        path.write_text(text)
        return str(path)

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_a_script_loads_once_under_its_name_and_its_dataclasses_pickle(
    write_script: Callable[[str, str], str],
) -> None:
    name = "fraudwatch_test_load_script_ok"
    path = write_script(name, SCRIPT)
    module = load_script(path, name)
    assert sys.modules[name] is module
    point = module.Point(1, [2])
    assert pickle.loads(pickle.dumps(point)) == point  # noqa: S301 (our own bytes)
    module.LOADS.append(2)
    assert load_script(path, name) is module
    assert module.LOADS == [1, 2]  # not run again


def test_a_script_that_fails_to_load_is_not_registered(write_script: Callable[[str, str], str]) -> None:
    name = "fraudwatch_test_load_script_broken"
    path = write_script(name, "VALUE = 1\nraise RuntimeError('broken script')\n")
    with pytest.raises(RuntimeError, match="broken script"):
        load_script(path, name)
    assert name not in sys.modules
