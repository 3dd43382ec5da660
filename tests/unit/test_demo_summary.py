"""The demo summary's live-vs-offline comparison: the Wilson interval, which labels each figure may use
(labels arrive late, frauds sooner than genuine confirmations), and the tolerance verdicts."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo() -> Any:
    name = "fraudwatch_demo"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "demo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


demo = _demo()
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _scored(decisions: list[str]) -> dict[str, dict[str, Any]]:
    return {
        f"t{i}": {"event_time": (T0 + timedelta(seconds=i)).isoformat(), "decision": d}
        for i, d in enumerate(decisions)
    }


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 1000, 0.0002, 0.0057)],
)
def test_wilson_interval_matches_the_textbook_values(k: int, n: int, lo: float, hi: float) -> None:
    got = demo.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_no_labels_is_the_whole_unit_interval() -> None:
    assert demo.wilson(0, 0) == (0.0, 1.0)


def test_precision_uses_only_the_matured_window_and_recall_every_labelled_fraud() -> None:
    # t0..t9 flagged; t0..t4 frauds labelled early; genuine confirmations only up to t6 so far
    scored = _scored(["review"] * 5 + ["decline", "approve", "review", "review", "approve"])
    labels = {f"t{i}": True for i in range(5)} | {"t5": False, "t6": False, "t9": True}
    offline = {"precision at review": 0.8, "recall at review": 0.8, "precision at decline": 0.9}
    q = demo.alert_quality(scored, labels, offline)
    by = {f.name: f for f in q.figures}
    # matured = t0..t6 (latest genuine label is t6); labelled flagged there: t0..t5 -> 5 frauds of 6
    assert (by["precision at review"].hits, by["precision at review"].n) == (5, 6)
    # recall: labelled frauds t0..t4 and t9; flagged among them t0..t4
    assert (by["recall at review"].hits, by["recall at review"].n) == (5, 6)
    # decline: only t5 (genuine) is declined
    assert (by["precision at decline"].hits, by["precision at decline"].n) == (0, 1)
    assert by["recall at decline"].hits == 0
    assert q.matured == 7 and q.labelled == 8 and q.labelled_frauds == 6
    assert by["precision at review"].verdict == "within"
    assert by["precision at decline"].verdict.startswith("too few labels")
    assert by["recall at decline"].verdict == "no offline figure"


def test_without_a_genuine_label_precision_is_not_estimated_and_the_summary_says_why() -> None:
    # only frauds labelled so far: the naive precision over labelled alerts would be a meaningless 1.0
    scored = _scored(["review"] * 8)
    labels = {f"t{i}": True for i in range(8)}
    q = demo.alert_quality(scored, labels, {"precision at review": 0.5})
    precision = next(f for f in q.figures if f.name == "precision at review")
    assert precision.n == 0 and q.unlabelled_genuine_window
    assert any("no genuine label" in line for line in demo.explain(q))


def test_a_figure_outside_its_interval_is_flagged_and_explained() -> None:
    # 40 flagged and labelled, 4 frauds: 0.10 [0.04, 0.23] cannot be an offline 0.80
    scored = _scored(["review"] * 40 + ["approve"] * 10)
    labels = {f"t{i}": i < 4 for i in range(50)}
    q = demo.alert_quality(scored, labels, {"precision at review": 0.8})
    precision = next(f for f in q.figures if f.name == "precision at review")
    assert precision.verdict == "outside"
    lines = demo.explain(q)
    assert any(line.startswith("precision at review: 0.100 from 4/40") for line in lines)
    assert any("unlike the model's test period" in line for line in lines)


def test_stream_lag_is_read_per_topic_from_the_metrics_text() -> None:
    text = (
        "# TYPE fraudwatch_stream_kafka_lag gauge\n"
        'fraudwatch_stream_kafka_lag{topic="transactions"} 120.0\n'
        'fraudwatch_stream_kafka_lag{topic="labels"} 0.0\n'
    )
    assert demo.stream_lag(text) == {"transactions": 120.0, "labels": 0.0}
    assert demo.stream_lag("") == {}
