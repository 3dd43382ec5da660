"""``make compare-models``: production against its shadow (the challenger) on the live traffic labelled so far.

The stream records, for every transaction, production's score and decision and — while a ``challenger``
alias exists — the challenger's, in its authoritative table (``<local_dir>/stream/scored.sqlite``,
docs/stream.md). Labels arrive later: on the ``labels`` topic (chargebacks, the simulator, analysts) and in
the review queue's table (analyst decisions). Joined by transaction_id, the transactions both models scored
and that have a label are a paired sample: each model's precision and recall *at its own thresholds* (an
alert is review or decline, exactly the decisions each model took) and its average precision, with counts
and 95 % intervals, so that a promotion rests on live evidence and not only on the offline validation set.

Labels: one per transaction; an analyst's verdict wins over any other, otherwise the latest reported. A
transaction without a label yet is left out (not counted as genuine): the sample is what is known.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraudwatch.config import Settings
from fraudwatch_training.data import read_analyst_labels

__all__ = [
    "ModelReport",
    "PairReport",
    "compare",
    "labels_from_topic",
    "merge_labels",
    "read_shadow_table",
    "scored_table_path",
    "wilson",
]

ALERTS = ("review", "decline")
Z95 = 1.959963984540054


def scored_table_path(settings: Settings) -> Path:
    """Where the stream writes its authoritative table (fraudwatch_stream.sinks.scored_table_path)."""
    return Path(settings.local_dir) / "stream" / "scored.sqlite"


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound at small counts and at 0 or 1, unlike the normal one)."""
    if trials == 0:
        return (math.nan, math.nan)
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def read_shadow_table(path: Path) -> pd.DataFrame:
    """The shadow-scored rows of the stream's table: both models' version, score and decision."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no scored table (has `make stream` run?)")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        present = {row[1] for row in con.execute("PRAGMA table_info(scored)")}
        if "challenger_version" not in present:
            return pd.DataFrame(
                columns=[
                    *("transaction_id", "model_version", "score", "decision"),
                    *("challenger_version", "challenger_score", "challenger_decision"),
                ]
            )
        return pd.read_sql(
            "SELECT transaction_id, model_version, score, decision, challenger_version, challenger_score, "
            "challenger_decision FROM scored WHERE challenger_score IS NOT NULL",
            con,
        )


def labels_from_topic(settings: Settings, timeout: float = 30.0) -> pd.DataFrame:
    """Every label on the ``labels`` topic now (from the start to the current end of each partition).

    Records that are not valid labels are skipped (the stream dead-letters them; they label nothing).
    """
    from confluent_kafka import Consumer, TopicPartition

    from fraudwatch.events import Label

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": "fraudwatch-compare-models",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    rows: list[dict[str, Any]] = []
    try:
        meta = consumer.list_topics(settings.topic_labels, timeout=timeout).topics[settings.topic_labels]
        if meta.error is not None:
            raise RuntimeError(f"topic {settings.topic_labels}: {meta.error}")
        ends: dict[int, int] = {}
        parts = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic_labels, p), timeout=timeout
            )
            if high > low:
                ends[p] = high
                parts.append(TopicPartition(settings.topic_labels, p, low))
        consumer.assign(parts)
        while ends:
            batch = consumer.consume(1000, timeout=timeout)
            if not batch:
                raise TimeoutError(f"no record from {settings.topic_labels} within {timeout:.0f} s")
            for msg in batch:
                if msg.error():
                    continue
                if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                    ends.pop(msg.partition(), None)
                try:
                    label = Label.model_validate_json(msg.value() or b"")
                except ValueError:
                    continue
                rows.append(
                    {
                        "transaction_id": label.transaction_id,
                        "is_fraud": label.is_fraud,
                        "reported_at": pd.Timestamp(label.reported_at),
                        "source": label.source or "",
                    }
                )
    finally:
        consumer.close()
    return pd.DataFrame(rows, columns=["transaction_id", "is_fraud", "reported_at", "source"])


def merge_labels(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One label per transaction_id: an analyst's verdict wins (the latest of them), else the latest label."""
    parts = [f for f in frames if len(f)]
    if not parts:
        return pd.DataFrame(columns=["is_fraud", "source"], index=pd.Index([], name="transaction_id"))
    every = pd.concat(parts, ignore_index=True)
    every["analyst"] = every["source"].fillna("").astype(str).str.startswith("analyst")
    every["reported_at"] = pd.to_datetime(every["reported_at"], utc=True)
    every = every.sort_values(["analyst", "reported_at"], kind="stable")
    return every.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")[
        ["is_fraud", "source"]
    ]


@dataclass(frozen=True)
class ModelReport:
    """One model on the paired sample: counts, precision/recall at its thresholds with Wilson intervals, AP."""

    role: str
    version: str
    alerts: int
    true_alerts: int
    declines: int
    true_declines: int
    precision_alert: float
    precision_alert_ci: tuple[float, float]
    recall_alert: float
    recall_alert_ci: tuple[float, float]
    precision_decline: float
    precision_decline_ci: tuple[float, float]
    recall_decline: float
    recall_decline_ci: tuple[float, float]
    average_precision: float
    average_precision_ci: tuple[float, float]


