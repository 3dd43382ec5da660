"""The Fraud Detection Handbook's prequential protocol, for any transaction history.

Each fold is ``[train] [delay] [assessment]`` (7 days each in the Handbook): the model is fitted when the
assessment window starts, on the training window, with the labels known by then; the delay window is the
week whose labels are not known yet. Folds step back one assessment window at a time.

* Test folds: training starts ``base``, ``base + 7``, ... ``base + 7 (n - 1)`` (the Handbook: 07-25 .. 08-15).
* Validation folds: the same pattern ``delay + assessment`` days earlier, stepping back from there (the
  Handbook: 07-11, 07-04, 06-27, 06-20). Every validation window ends on or before the first test fold's
  training window ends, so no row of a test window reaches model selection.

For the Handbook the base date is its preset (2018-07-25); for any other history it is derived from the
data's own date range so that the latest test window ends on the last full day of data.

Days are UTC day numbers since 1970-01-01 (what ``Dataset.day`` holds).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "HANDBOOK_BASE",
    "Fold",
    "Protocol",
    "check_selection_before_test",
    "day_number",
    "day_start_ns",
    "derive_base",
    "epoch_ns",
    "known_at",
    "prequential_folds",
    "without_known_compromised",
]

NS_PER_DAY = 86_400 * 1_000_000_000
HANDBOOK_BASE = pd.Timestamp("2018-07-25", tz="UTC")  # training start of the earliest test fold


def day_number(ts: pd.Timestamp | str) -> int:
    """UTC day number since the epoch."""
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    return int(t.value // NS_PER_DAY)


def epoch_ns(values: pd.Series) -> npt.NDArray[np.int64]:
    """Nanoseconds since the epoch of UTC timestamps (NaT -> int64 max: never before any cut-off)."""
    ts = pd.to_datetime(values)
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    out = np.array(ts.astype("datetime64[ns, UTC]").astype("int64").to_numpy(), dtype=np.int64)
    out[ts.isna().to_numpy()] = np.iinfo(np.int64).max
    return out


def day_start_ns(day: int) -> int:
    return int(day) * NS_PER_DAY


def _date(day: int) -> str:
    return str(pd.Timestamp(day_start_ns(day), unit="ns", tz="UTC").date())


@dataclass(frozen=True)
class Protocol:
    """Window lengths in days and the number of folds (the Handbook: 7 / 7 / 7, 4 folds)."""

    train_days: int = 7
    delay_days: int = 7
    assess_days: int = 7
    n_folds: int = 4

    @property
    def fold_days(self) -> int:
        return self.train_days + self.delay_days + self.assess_days

    @property
    def span_days(self) -> int:
        """Days from the earliest validation training start to the end of the latest test window."""
        test_span = (self.n_folds - 1) * self.assess_days + self.fold_days
        return (self.delay_days + self.assess_days) + (self.n_folds - 1) * self.assess_days + test_span


@dataclass(frozen=True)
class Fold:
    """One prequential fold; ``[train_start, train_end)``, ``[test_start, test_end)`` in day numbers.

    The model is fitted at ``test_start`` (the cut-off): labels reported after it are not known."""

    role: str  # "validation" or "test"
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def cutoff_ns(self) -> int:
        return day_start_ns(self.test_start)

    def train_mask(self, day: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return (day >= self.train_start) & (day < self.train_end)

    def window_mask(self, day: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        return (day >= self.test_start) & (day < self.test_end)

    def describe(self) -> dict[str, str]:
        return {
            "train": f"{_date(self.train_start)}..{_date(self.train_end - 1)}",
            "delay": f"{_date(self.train_end)}..{_date(self.test_start - 1)}",
            self.role: f"{_date(self.test_start)}..{_date(self.test_end - 1)}",
        }


def _fold(role: str, train_start: int, p: Protocol) -> Fold:
    train_end = train_start + p.train_days
    test_start = train_end + p.delay_days
    return Fold(role, train_start, train_end, test_start, test_start + p.assess_days)


def prequential_folds(base: int, protocol: Protocol = Protocol()) -> tuple[list[Fold], list[Fold]]:
    """(validation folds, test folds), latest first, as the Handbook's ``prequential_split`` lists them."""
    p = protocol
    last_test = base + (p.n_folds - 1) * p.assess_days
    test = [_fold("test", last_test - i * p.assess_days, p) for i in range(p.n_folds)]
    first_valid = base - (p.delay_days + p.assess_days)
    valid = [_fold("validation", first_valid - i * p.assess_days, p) for i in range(p.n_folds)]
    return valid, test


def derive_base(first_day: int, last_day: int, protocol: Protocol = Protocol(), warmup_days: int = 0) -> int:
    """The base day that puts the latest test window's last day on ``last_day`` (the last full day of data).

    Raises ValueError when the history cannot hold ``warmup_days`` of feature history before the earliest
    validation training window plus every fold."""
    p = protocol
    base = last_day + 1 - p.fold_days - (p.n_folds - 1) * p.assess_days
    earliest = base - (p.delay_days + p.assess_days) - (p.n_folds - 1) * p.assess_days
    if earliest - warmup_days < first_day:
        need = p.span_days + warmup_days
        have = last_day - first_day + 1
        raise ValueError(
            f"the history has {have} full days ({_date(first_day)}..{_date(last_day)}); the protocol "
            f"({p.n_folds} folds of {p.train_days} d training, {p.delay_days} d delay, {p.assess_days} d "
            f"assessment, {warmup_days} d feature warm-up) needs {need}"
        )
    return base


def known_at(is_fraud: npt.ArrayLike, reported_ns: npt.ArrayLike, cutoff_ns: int) -> npt.NDArray[np.int64]:
    """Training target as known at the cut-off: a fraud counts only if reported before it; frauds reported
    later count as genuine (nobody knows them yet when the model is fitted)."""
    fraud = np.asarray(is_fraud, dtype=bool)
    rep = np.asarray(reported_ns, dtype=np.int64)
    return (fraud & (rep < cutoff_ns)).astype(np.int64)


def without_known_compromised(
    day: npt.NDArray[np.int64],
    card: npt.NDArray[np.int64],
    is_fraud: npt.ArrayLike,
    reported_ns: npt.ArrayLike,
    window: npt.NDArray[np.bool_],
    since_day: int,
) -> npt.NDArray[np.bool_]:
    """The rows of ``window`` whose card is not known compromised on the row's day.

    A card is known compromised on day d when one of its frauds since ``since_day`` (the fold's training
    start) was reported before day d starts. With the Handbook's 7-day delay this is exactly its
    ``get_train_test_set``: cards with a fraud in the training window, or on day d-8 or earlier."""
    fraud = np.asarray(is_fraud, dtype=bool) & (day >= since_day)
    rep = np.asarray(reported_ns, dtype=np.int64)
    codes, inverse = np.unique(card, return_inverse=True)
    first_known = np.full(len(codes), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_known, inverse[fraud], rep[fraud])
    row_day_start = day.astype(np.int64) * NS_PER_DAY
    return window & ~(first_known[inverse] < row_day_start)


def check_selection_before_test(validation: list[Fold], test: list[Fold]) -> None:
    """Raise if any row a validation fold touches (training, delay or validation) is in a test window."""
    end = max(f.test_end for f in validation)
    first = min(f.test_start for f in test)
    if end > first:
        raise ValueError(f"validation reaches day {_date(end - 1)}, past the first test day {_date(first)}")
