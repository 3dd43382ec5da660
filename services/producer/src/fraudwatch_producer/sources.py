"""Where the producer's records come from: the live simulator, or a replayed history (Parquet/CSV).

A source hands out transactions as ready-to-send Kafka records (key bytes, JSON value bytes) and keeps the
labels it owes until they are due. Values are built column by column and serialised with orjson; they match
the :class:`fraudwatch.events.Transaction` / :class:`~fraudwatch.events.Label` models (the tests check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd

from fraudwatch.events import Transaction
from fraudwatch.simulator import EVENT_COLUMNS, LabelDelays, LiveSimulator

NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S

# The Fraud Detection Handbook's simulated dataset (Le Borgne et al.): its columns -> our event fields.
HANDBOOK_PRESET: dict[str, str] = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "event_time",
    "CUSTOMER_ID": "card_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": "is_fraud",
}
PRESETS: dict[str, dict[str, str]] = {"handbook": HANDBOOK_PRESET}
_TRANSACTION_FIELDS = frozenset(Transaction.model_fields)


@dataclass
class Records:
    """Kafka records to send: parallel lists of keys and values."""

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)


def _rfc3339(ns: npt.NDArray[np.int64]) -> list[str]:
    return [s + "Z" for s in np.datetime_as_string(ns.view("datetime64[ns]"), unit="us").tolist()]


class PendingLabels:
    """Labels waiting for their due time (each chunk is sorted by due time; chunks are merged on demand)."""

    def __init__(self) -> None:
        self._chunks: list[tuple[npt.NDArray[np.float64], list[bytes], list[bytes], int]] = []

    def add(self, due: npt.NDArray[np.float64], keys: list[bytes], values: list[bytes]) -> None:
        if len(due) == 0:
            return
        order = np.argsort(due, kind="stable")
        self._chunks.append((due[order], [keys[i] for i in order], [values[i] for i in order], 0))

    def pop_due(self, now: float, limit: int | None = None) -> Records:
        """Labels due at ``now`` (all of them when ``now`` is +inf), at most ``limit``."""
        out = Records()
        kept = []
        for due, keys, values, pos in self._chunks:
            room = None if limit is None else limit - len(out)
            end = int(np.searchsorted(due, now, side="right"))
            if room is not None:
                end = min(end, pos + room)
            if end > pos:
                out.keys.extend(keys[pos:end])
                out.values.extend(values[pos:end])
                pos = end
            if pos < len(due):
                kept.append((due, keys, values, pos))
        self._chunks = kept
        return out

    def __len__(self) -> int:
        return sum(len(due) - pos for due, _, _, pos in self._chunks)


class LiveSource:
    """Live simulated transactions stamped at wall-clock time; labels due ``delay x label_delay_scale`` s later.

    ``label_delay_scale`` is real seconds per simulated day: with 1.0 a genuine label (7 simulated days) is
    sent 7 s after its transaction and a fraud label a median 3 s after.
    """

    def __init__(
        self,
        n_cards: int = 5_000,
        n_terminals: int = 2_000,
        seed: int | None = None,
        label_delay_scale: float = 1.0,
        labels: bool = True,
        delays: LabelDelays | None = None,
    ) -> None:
        self.simulator = LiveSimulator(n_cards, n_terminals, seed=seed, delays=delays)
        self.label_delay_scale = label_delay_scale
        self.labels_enabled = labels
        self.pending = PendingLabels()
        self.frauds = 0

    def next(self, n: int, now: float) -> Records:
        batch = self.simulator.next_batch(n, now)
        dumps = orjson.dumps
        records = Records(
            keys=[c.encode() for c in batch.card_ids], values=[dumps(tx) for tx in batch.transactions]
        )
        self.frauds += int((batch.scenarios > 0).sum())
        if self.labels_enabled:
            delay_ns = (batch.label_delay_days * self.label_delay_scale * NS_PER_S).astype(np.int64)
            reported_ns = batch.event_time_ns + delay_ns
            reported_ns -= reported_ns % 1000
            reported = _rfc3339(reported_ns)
            values = [dumps({**lb, "reported_at": r}) for lb, r in zip(batch.labels, reported, strict=True)]
            keys = [lb["transaction_id"].encode() for lb in batch.labels]
            self.pending.add(reported_ns / NS_PER_S, keys, values)
        return records

    def due_labels(self, now: float, limit: int | None = None) -> Records:
        return self.pending.pop_due(now, limit)


def load_history(path: Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a Parquet or CSV history, rename columns by ``mapping``, and sort it by event_time."""
    if path.suffix in {".parquet", ".pq"} or path.is_dir():
        frame = pd.read_parquet(path)
    elif path.suffix in {".csv", ".gz"}:
        frame = pd.read_csv(path)
    elif path.suffix == ".pkl":  # the Handbook ships daily pickles
        frame = pd.read_pickle(path)  # noqa: S301 - a file the operator chose to replay
    else:
        raise ValueError(f"{path}: cannot replay {path.suffix!r} files (use .parquet or .csv)")
    if mapping:
        frame = frame.rename(columns=mapping)
    missing = {"event_time", "card_id", "terminal_id", "amount"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"{path}: missing columns {sorted(missing)} (have {list(frame.columns)}); "
            "pass --preset handbook or --map SRC=DST"
        )
    times = pd.to_datetime(frame["event_time"], utc=True)
    frame = frame.assign(event_time=times).sort_values("event_time", kind="stable").reset_index(drop=True)
    if "transaction_id" not in frame.columns:
        frame["transaction_id"] = [f"tx-{i}" for i in range(len(frame))]
    return frame