@dataclass(frozen=True)
class PairReport:
    """Production vs challenger on the transactions both scored that have a label."""

    production: str
    challenger: str
    transactions: int
    frauds: int
    analyst_labels: int
    disagreements: int
    models: tuple[ModelReport, ModelReport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ap(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, scores)) if 0 < y.sum() < len(y) else math.nan


def _ap_interval(y: np.ndarray, scores: np.ndarray, rounds: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap (resampling transactions) of the average precision."""
    if not 0 < y.sum() < len(y):
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        value = _ap(y[pick], scores[pick])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return (math.nan, math.nan)
    low, high = np.percentile(values, [2.5, 97.5])
    return (float(low), float(high))


def _model(
    role: str, version: str, y: np.ndarray, scores: np.ndarray, decisions: np.ndarray, rounds: int, seed: int
) -> ModelReport:
    alert = np.isin(decisions, ALERTS)
    decline = decisions == "decline"
    frauds = int(y.sum())
    ta, td = int((alert & (y == 1)).sum()), int((decline & (y == 1)).sum())

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    return ModelReport(
        role=role,
        version=version,
        alerts=int(alert.sum()),
        true_alerts=ta,
        declines=int(decline.sum()),
        true_declines=td,
        precision_alert=ratio(ta, int(alert.sum())),
        precision_alert_ci=wilson(ta, int(alert.sum())),
        recall_alert=ratio(ta, frauds),
        recall_alert_ci=wilson(ta, frauds),
        precision_decline=ratio(td, int(decline.sum())),
        precision_decline_ci=wilson(td, int(decline.sum())),
        recall_decline=ratio(td, frauds),
        recall_decline_ci=wilson(td, frauds),
        average_precision=_ap(y, scores),
        average_precision_ci=_ap_interval(y, scores, rounds, seed),
    )


def compare(shadow: pd.DataFrame, labels: pd.DataFrame, rounds: int = 300, seed: int = 0) -> list[PairReport]:
    """One report per (production version, challenger version) pair seen in the shadow-scored rows."""
    joined = shadow.join(labels, on="transaction_id", how="inner")
    reports = []
    for (prod, chal), rows in joined.groupby(["model_version", "challenger_version"], sort=True):
        y = rows["is_fraud"].astype(bool).to_numpy().astype(np.int64)
        both = (
            _model(
                "production",
                str(prod),
                y,
                rows["score"].to_numpy(np.float64),
                rows["decision"].to_numpy(object),
                rounds,
                seed,
            ),
            _model(
                "challenger",
                str(chal),
                y,
                rows["challenger_score"].to_numpy(np.float64),
                rows["challenger_decision"].to_numpy(object),
                rounds,
                seed,
            ),
        )
        reports.append(
            PairReport(
                production=str(prod),
                challenger=str(chal),
                transactions=len(rows),
                frauds=int(y.sum()),
                analyst_labels=int(rows["source"].fillna("").astype(str).str.startswith("analyst").sum()),
                disagreements=int((rows["decision"] != rows["challenger_decision"]).sum()),
                models=both,
            )
        )
    return reports


def _fmt(value: float, ci: tuple[float, float]) -> str:
    if math.isnan(value):
        return "—"
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def render(reports: list[PairReport], echo: Any) -> None:
    """The comparison as rich tables (one per model pair)."""
    from rich.table import Table

    if not reports:
        echo(
            "no labelled shadow-scored transactions yet (is a challenger alias set, and have labels arrived?)"
        )
        return
    for r in reports:
        table = Table(
            title=(
                f"production v{r.production} vs challenger v{r.challenger}: {r.transactions:,} labelled "
                f"transactions, {r.frauds:,} frauds ({r.analyst_labels:,} analyst labels), "
                f"{r.disagreements:,} decisions differ"
            )
        )
        for column in ("model", "alerts (true)", "precision@alert", "recall@alert", "declines (true)"):
            table.add_column(column, justify="right")
        for column in ("precision@decline", "recall@decline", "AP"):
            table.add_column(column, justify="right")
        for m in r.models:
            table.add_row(
                f"{m.role} v{m.version}",
                f"{m.alerts:,} ({m.true_alerts:,})",
                _fmt(m.precision_alert, m.precision_alert_ci),
                _fmt(m.recall_alert, m.recall_alert_ci),
                f"{m.declines:,} ({m.true_declines:,})",
                _fmt(m.precision_decline, m.precision_decline_ci),
                _fmt(m.recall_decline, m.recall_decline_ci),
                _fmt(m.average_precision, m.average_precision_ci),
            )
        echo(table)
    echo("[brackets]: 95 % intervals (Wilson for precision/recall, bootstrap over transactions for AP)")


def _finite(value: Any) -> Any:
    """NaN (a rate over nothing) as null: strict JSON has no NaN."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def run(
    settings: Settings,
    scored: Path | None,
    review_db: Path | None,
    use_topic: bool,
    out: Path | None,
    echo: Any,
) -> list[PairReport]:
    """Read the table and the labels, compare, print, and write JSON to ``out`` when given."""
    shadow = read_shadow_table(scored or scored_table_path(settings))
    frames = [read_analyst_labels(review_db or settings.resolved_review_db_path)]
    if use_topic:
        frames.append(labels_from_topic(settings))
    reports = compare(shadow, merge_labels(frames))
    render(reports, echo)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_finite([r.to_dict() for r in reports]), indent=2) + "\n")
    return reports
