"""Point-in-time replay: the offline training-set builder.

History (transactions at their event_time, labels at their reported_at) is replayed in time order through
the compiled kernels the stream and the API use (:mod:`.engine`), so each transaction's features are those the platform would
have computed live. At equal times a transaction goes before a label, so a transaction never sees a label
reported at its own instant (and never its own label).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from fraudwatch.features.engine import CARD_COLUMNS, LABEL, TRANSACTION, card_features, terminal_features
from fraudwatch.features.layout import (
    CARD_DTYPE,
    TERMINAL_DTYPE,
    channel_codes,
    country_codes,
    label_hashes,
    record_bytes,
    states_from_bytes,
    terminal_keys,
)
from fraudwatch.features.spec import FEATURE_NAMES

__all__ = ["ReplayResult", "datetime_seconds", "epoch_seconds", "replay"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def datetime_seconds(value: datetime) -> float:
    """Epoch seconds of one aware datetime, as integer microseconds / 1e6."""
    return ((value - _EPOCH) // _US) / 1e6


def epoch_seconds(values: pd.Series | pd.Index | Iterable[object]) -> np.ndarray:
    """Epoch seconds (integer microseconds / 1e6) of timestamps; naive ones are taken as UTC."""
    ts = pd.to_datetime(pd.Series(values) if not isinstance(values, pd.Series) else values)
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    micros = ts.astype("datetime64[us, UTC]").astype("int64").to_numpy()
    return micros / 1e6


def _optional(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series([None] * len(frame), dtype=object)
    return frame[column]


@dataclass
class ReplayResult:
    """Features of every transaction (rows in the input's order) and the entity state after the replay.

    States are the stored form (:mod:`fraudwatch.features.layout` records as bytes), keyed by entity id,
    for every card and terminal the replay saw or was given.
    """

    features: pd.DataFrame
    card_states: dict[str, bytes] = field(default_factory=dict)
    terminal_states: dict[str, bytes] = field(default_factory=dict)


def _table(ids: pd.Index, given: dict[str, bytes] | None, dtype: np.dtype) -> np.ndarray:
    if not given:
        return states_from_bytes([None] * len(ids), dtype)
    return states_from_bytes([given.get(i) for i in ids.tolist()], dtype)


def _chunks(n: int, size: int, progress: bool, what: str) -> Iterable[tuple[int, int]]:
    bounds = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
    if not progress:
        return bounds
    from rich.progress import track

    return track(bounds, description=what)


CHUNK = 1 << 18  # events per kernel call when a progress bar is shown (state carries over between calls)


def replay(
    transactions: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    card_states: dict[str, bytes] | None = None,
    terminal_states: dict[str, bytes] | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Replay history point-in-time and return every transaction's features.

    ``transactions`` needs transaction_id, event_time, card_id, terminal_id, amount (channel and country
    optional); ``labels`` needs transaction_id, terminal_id, event_time, is_fraud, reported_at. Labels of
    genuine transactions may be left out: they change no state. ``card_states`` / ``terminal_states`` are
    records of a previous replay (or the online store) to continue from.
    """
    n = len(transactions)
    tx_ts = epoch_seconds(transactions["event_time"]) if n else np.empty(0)
    card_codes, card_ids = pd.factorize(transactions["card_id"].astype(str))

    if labels is not None and len(labels):
        frauds = labels[labels["is_fraud"].astype(bool)]
    else:
        frauds = pd.DataFrame({c: [] for c in ("transaction_id", "terminal_id", "event_time", "reported_at")})
    m = len(frauds)
    term_codes, term_ids = pd.factorize(
        pd.concat(
            [transactions["terminal_id"].astype(str), frauds["terminal_id"].astype(str)], ignore_index=True
        )
    )
    cards = _table(pd.Index(card_ids), card_states, CARD_DTYPE)
    terminals = _table(pd.Index(term_ids), terminal_states, TERMINAL_DTYPE)

    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)

    # cards: transactions in (time, input order)
    order = np.lexsort((np.arange(n), tx_ts))
    tkeys = terminal_keys(transactions["terminal_id"].astype(str).to_numpy())
    countries = country_codes(_optional(transactions, "country").to_numpy())
    channels = channel_codes(_optional(transactions, "channel").to_numpy())
    amounts = transactions["amount"].to_numpy(dtype=np.float64)
    for lo, hi in _chunks(n, CHUNK if progress else max(n, 1), progress, "card features"):
        k = order[lo:hi]
        out[k, :CARD_COLUMNS] = card_features(
            cards, card_codes[k], tx_ts[k], amounts[k], tkeys[k], countries[k], channels[k]
        )

    # terminals: transactions at event_time and fraud labels at reported_at, in (time, kind, input order)
    lab_rep = epoch_seconds(frauds["reported_at"]) if m else np.empty(0)
    times = np.concatenate([tx_ts, lab_rep])
    kinds = np.concatenate([np.full(n, TRANSACTION, dtype=np.int8), np.full(m, LABEL, dtype=np.int8)])
    hashes = np.concatenate([np.zeros(n, dtype=np.uint64), label_hashes(frauds["transaction_id"].to_numpy())])
    event_ts = np.concatenate([np.zeros(n), epoch_seconds(frauds["event_time"]) if m else np.empty(0)])
    order = np.lexsort((np.arange(n + m), kinds, times))
    for lo, hi in _chunks(n + m, CHUNK if progress else max(n + m, 1), progress, "terminal features"):
        k = order[lo:hi]
        feats = terminal_features(terminals, term_codes[k], kinds[k], times[k], hashes[k], event_ts[k])
        out[k[kinds[k] == TRANSACTION], CARD_COLUMNS:] = feats

    features = pd.DataFrame(out, columns=list(FEATURE_NAMES), index=transactions.index)
    cards_out = dict(card_states or {})
    cards_out.update(zip(card_ids.tolist(), record_bytes(cards), strict=True))
    terms_out = dict(terminal_states or {})
    terms_out.update(zip(term_ids.tolist(), record_bytes(terminals), strict=True))
    return ReplayResult(features=features, card_states=cards_out, terminal_states=terms_out)
