"""Load the repository's script files (scripts/, bench/, monitoring/: not packages) as modules in tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_script(path: str, name: str) -> ModuleType:
    """The file ``path`` (relative to the repository root) as module ``name``, loaded once per session.

    The module is registered in ``sys.modules`` under ``name`` before it runs, as an import would: its
    dataclasses and pickling look the module up there by name. Later calls with the same ``name`` return that
    module, so conftest.py and the tests share one module object. A file that fails to load leaves nothing
    registered.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
