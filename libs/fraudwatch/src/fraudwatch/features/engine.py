"""The feature engine: the one entry point to the compiled kernels for training, the stream and the API.

:mod:`.spec` declares the windows; this module turns them into the kernels' window programme once, makes
the inputs the exact dtypes the kernels were compiled for (so no call compiles a new specialisation) and
offers the three ways the platform calls the kernels:

* a block of events against a table of records, updating them (:func:`card_features`,
  :func:`terminal_features`): the offline replay (a whole history) and the stream (one micro-batch group);
* one or a few transactions against stored records, read only (:func:`online_features`,
  :func:`feature_vector`): the API's ``/score``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from fraudwatch.features.kernels import (
    CARD_DERIVED_COLUMNS,
    P_COUNTRY_CHANGE,
    P_FIRST_TERMINAL,
    P_NO_FRAUD_DAYS,
    P_NO_PREVIOUS,
    P_RATIO_FLOOR,
    P_REF_SPAN,
    P_SMALL_AMOUNT,
    STAT_COUNT,
    STAT_FRAUDS,
    STAT_MAX,
    STAT_MEAN,
    STAT_RISK,
    STAT_SMALL,
    STAT_SUM,
    TX_COLUMNS,
    card_kernel,
    online_kernel,
    terminal_kernel,
)
from fraudwatch.features.layout import (
    CARD_DTYPE,
    CHANNEL_CODES,
    TERMINAL_DTYPE,
    check_record,
    new_states,
    terminal_key,
)
from fraudwatch.features.spec import (
    CARD_FEATURES,
    CARD_WINDOWS,
    COUNTRY_CHANGE_SECONDS,
    FEATURE_NAMES,
    NO_FRAUD_DAYS,
    NO_PREVIOUS_SECONDS,
    RATIO_FLOOR,
    SMALL_AMOUNT,
    TERMINAL_FEATURES,
    TERMINAL_WINDOWS,
    TX_FEATURES,
)

__all__ = [
    "CARD_COLUMNS",
    "LABEL",
    "TERMINAL_COLUMNS",
    "TRANSACTION",
    "card_features",
    "feature_vector",
    "online_features",
    "terminal_features",
    "warm_up",
]

TRANSACTION = 0  # event kinds of a terminal block
LABEL = 1

#: columns the card kernel writes (transaction + card features) and the terminal kernel writes
CARD_COLUMNS = len(TX_FEATURES) + len(CARD_FEATURES)
TERMINAL_COLUMNS = len(TERMINAL_FEATURES)

# the window programme, from the declarations
_CARD_STAT = {
    ("transactions", "count"): STAT_COUNT,
    ("small_amounts", "count"): STAT_SMALL,
    ("amount", "sum"): STAT_SUM,
    ("amount", "mean"): STAT_MEAN,
    ("amount", "max"): STAT_MAX,
}
_TERMINAL_STAT = {
    ("transactions", "count"): STAT_COUNT,
    ("frauds", "count"): STAT_FRAUDS,
    ("frauds", "risk"): STAT_RISK,
}
_SPANS = np.array(sorted({w.window for w in CARD_WINDOWS}), dtype=np.float64)
_PROG = np.array(
    [(int(np.searchsorted(_SPANS, w.window)), _CARD_STAT[(w.column, w.function)]) for w in CARD_WINDOWS],
    dtype=np.int64,
).reshape(-1, 2)
_WIN = np.array(
    [(w.days, _TERMINAL_STAT[(w.column, w.function)]) for w in TERMINAL_WINDOWS], dtype=np.int64
).reshape(-1, 2)
_WIN_DELAY = np.array([w.delay for w in TERMINAL_WINDOWS], dtype=np.float64)
_PARAMS = np.zeros(7, dtype=np.float64)
_PARAMS[P_SMALL_AMOUNT] = SMALL_AMOUNT
_PARAMS[P_RATIO_FLOOR] = RATIO_FLOOR
_PARAMS[P_NO_PREVIOUS] = NO_PREVIOUS_SECONDS
_PARAMS[P_COUNTRY_CHANGE] = COUNTRY_CHANGE_SECONDS
_PARAMS[P_NO_FRAUD_DAYS] = NO_FRAUD_DAYS
# the amount ratios compare with the card's 30-day mean and maximum
_PARAMS[P_REF_SPAN] = np.searchsorted(
    _SPANS, next(w.window for w in CARD_WINDOWS if w.name == "card_mean_amount_30d")
)
_PARAMS[P_FIRST_TERMINAL] = CARD_COLUMNS
if (
    len(TX_FEATURES),
    CARD_COLUMNS - len(TX_FEATURES) - len(CARD_WINDOWS),
    TERMINAL_COLUMNS - len(TERMINAL_WINDOWS),
) != (
    TX_COLUMNS,
    CARD_DERIVED_COLUMNS,
    2,
):
    raise ImportError("fraudwatch.features.spec lists other non-window features than the kernels compute")


def _check_table(states: np.ndarray, dtype: np.dtype, rows: np.ndarray) -> None:
    if states.dtype != dtype or states.ndim != 1:
        raise TypeError(f"states must be a 1-d array of {dtype}, not {states.dtype}")
    if len(rows) and (rows.min() < 0 or rows.max() >= len(states)):
        raise IndexError("rows out of the state table")


def card_features(
    states: np.ndarray,
    rows: np.ndarray,
    ts: np.ndarray,
    amount: np.ndarray,
    terminal_keys: np.ndarray,
    countries: np.ndarray,
    channels: np.ndarray,
    *,
    update: bool = True,
) -> np.ndarray:
    """Transaction + card features (``CARD_COLUMNS`` columns, FEATURE_NAMES order) of transactions in order.

    Transaction ``k`` belongs to the card in ``states[rows[k]]``; its features come from that record before
    it, and (``update``) the record then takes it in. Codes come from :mod:`.layout`.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    _check_table(states, CARD_DTYPE, rows)
    out = np.empty((len(rows), CARD_COLUMNS), dtype=np.float64)
    card_kernel(
        states,
        rows,
        np.ascontiguousarray(ts, dtype=np.float64),
        np.ascontiguousarray(amount, dtype=np.float64),
        np.ascontiguousarray(terminal_keys, dtype=np.uint32),
        np.ascontiguousarray(countries, dtype=np.uint16),
        np.ascontiguousarray(channels, dtype=np.uint8),
        _SPANS,
        _PROG,
        _PARAMS,
        update,
        out,
    )
    return out


