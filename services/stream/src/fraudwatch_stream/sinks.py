"""The authoritative result: one row per transaction_id in a SQLite table, upserted per micro-batch.

Spark re-runs a micro-batch after a crash with the same offsets and the state of the previous committed
batch, so an upsert keyed by transaction_id makes the table exactly-once whatever the moment of the crash.
The Kafka topics written after it are at-least-once (a re-run batch is published again); their consumers
dedupe by transaction_id. See docs/stream.md.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from fraudwatch.config import Settings

__all__ = ["KafkaOutput", "ScoredTable", "scored_table_path"]

_COLUMNS = (
    "transaction_id",
    "card_id",
    "terminal_id",
    "event_time_us",
    "score",
    "decision",
    "model_name",
    "model_version",
    "features",
    "value",
    "batch_id",
    "written_at",
    "challenger_version",
    "challenger_score",
    "challenger_decision",
)
#: columns added after the table's first layout: (name, SQL type), added to an older table on open
_ADDED_COLUMNS = (
    ("challenger_version", "TEXT"),
    ("challenger_score", "REAL"),
    ("challenger_decision", "TEXT"),
)


def scored_table_path(settings: Settings) -> Path:
    """<local_dir>/stream/scored.sqlite."""
    return Path(settings.local_dir) / "stream" / "scored.sqlite"


class ScoredTable:
    """The stream's authoritative sink (SQLite, WAL): scored transactions keyed by transaction_id."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS scored ("
            "transaction_id TEXT PRIMARY KEY, card_id TEXT NOT NULL, terminal_id TEXT NOT NULL, "
            "event_time_us INTEGER NOT NULL, score REAL NOT NULL, decision TEXT NOT NULL, "
            "model_name TEXT NOT NULL, model_version TEXT NOT NULL, features TEXT NOT NULL, "
            "value TEXT NOT NULL, batch_id INTEGER NOT NULL, written_at REAL NOT NULL)"
        )
        self._migrate()

    def _migrate(self) -> None:
        """Add the columns a table written by an older job lacks (nullable: old rows keep null there)."""
        present = {row[1] for row in self._conn.execute("PRAGMA table_info(scored)")}
        for name, sql_type in _ADDED_COLUMNS:
            if name not in present:
                self._conn.execute(f"ALTER TABLE scored ADD COLUMN {name} {sql_type}")

    def upsert(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows in _COLUMNS order; ``features`` may be a list (stored as JSON: exact doubles); the
        challenger columns (the last three) are null where there was no shadow score (NaN is stored null)."""
        marks = ",".join("?" * len(_COLUMNS))
        updates = ",".join(f"{c}=excluded.{c}" for c in _COLUMNS[1:])
        prepared = [
            (
                *r[:8],
                orjson.dumps(r[8]).decode() if not isinstance(r[8], str) else r[8],
                *r[9:],
                *(None,) * (len(_COLUMNS) - len(r)),
            )
            for r in rows
        ]
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(
                f"INSERT INTO scored ({','.join(_COLUMNS)}) VALUES ({marks}) "
                f"ON CONFLICT(transaction_id) DO UPDATE SET {updates}",
                prepared,
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM scored").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


class KafkaOutput:
    """Publishes a batch to transactions.scored, fraud.alerts and transactions.dlq from the driver.

    Idempotent producer, acks=all; :meth:`publish` returns only when every record is acknowledged and raises
    if any was not, which fails the micro-batch (Spark then re-runs it: at-least-once on these topics).
    """

    def __init__(self, settings: Settings, flush_seconds: float = 60.0) -> None:
        from confluent_kafka import Producer

        self.settings = settings
        self.flush_seconds = flush_seconds
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka_bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
            }
        )

    def publish(
        self, keys: list[str], scored: list[str], alerts: list[bool], dead_letters: list[str]
    ) -> None:
        """Scored records (key: card_id) to scored, alerts also to alerts; dead letters to the DLQ."""
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(f"{msg.topic()}: {err}")

        s = self.settings
        for key, value, alert in zip(keys, scored, alerts, strict=True):
            self._produce(s.topic_scored, key, value, delivered)
            if alert:
                self._produce(s.topic_alerts, key, value, delivered)
        for value in dead_letters:
            self._produce(s.topic_dlq, None, value, delivered)
        left = self._producer.flush(self.flush_seconds)
        if left or errors:
            raise RuntimeError(
                f"Kafka did not acknowledge {left + len(errors)} records of the batch: {errors[:3]}"
            )

    def _produce(self, topic: str, key: str | None, value: str, on_delivery: Any) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def close(self) -> None:
        self._producer.flush(self.flush_seconds)
