"""`make compare-models` on a real stream table (written by the stream's own sink) and a real review-queue
table: paired counts, precision/recall at each model's decisions, AP, intervals, the analyst's verdict winning."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from fraudwatch.config import get_settings
from fraudwatch.events import ScoredTransaction
from fraudwatch_review.queue import ReviewQueue
from fraudwatch_stream.sinks import ScoredTable
from fraudwatch_training.__main__ import main
from fraudwatch_training.compare import compare, merge_labels, read_shadow_table, wilson

N = 400
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def _decide(scores: np.ndarray, review: float, decline: float) -> list[str]:
    return ["decline" if s >= decline else "review" if s >= review else "approve" for s in scores]


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    rng = np.random.default_rng(5)
    y = rng.random(N) < 0.1
    prod = np.clip(0.35 * y + rng.random(N) * 0.7, 0, 1)
    chal = np.clip(0.55 * y + rng.random(N) * 0.5, 0, 1)
    ids = [f"t{i}" for i in range(N)]
    table = ScoredTable(tmp_path / "stream" / "scored.sqlite")
    prod_dec, chal_dec = _decide(prod, 0.5, 0.8), _decide(chal, 0.5, 0.8)
    rows = []
    for i in range(N):
        shadow = ("7", float(chal[i]), chal_dec[i]) if i >= 20 else (None, None, None)  # 20 before the alias
        rows.append(
            (
                ids[i],
                "c",
                "t",
                i,
                float(prod[i]),
                prod_dec[i],
                "fraud-detector",
                "6",
                [0.0],
                "{}",
                1,
                0.0,
                *shadow,
            )
        )
    table.upsert(rows)
    table.close()
    # labels as the topic would hold them: all but the last 50 (not reported yet)
    topic = pd.DataFrame(
        {
            "transaction_id": ids[:-50],
            "is_fraud": y[:-50],
            "reported_at": [T0 + timedelta(days=3)] * (N - 50),
            "source": "simulator",
        }
    )
    return {"y": y, "prod": prod, "chal": chal, "ids": ids, "topic": topic, "dir": tmp_path}


def test_compare_counts_and_rates_on_the_labelled_paired_sample(world: dict[str, object]) -> None:
    y, prod, chal = world["y"], world["prod"], world["chal"]
    assert isinstance(y, np.ndarray) and isinstance(prod, np.ndarray) and isinstance(chal, np.ndarray)
    shadow = read_shadow_table(Path(str(world["dir"])) / "stream" / "scored.sqlite")
    assert len(shadow) == N - 20  # rows scored before the alias existed have no shadow score
    reports = compare(shadow, merge_labels([world["topic"]]), rounds=100)  # type: ignore[list-item]
    assert len(reports) == 1
    r = reports[0]
    sample = slice(20, N - 50)  # shadow-scored and labelled
    ys = y[sample]
    assert (r.production, r.challenger, r.transactions, r.frauds) == ("6", "7", N - 70, int(ys.sum()))
    for m, scores in zip(r.models, (prod[sample], chal[sample]), strict=True):
        alert = scores >= 0.5
        assert m.alerts == int(alert.sum()) and m.true_alerts == int((alert & ys).sum())
        assert m.precision_alert == pytest.approx((alert & ys).sum() / alert.sum())
        assert m.recall_alert == pytest.approx((alert & ys).sum() / ys.sum())
        assert m.precision_alert_ci[0] <= m.precision_alert <= m.precision_alert_ci[1]
        assert m.average_precision == pytest.approx(average_precision_score(ys, scores))
        low, high = m.average_precision_ci
        assert low < m.average_precision < high or math.isclose(low, high)
    # the challenger was built better here, and the comparison says so
    assert r.models[1].average_precision > r.models[0].average_precision
    assert r.disagreements == sum(
        a != b for a, b in zip(_decide(prod[sample], 0.5, 0.8), _decide(chal[sample], 0.5, 0.8), strict=True)
    )


def test_an_analyst_verdict_wins_over_a_later_other_label(world: dict[str, object], tmp_path: Path) -> None:
    y = world["y"]
    assert isinstance(y, np.ndarray)
    target = int(np.flatnonzero(~y[20:-50])[0]) + 20  # a genuine transaction per the topic
    queue = ReviewQueue(tmp_path / "review.sqlite")
    record = {
        "transaction_id": f"t{target}",
        "event_time": T0.isoformat(),
        "card_id": "c",
        "terminal_id": "t",
        "amount": 10.0,
        "currency": "EUR",
        "score": 0.6,
        "decision": "review",
        "model_name": "fraud-detector",
        "model_version": "6",
        "reasons": [],
        "scored_at": T0.isoformat(),
    }
    queue.add(ScoredTransaction.model_validate_json(orjson.dumps(record)))
    assert queue.decide(f"t{target}", "fraud", "alice", None, T0 + timedelta(days=1))  # before the topic's
    queue.close()
    from fraudwatch_training.data import read_analyst_labels

    labels = merge_labels([world["topic"], read_analyst_labels(tmp_path / "review.sqlite")])  # type: ignore[list-item]
    assert (
        bool(labels.loc[f"t{target}", "is_fraud"]) and labels.loc[f"t{target}", "source"] == "analyst:alice"
    )
    shadow = read_shadow_table(Path(str(world["dir"])) / "stream" / "scored.sqlite")
    (r,) = compare(shadow, labels, rounds=10)
    assert r.frauds == int(y[20:-50].sum()) + 1 and r.analyst_labels == 1


def test_the_cli_prints_and_writes_json(
    world: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUDWATCH_LOCAL_DIR", str(world["dir"]))
    get_settings.cache_clear()
    out = tmp_path / "compare.json"
    try:
        assert main(["compare-models", "--no-topic", "--json", str(out)]) == 0  # no analyst labels: empty
        assert json.loads(out.read_text()) == []
        labels = world["topic"]
        assert isinstance(labels, pd.DataFrame)
        db = tmp_path / "review.sqlite"
        queue = ReviewQueue(db)
        for tx_id, fraud in zip(labels["transaction_id"][20:120], labels["is_fraud"][20:120], strict=True):
            record = {
                "transaction_id": tx_id,
                "event_time": T0.isoformat(),
                "card_id": "c",
                "terminal_id": "t",
                "amount": 1.0,
                "currency": "EUR",
                "score": 0.6,
                "decision": "review",
                "model_name": "fraud-detector",
                "model_version": "6",
                "reasons": [],
                "scored_at": T0.isoformat(),
            }
            queue.add(ScoredTransaction.model_validate_json(orjson.dumps(record)))
            queue.decide(tx_id, "fraud" if fraud else "genuine", "bob", None, T0 + timedelta(days=1))
        queue.close()
        assert main(["compare-models", "--no-topic", "--review-db", str(db), "--json", str(out)]) == 0
        (report,) = json.loads(out.read_text())
        assert report["transactions"] == 100 and report["analyst_labels"] == 100
        assert [m["role"] for m in report["models"]] == ["production", "challenger"]
        missing = main(["compare-models", "--no-topic", "--scored", str(tmp_path / "nope.sqlite")])
        assert missing == 2
    finally:
        get_settings.cache_clear()


def test_wilson_interval() -> None:
    assert all(math.isnan(v) for v in wilson(0, 0))  # no trials, no interval
    low, high = wilson(0, 10)
    assert low == 0.0 and 0.2 < high < 0.35
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
