"""Where the producer's records come from: the live simulator, or a replayed history (Parquet/CSV).

Both run on a simulated clock (:class:`SimClock`): ``event_time`` is simulated time and a label is sent
once the clock passes its ``reported_at``. A source hands out transactions as ready-to-send Kafka records
(key bytes, JSON value bytes) and keeps the labels it owes until they are due. Values are built column by
column and serialised with orjson; they match the :class:`fraudwatch.events.Transaction` /
:class:`~fraudwatch.events.Label` models (the tests check). The Kafka record timestamp is not set here: it
stays the real produce time, which the stream's latency is measured from.
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
ALL_DUE = np.iinfo(np.int64).max  # a clock reading past every label (a finished replay sends the rest)

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


class SimClock:
    """Simulated time (ns since the epoch) as a function of wall time (s), for live and replayed traffic.

    * paced (``speedup > 0``): ``origin + speedup x (wall - wall at the first reading)``: one simulated
      hour per wall second at 3600. Events are sent when the clock reaches their event_time, so the event
      rate follows the simulated activity (busy afternoons, quiet nights) times the speed-up.
    * event-driven (``speedup == 0``): the clock is the event_time of the last event handed out (``origin``
      before the first), and the pace is someone else's (a fixed ``--rate``, or as fast as possible).

    Wall time is always passed in, never read here, so tests drive the clock without sleeping.
    """

    def __init__(self, origin_ns: int, speedup: float = 0.0) -> None:
        if speedup < 0:
            raise ValueError("speedup must be >= 0")
        self.origin_ns = origin_ns
        self.speedup = speedup
        self.wall0: float | None = None
        self._last_event_ns = origin_ns

    @property
    def paced(self) -> bool:
        return self.speedup > 0

    def start(self, wall: float) -> None:
        """Pin the origin to this wall time (the first call wins)."""
        if self.wall0 is None:
            self.wall0 = wall

    def now_ns(self, wall: float) -> int:
        """The simulated time at wall time ``wall``."""
        if not self.paced:
            return self._last_event_ns
        if self.wall0 is None:
            return self.origin_ns
        return self.origin_ns + int((wall - self.wall0) * self.speedup * NS_PER_S)

    def handed_out(self, event_ns: int) -> None:
        """The latest event sent (moves an event-driven clock; a paced one ignores it)."""
        self._last_event_ns = max(self._last_event_ns, event_ns)

    def lag_seconds(self, wall: float, next_event_ns: int | None) -> float:
        """Wall seconds a paced clock is ahead of the next event still to send (0 when on time)."""
        if not self.paced or self.wall0 is None or next_event_ns is None:
            return 0.0
        return max(0.0, (self.now_ns(wall) - next_event_ns) / NS_PER_S / self.speedup)


class PendingLabels:
    """Labels waiting for the clock to pass their reported_at (ns; each chunk sorted, merged on demand)."""

    def __init__(self) -> None:
        self._chunks: list[tuple[npt.NDArray[np.int64], list[bytes], list[bytes], int]] = []

    def add(self, due_ns: npt.NDArray[np.int64], keys: list[bytes], values: list[bytes]) -> None:
        if len(due_ns) == 0:
            return
        order = np.argsort(due_ns, kind="stable")
        self._chunks.append((due_ns[order], [keys[i] for i in order], [values[i] for i in order], 0))

    def pop_due(self, now_ns: int, limit: int | None = None) -> Records:
        """Labels whose reported_at is not after ``now_ns`` (all of them at :data:`ALL_DUE`), at most ``limit``."""
        out = Records()
        kept = []
        for due, keys, values, pos in self._chunks:
            room = None if limit is None else limit - len(out)
            end = int(np.searchsorted(due, now_ns, side="right"))
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
    """Live simulated transactions on a simulated clock; each label is sent when the clock passes its
    reported_at.

    ``simulator`` is usually :meth:`LiveSimulator.continuing` the history ``make data`` wrote: its
    population, from where its time ends. ``speedup > 0`` paces by the clock (the producer then sends what
    the clock has reached); ``speedup == 0`` hands out exactly what is asked for (the producer's fixed rate,
    or as fast as possible) and the clock follows the events.
    """

    def __init__(self, simulator: LiveSimulator, speedup: float = 0.0, labels: bool = True) -> None:
        self.simulator = simulator
        self.clock = SimClock(simulator.start_ns, speedup)
        self.labels_enabled = labels
        self.pending = PendingLabels()
        self.frauds = 0
        self.last_event_ns: int | None = None

    def next(self, n: int, now: float) -> Records:
        self.clock.start(now)
        until = self.clock.now_ns(now) if self.clock.paced else None
        batch = self.simulator.next_batch(n, until)
        if not len(batch):
            return Records()
        self.last_event_ns = int(batch.event_time_ns[-1])
        self.clock.handed_out(self.last_event_ns)
        dumps = orjson.dumps
        records = Records(
            keys=[c.encode() for c in batch.card_ids], values=[dumps(tx) for tx in batch.transactions]
        )
        self.frauds += int((batch.scenarios > 0).sum())
        if self.labels_enabled:
            values = [dumps(lb) for lb in batch.labels]
            keys = [lb["transaction_id"].encode() for lb in batch.labels]
            self.pending.add(batch.reported_at_ns, keys, values)
        return records

    def due_labels(self, now: float, limit: int | None = None) -> Records:
        return self.pending.pop_due(self.clock.now_ns(now), limit)

    def lag_seconds(self, now: float) -> float:
        if not self.clock.paced or self.clock.wall0 is None:
            return 0.0
        return self.clock.lag_seconds(now, self.simulator.next_time_ns())


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
    """Replays a history in event-time order on the same :class:`SimClock` as live traffic: ``speedup``
    times faster than event time, or as fast as possible (0, the clock follows the events sent).

    event_time keeps its historical value. Labels come from ``is_fraud`` (and ``reported_at`` when present;
    otherwise the documented simulator delays are drawn with ``seed``). A label is sent once the clock
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
        self.clock = SimClock(int(self.event_ns[0]) if self.n else 0, speedup)
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
        return self.clock.now_ns(now)

    def lag_seconds(self, now: float) -> float:
        return 0.0 if self.exhausted else self.clock.lag_seconds(now, int(self.event_ns[self.pos]))

    def next(self, n: int, now: float) -> Records:
        self.clock.start(now)
        end = min(self.pos + n, self.n)
        if self.clock.paced:
            end = min(end, int(np.searchsorted(self.event_ns, self.clock.now_ns(now), side="right")))
        lo, self.pos = self.pos, max(end, self.pos)
        if self.pos <= lo:
            return Records()
        self.clock.handed_out(int(self.event_ns[self.pos - 1]))
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
        self.pending.add(rep, [t.encode() for t in cols["transaction_id"]], values)

    def due_labels(self, now: float, limit: int | None = None) -> Records:
        clock = ALL_DUE if self.exhausted else self.clock.now_ns(now)
        return self.pending.pop_due(clock, limit)
