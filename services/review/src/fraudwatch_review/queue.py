"""The review queue's own table: one row per alerted transaction, open until an analyst decides it.

SQLite (one file, WAL) because the queue is small and local to the service: alerts are at most a few
thousand a day and each is read by a person. The alerts topic is at-least-once, so :meth:`ReviewQueue.add`
is idempotent by transaction_id (``INSERT OR IGNORE``): a redelivered alert neither duplicates nor reopens
a decided one. :meth:`ReviewQueue.decide` is a conditional update (``WHERE status = 'open'``), so an alert
is decided exactly once even with concurrent requests.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from fraudwatch.events import ScoredTransaction

__all__ = ["OUTCOMES", "Alert", "Outcome", "ReviewQueue"]

Outcome = Literal["fraud", "genuine"]
OUTCOMES: tuple[str, ...] = ("fraud", "genuine")
#: extra fields a scored record may carry with the age (seconds) of the entity state it was scored with
STATE_AGE_FIELDS = ("state_age_seconds", "card_state_age_seconds")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    transaction_id TEXT PRIMARY KEY,
    card_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    event_time REAL NOT NULL,
    amount REAL NOT NULL,
    currency TEXT NOT NULL,
    country TEXT,
    channel TEXT,
    score REAL NOT NULL,
    decision TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    reasons TEXT NOT NULL,
    scored_at REAL NOT NULL,
    state_age_seconds REAL,
    received_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    decided_by TEXT,
    decided_at REAL,
    note TEXT
);
CREATE INDEX IF NOT EXISTS alerts_open ON alerts (status, scored_at);
"""
_COLUMNS = (
    "transaction_id, card_id, terminal_id, event_time, amount, currency, country, channel, score, decision, "
    "model_name, model_version, reasons, scored_at, state_age_seconds, received_at, status, decided_by, "
    "decided_at, note"
)


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class Alert:
    """One row of the queue, as the page and the JSON API show it."""

    transaction_id: str
    card_id: str
    terminal_id: str
    event_time: datetime
    amount: float
    currency: str
    country: str | None
    channel: str | None
    score: float
    decision: str
    model_name: str
    model_version: str
    reasons: list[str]
    scored_at: datetime
    state_age_seconds: float | None
    received_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    note: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Alert:
        return cls(
            transaction_id=row["transaction_id"],
            card_id=row["card_id"],
            terminal_id=row["terminal_id"],
            event_time=datetime.fromtimestamp(row["event_time"], UTC),
            amount=row["amount"],
            currency=row["currency"],
            country=row["country"],
            channel=row["channel"],
            score=row["score"],
            decision=row["decision"],
            model_name=row["model_name"],
            model_version=row["model_version"],
            reasons=list(orjson.loads(row["reasons"])),
            scored_at=datetime.fromtimestamp(row["scored_at"], UTC),
            state_age_seconds=row["state_age_seconds"],
            received_at=datetime.fromtimestamp(row["received_at"], UTC),
            status=row["status"],
            decided_by=row["decided_by"],
            decided_at=_ts(row["decided_at"]),
            note=row["note"],
        )

    def age_seconds(self, now: datetime) -> float:
        """Age of the state the score used: the record's own figure when it carries one (the state's age
        when it was scored, plus the time since), else the time since it was scored."""
        since_scored = max(0.0, (now - self.scored_at).total_seconds())
        if self.state_age_seconds is not None:
            return self.state_age_seconds + since_scored
        return since_scored

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class ReviewQueue:
    """The alerts table; thread-safe (one connection behind a lock: every call is a short statement)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def add(self, alert: ScoredTransaction, received_at: datetime | None = None) -> bool:
        """Queue one alert; False when its transaction_id is already queued (redelivery)."""
        extra = alert.model_extra or {}
        age = next((float(v) for f in STATE_AGE_FIELDS if isinstance(v := extra.get(f), int | float)), None)
        values = (
            alert.transaction_id,
            alert.card_id,
            alert.terminal_id,
            alert.event_time.timestamp(),
            alert.amount,
            alert.currency,
            alert.country,
            alert.channel,
            alert.score,
            alert.decision,
            alert.model_name,
            alert.model_version,
            orjson.dumps(alert.reasons).decode(),
            alert.scored_at.timestamp(),
            age,
            (received_at or datetime.now(UTC)).timestamp(),
        )
        with self._cursor() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO alerts (transaction_id, card_id, terminal_id, event_time, amount, "
                "currency, country, channel, score, decision, model_name, model_version, reasons, scored_at, "
                "state_age_seconds, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            return cur.rowcount == 1

    def get(self, transaction_id: str) -> Alert | None:
        with self._cursor() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE transaction_id = ?", (transaction_id,)
            ).fetchone()
        return None if row is None else Alert.from_row(row)

    def open_alerts(
        self,
        decision: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 200,
    ) -> list[Alert]:
        """Open alerts, newest (scored_at) first, optionally of one decision and within a time window."""
        where: list[str] = ["status = 'open'"]
        args: list[str | float] = []
        if decision is not None:
            where.append("decision = ?")
            args.append(decision)
        if since is not None:
            where.append("scored_at >= ?")
            args.append(since.timestamp())
        if until is not None:
            where.append("scored_at < ?")
            args.append(until.timestamp())
        sql = f"SELECT {_COLUMNS} FROM alerts WHERE {' AND '.join(where)} ORDER BY scored_at DESC LIMIT ?"
        with self._cursor() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [Alert.from_row(r) for r in rows]

    def decided(self, limit: int = 50) -> list[Alert]:
        """The latest decisions, newest first (who decided what)."""
        with self._cursor() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE status != 'open' ORDER BY decided_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [Alert.from_row(r) for r in rows]

    def decide(
        self, transaction_id: str, outcome: Outcome, analyst: str, note: str | None, at: datetime
    ) -> bool:
        """Mark an open alert decided; False when it was not open (already decided, or unknown)."""
        with self._cursor() as db:
            cur = db.execute(
                "UPDATE alerts SET status = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE transaction_id = ? AND status = 'open'",
                (outcome, analyst, at.timestamp(), note, transaction_id),
            )
            return cur.rowcount == 1

    def count_open(self) -> int:
        with self._cursor() as db:
            return int(db.execute("SELECT count(*) FROM alerts WHERE status = 'open'").fetchone()[0])

    def confirmed_precision(self) -> dict[str, float]:
        """Per model version: the share of its decided alerts analysts confirmed as fraud."""
        with self._cursor() as db:
            rows = db.execute(
                "SELECT model_version, avg(status = 'fraud') FROM alerts WHERE status != 'open' "
                "GROUP BY model_version"
            ).fetchall()
        return {str(version): float(share) for version, share in rows}