class ReplaySource:
    """Replays a history in event-time order, ``speedup`` times faster than real time (0: as fast as possible).

    Labels come from ``is_fraud`` (and ``reported_at`` when present; otherwise the documented simulator
    delays are drawn with ``seed``). A label is sent once the replay clock (the event time being replayed)
    passes its reported_at; labels still pending when the history ends are sent at the end.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        speedup: float = 0.0,
        labels: bool = True,
        seed: int = 0,
        delays: LabelDelays | None = None,
    ) -> None:
        self.frame = frame
        self.speedup = speedup
        self.n = len(frame)
        self.pos = 0
        self.event_ns = frame["event_time"].to_numpy(dtype="datetime64[ns]").view(np.int64)
        self._start_wall: float | None = None
        self.pending = PendingLabels()
        self.frauds = 0
        self.fields = [c for c in EVENT_COLUMNS if c in frame.columns] + [
            c for c in frame.columns if c in _TRANSACTION_FIELDS and c not in EVENT_COLUMNS
        ]
        self._columns: dict[str, list[Any]] = {}
        for c in self.fields:
            col = frame[c]
            if c == "event_time":
                continue
            if c == "amount":
                self._columns[c] = col.astype(float).round(2).tolist()
            else:
                self._columns[c] = col.astype(str).tolist()
        self._times = _rfc3339(self.event_ns)
        self._has_labels = labels and "is_fraud" in frame.columns
        if self._has_labels:
            is_fraud = frame["is_fraud"].astype(bool).to_numpy()
            self.frauds = int(is_fraud.sum())
            if "reported_at" in frame.columns:
                rep = (
                    pd.to_datetime(frame["reported_at"], utc=True)
                    .to_numpy(dtype="datetime64[ns]")
                    .view(np.int64)
                )
            else:
                d = delays or LabelDelays()
                rng = np.random.default_rng(seed)
                fraud_days = np.minimum(
                    rng.lognormal(np.log(d.fraud_median_days), d.fraud_sigma, self.n), d.fraud_max_days
                )
                rep = self.event_ns + (np.where(is_fraud, fraud_days, d.genuine_days) * NS_PER_DAY).astype(
                    np.int64
                )
            self._is_fraud = is_fraud.tolist()
            self._reported = rep - rep % 1000

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.n

    def clock_ns(self, now: float) -> int:
        """The event time the replay has reached at wall time ``now``."""
        if self.pos >= self.n:
            return int(self.event_ns[-1]) if self.n else 0
        if self.speedup <= 0 or self._start_wall is None:
            return int(self.event_ns[max(self.pos - 1, 0)])
        return int(self.event_ns[0] + (now - self._start_wall) * self.speedup * NS_PER_S)

    def lag_seconds(self, now: float) -> float:
        if self.speedup <= 0 or self._start_wall is None or self.exhausted:
            return 0.0
        behind_ns = self.clock_ns(now) - int(self.event_ns[self.pos])
        return max(0.0, behind_ns / NS_PER_S / self.speedup)

    def next(self, n: int, now: float) -> Records:
        if self._start_wall is None:
            self._start_wall = now
        end = min(self.pos + n, self.n)
        if self.speedup > 0:
            end = min(end, int(np.searchsorted(self.event_ns, self.clock_ns(now), side="right")))
        lo, self.pos = self.pos, max(end, self.pos)
        if self.pos <= lo:
            return Records()
        cols = {c: v[lo : self.pos] for c, v in self._columns.items()}
        cols["event_time"] = self._times[lo : self.pos]
        names = [c for c in self.fields]
        if "currency" not in cols:
            cols["currency"] = ["EUR"] * (self.pos - lo)
            names.append("currency")
        dumps = orjson.dumps
        rows = zip(*(cols[c] for c in names), strict=True)
        values = [dumps(dict(zip(names, row, strict=True))) for row in rows]
        keys = [c.encode() for c in cols["card_id"]]
        if self._has_labels:
            self._queue_labels(lo, self.pos, cols)
        return Records(keys, values)

    def _queue_labels(self, lo: int, hi: int, cols: dict[str, list[Any]]) -> None:
        rep = self._reported[lo:hi]
        reported = _rfc3339(rep)
        dumps = orjson.dumps
        values = [
            dumps(
                {
                    "transaction_id": t,
                    "card_id": c,
                    "terminal_id": term,
                    "event_time": et,
                    "is_fraud": f,
                    "reported_at": r,
                }
            )
            for t, c, term, et, f, r in zip(
                cols["transaction_id"],
                cols["card_id"],
                cols["terminal_id"],
                cols["event_time"],
                self._is_fraud[lo:hi],
                reported,
                strict=True,
            )
        ]
        self.pending.add(rep.astype(np.float64), [t.encode() for t in cols["transaction_id"]], values)

    def due_labels(self, now: float, limit: int | None = None) -> Records:
        clock = float("inf") if self.exhausted else float(self.clock_ns(now))
        return self.pending.pop_due(clock, limit)
