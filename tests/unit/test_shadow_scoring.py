"""Shadow scoring in the stream: the challenger scores the same rows next to production, is never acted on,
and whatever it does wrong only leaves its own columns null (the real job: tests/integration/test_stream.py).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from fraudwatch.config import Settings
from fraudwatch.events import ScoredTransaction
from fraudwatch_stream import scoring, stateful
from fraudwatch_stream.job import model_config
from fraudwatch_stream.metrics import StreamMetrics
from fraudwatch_stream.records import unpack_features
from fraudwatch_stream.scoring import (
    CHALLENGER_COLUMNS,
    LoadedModel,
    ModelConfig,
    current_challenger,
    score_transactions,
)
from fraudwatch_stream.sinks import ScoredTable
from tests.unit.test_fuzz_stream import _features_for, _Model, _tx

CONFIG = ModelConfig(
    "unused", "models:/fraud-detector@production", "fraud-detector", "production", 60.0, "challenger"
)


@pytest.fixture(autouse=True)
def _fresh_worker() -> Iterator[None]:
    stateful._CACHE.clear()
    scoring._CHALLENGER.model, scoring._CHALLENGER.config = None, None
    scoring._CHALLENGER.checked_at = float("-inf")
    yield
    stateful._CACHE.clear()
    scoring._CHALLENGER.model, scoring._CHALLENGER.config = None, None


class _Shifted(_Model):
    """A challenger that spreads its scores over 0..1 (so its decisions differ from production's), or fails."""

    def __init__(self, fail: bool = False, nan_row: int | None = None) -> None:
        super().__init__()
        self.fail, self.nan_row = fail, nan_row

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        if self.fail:
            raise ValueError("challenger broke")
        scores = np.linspace(0.05, 0.95, len(x))
        if self.nan_row is not None:
            scores[self.nan_row] = np.nan
        return scores

    def decide(self, scores: np.ndarray) -> list[str]:
        return ["decline" if s >= 0.7 else "review" if s >= 0.3 else "approve" for s in scores]


def _loaded(model: _Model, version: str) -> LoadedModel:
    return LoadedModel(name="fraud-detector", version=version, model=model, columns=None)


def _rows() -> pd.DataFrame:
    return _features_for([_tx(f"s{i}", i, amount=1.0 + 200.0 * i) for i in range(6)])


def _score(monkeypatch: pytest.MonkeyPatch, challenger: LoadedModel | None) -> pd.DataFrame:
    monkeypatch.setattr(scoring, "current_model", lambda _config: _loaded(_Model(), "1"))
    monkeypatch.setattr(scoring, "current_challenger", lambda _config, _production: challenger)
    return score_transactions(_rows(), CONFIG)


def test_the_challenger_scores_every_row_and_production_output_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alone = _score(monkeypatch, None)
    shadowed = _score(monkeypatch, _loaded(_Shifted(), "2"))
    for column in ("score", "decision", "model_version", "error"):
        assert alone[column].tolist() == shadowed[column].tolist(), column
    # the published JSON is production's only (scored_at aside, which is the clock)
    for a, b in zip(alone["value"], shadowed["value"], strict=True):
        one, two = orjson.loads(a), orjson.loads(b)
        one.pop("scored_at"), two.pop("scored_at")
        assert one == two and "challenger" not in b
        ScoredTransaction.model_validate_json(b)
    assert alone["challenger_version"].isna().all() and alone["challenger_score"].isna().all()
    assert shadowed["challenger_version"].tolist() == ["2"] * len(shadowed)
    matrix = np.hstack((unpack_features(shadowed["cfeat"]), unpack_features(shadowed["tfeat"])))
    expected = _Shifted().score_matrix(matrix)
    np.testing.assert_array_equal(shadowed["challenger_score"].to_numpy(), expected)
    assert shadowed["challenger_decision"].tolist() == _Shifted().decide(expected)
    assert shadowed["challenger_decision"].tolist() != shadowed["decision"].tolist()  # the shift shows


def test_a_failing_challenger_leaves_its_columns_null_and_production_scored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = _score(monkeypatch, _loaded(_Shifted(fail=True), "2"))
    assert out["error"].isna().all() and out["value"].notna().all()
    for column in CHALLENGER_COLUMNS:
        assert out[column].isna().all(), column


def test_a_row_the_challenger_cannot_score_is_null_there_only(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _score(monkeypatch, _loaded(_Shifted(nan_row=2), "2"))
    missing = out["challenger_score"].isna().tolist()
    assert missing == [False, False, True, False, False, False]
    assert out["challenger_version"].isna().tolist() == missing
    assert out["challenger_decision"].isna().tolist() == missing
    assert out["error"].isna().all()


def test_a_row_production_cannot_score_has_no_shadow_answer_either(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    cfeat = unpack_features(rows["cfeat"]).copy()
    cfeat[1, 0] = math.inf
    rows["cfeat"] = [row.tobytes() for row in cfeat.astype("<f8")]
    monkeypatch.setattr(scoring, "current_model", lambda _config: _loaded(_Model(), "1"))
    monkeypatch.setattr(scoring, "current_challenger", lambda _c, _p: _loaded(_Shifted(), "2"))
    out = score_transactions(rows, CONFIG)
    assert out["error"].notna().tolist() == [False, True, False, False, False, False]
    assert out["challenger_score"].isna().tolist() == [False, True, False, False, False, False]


# ------------------------------------------------------------------------------ following the alias
class _Registry:
    """The two registry calls current_challenger makes, with the failures a real registry can give."""

    def __init__(self) -> None:
        self.version: str | None = "2"
        self.down = False
        self.lookups = 0
        self.loads: list[str] = []
        self.load_fails = False

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        self.lookups += 1
        if self.down:
            raise MlflowException("API request failed: connection refused", error_code="INTERNAL_ERROR")
        if self.version is None:
            raise MlflowException(f"alias {alias} not found", error_code="INVALID_PARAMETER_VALUE")
        return type("MV", (), {"version": self.version})()

    def load(self, config: ModelConfig, name: str, version: str) -> LoadedModel:
        self.loads.append(version)
        if self.load_fails:
            raise OSError("artifact store unreachable")
        return _loaded(_Shifted(), version)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> _Registry:
    reg = _Registry()
    monkeypatch.setattr(scoring, "_client", lambda _config: reg)
    monkeypatch.setattr(scoring, "_load", reg.load)
    clock = iter(float(t) for t in range(0, 10_000, 100))  # every call is a poll later than the last
    monkeypatch.setattr(scoring.time, "monotonic", lambda: next(clock))
    return reg


PRODUCTION = LoadedModel(name="fraud-detector", version="1", model=_Model(), columns=None)


def test_the_challenger_follows_its_alias(registry: _Registry) -> None:
    assert current_challenger(CONFIG, PRODUCTION).version == "2"  # type: ignore[union-attr]
    registry.version = "3"
    assert current_challenger(CONFIG, PRODUCTION).version == "3"  # type: ignore[union-attr]
    assert registry.loads == ["2", "3"]
    registry.version = "1"  # the challenger is production now: nothing to compare
    assert current_challenger(CONFIG, PRODUCTION) is None
    registry.version = None  # alias removed
    assert current_challenger(CONFIG, PRODUCTION) is None


def test_a_registry_outage_keeps_the_challenger_and_a_failed_load_is_retried(registry: _Registry) -> None:
    assert current_challenger(CONFIG, PRODUCTION).version == "2"  # type: ignore[union-attr]
    registry.down = True
    assert current_challenger(CONFIG, PRODUCTION).version == "2"  # type: ignore[union-attr]
    registry.down, registry.version, registry.load_fails = False, "4", True
    assert current_challenger(CONFIG, PRODUCTION) is None
    registry.load_fails = False
    assert current_challenger(CONFIG, PRODUCTION).version == "4"  # type: ignore[union-attr]
    assert registry.loads == ["2", "4", "4"]


def test_no_shadow_without_an_alias_to_follow(registry: _Registry) -> None:
    no_alias = ModelConfig(
        "unused", "models:/fraud-detector@production", "fraud-detector", "production", 60.0
    )
    local = ModelConfig("unused", "/models/m", "fraud-detector", None, 60.0, "challenger")
    assert current_challenger(no_alias, PRODUCTION) is None
    assert current_challenger(local, PRODUCTION) is None
    assert registry.lookups == 0


def test_the_job_shadows_the_configured_alias_unless_it_serves_it() -> None:
    assert model_config(Settings()).challenger_alias == "challenger"
    assert model_config(Settings(model_alias="challenger")).challenger_alias is None
    # the same setting as the API's: another alias, or none
    assert model_config(Settings(shadow_alias="candidate")).challenger_alias == "candidate"
    assert model_config(Settings(shadow_alias="")).challenger_alias is None
    assert model_config(Settings(shadow_alias="candidate", model_alias="candidate")).challenger_alias is None


# ------------------------------------------------------------------------------ table and metrics
def _row(tx_id: str, *challenger: Any) -> tuple[Any, ...]:
    base = (tx_id, "c", "t", 1, 0.5, "approve", "fraud-detector", "1", [0.1, 0.2], "{}", 7, 1.0)
    return (*base, *challenger)


def test_an_older_table_gains_the_challenger_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "scored.sqlite"
    with sqlite3.connect(path) as con:  # the layout before shadow scoring
        con.execute(
            "CREATE TABLE scored (transaction_id TEXT PRIMARY KEY, card_id TEXT NOT NULL, "
            "terminal_id TEXT NOT NULL, event_time_us INTEGER NOT NULL, score REAL NOT NULL, "
            "decision TEXT NOT NULL, model_name TEXT NOT NULL, model_version TEXT NOT NULL, "
            "features TEXT NOT NULL, value TEXT NOT NULL, batch_id INTEGER NOT NULL, written_at REAL NOT NULL)"
        )
        con.execute(
            "INSERT INTO scored VALUES ('old', 'c', 't', 1, 0.1, 'approve', 'm', '1', '[]', '{}', 0, 0)"
        )
    table = ScoredTable(path)
    table.upsert([_row("new", "2", 0.9, "decline"), _row("nan", None, float("nan"), None), _row("short")])
    table.close()
    ScoredTable(path).close()  # opening again migrates nothing twice
    with sqlite3.connect(path) as con:
        got = {
            r[0]: r[1:]
            for r in con.execute(
                "SELECT transaction_id, challenger_version, challenger_score, challenger_decision FROM scored"
            )
        }
    assert got == {
        "old": (None, None, None),
        "new": ("2", 0.9, "decline"),
        "nan": (None, None, None),
        "short": (None, None, None),
    }


def test_shadow_metrics_count_decisions_and_disagreements() -> None:
    metrics = StreamMetrics()
    metrics.count_shadow(
        ["approve", "approve", "review", "decline", "approve"], ["approve", "review", None, "decline", np.nan]
    )

    def value(name: str, **labels: str) -> float:
        got = metrics.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got

    assert value("fraudwatch_stream_shadow_decisions_total", decision="approve") == 1
    assert value("fraudwatch_stream_shadow_decisions_total", decision="review") == 1
    assert value("fraudwatch_stream_shadow_decisions_total", decision="decline") == 1
    assert (
        value("fraudwatch_stream_shadow_disagreements_total", production="approve", challenger="review") == 1
    )
    assert (
        value("fraudwatch_stream_shadow_disagreements_total", production="decline", challenger="decline") == 0
    )