def terminal_features(
    states: np.ndarray,
    rows: np.ndarray,
    kinds: np.ndarray,
    ts: np.ndarray,
    label_hashes: np.ndarray,
    label_event_ts: np.ndarray,
    *,
    update: bool = True,
) -> np.ndarray:
    """Terminal features (``TERMINAL_COLUMNS`` columns) of the transactions of a block of events.

    The block interleaves transactions (``kinds`` TRANSACTION, ``ts`` = event time) and *fraud* labels
    (LABEL, ``ts`` = reported_at, with the hash and event time of the labelled transaction), ordered by
    (time, kind). One output row per transaction, in block order.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    kinds = np.ascontiguousarray(kinds, dtype=np.int8)
    _check_table(states, TERMINAL_DTYPE, rows)
    out = np.empty((int((kinds == TRANSACTION).sum()), TERMINAL_COLUMNS), dtype=np.float64)
    terminal_kernel(
        states,
        rows,
        kinds,
        np.ascontiguousarray(ts, dtype=np.float64),
        np.ascontiguousarray(label_hashes, dtype=np.uint64),
        np.ascontiguousarray(label_event_ts, dtype=np.float64),
        _WIN,
        _WIN_DELAY,
        _PARAMS,
        update,
        out,
    )
    return out


def _country(value: str | None) -> int:
    if not value or len(value) != 2 or not value.isascii():
        return 0
    return (ord(value[0]) << 8) | ord(value[1])


_NEW_CARD = new_states(CARD_DTYPE, 1).tobytes()
_NEW_TERMINAL = new_states(TERMINAL_DTYPE, 1).tobytes()


def _records(values: Sequence[bytes | None], dtype: np.dtype, new: bytes) -> np.ndarray:
    # a private writable copy: the kernels only read it here, but one compiled specialisation serves all
    blob = b"".join(new if v is None else check_record(v, dtype) for v in values)
    return np.frombuffer(bytearray(blob), dtype=dtype)


def online_features(
    card_records: Sequence[bytes | None],
    terminal_records: Sequence[bytes | None],
    ts: Sequence[float],
    amount: Sequence[float],
    terminal_ids: Sequence[str],
    countries: Sequence[str | None],
    channels: Sequence[str | None],
) -> np.ndarray:
    """Feature rows (FEATURE_NAMES order) of transactions against stored records (None: never seen), read only.

    The API's hot path: no pandas, no checks beyond the records' size and version, and one kernel call
    (one dispatch) for both entities.
    """
    n = len(ts)
    cards = _records(card_records, CARD_DTYPE, _NEW_CARD)
    terminals = _records(terminal_records, TERMINAL_DTYPE, _NEW_TERMINAL)
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    online_kernel(
        cards,
        terminals,
        np.array(ts, dtype=np.float64),
        np.array(amount, dtype=np.float64),
        np.array([terminal_key(tid) for tid in terminal_ids], dtype=np.uint32),
        np.array([_country(c) for c in countries], dtype=np.uint16),
        np.array([CHANNEL_CODES.get(c, 0) if c else 0 for c in channels], dtype=np.uint8),
        _SPANS,
        _PROG,
        _WIN,
        _WIN_DELAY,
        _PARAMS,
        out,
    )
    return out


def feature_vector(
    card: bytes | None,
    terminal: bytes | None,
    ts: float,
    amount: float,
    terminal_id: str,
    country: str | None,
    channel: str | None,
) -> list[float]:
    """The feature vector (FEATURE_NAMES order) of one transaction against stored records, read only."""
    row: list[float] = online_features(
        [card], [terminal], [ts], [amount], [terminal_id], [country], [channel]
    )[0].tolist()
    return row


def warm_up() -> float:
    """Load (or, without a cache, compile) every kernel specialisation the platform calls; seconds taken.

    Called at API start-up and by the Docker build (which fills the numba cache), so no request compiles.
    """
    start = time.perf_counter()
    cards = new_states(CARD_DTYPE, 1)
    terminals = new_states(TERMINAL_DTYPE, 1)
    one = np.zeros(1, dtype=np.int64)
    for update in (True, False):
        card_features(
            cards, one, np.zeros(1), np.ones(1), np.zeros(1), np.zeros(1), np.zeros(1), update=update
        )
        terminal_features(terminals, one, np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), update=update)
    return time.perf_counter() - start
