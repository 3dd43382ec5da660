"""Point-in-time replay: the offline training-set builder.

History (transactions at their event_time, labels at their reported_at) is replayed in time order through
the very functions the stream and the API use, so each transaction's features are those the platform would
have computed live. At equal times a transaction goes before a label, so a transaction never sees a label
reported at its own instant (and never its own label).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from fraudwatch.features.compute import FEATURE_NAMES, apply_label, card_step, terminal_step
from fraudwatch.features.state import CardState, TerminalState

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


def _optional(frame: pd.DataFrame, column: str) -> list[str | None]:
    if column not in frame.columns:
        return [None] * len(frame)
    return [v if isinstance(v, str) and v else None for v in frame[column].tolist()]


@dataclass
class ReplayResult:
    """Features of every transaction (rows in the input's order) and the entity state after the replay."""

    features: pd.DataFrame
    card_states: dict[str, CardState] = field(default_factory=dict)
    terminal_states: dict[str, TerminalState] = field(default_factory=dict)


def replay(
    transactions: pd.DataFrame,
    labels: pd.DataFrame | None = None,
    card_states: dict[str, CardState] | None = None,
    terminal_states: dict[str, TerminalState] | None = None,
    progress: bool = False,
) -> ReplayResult:
    """Replay history point-in-time and return every transaction's features.

    ``transactions`` needs transaction_id, event_time, card_id, terminal_id, amount (channel and country
    optional); ``labels`` needs transaction_id, terminal_id, event_time, is_fraud, reported_at. Labels of
    genuine transactions may be left out: they change no state.
    """
    n = len(transactions)
    cards = card_states if card_states is not None else {}
    terminals = terminal_states if terminal_states is not None else {}

    tx_ts = epoch_seconds(transactions["event_time"])
    card_ids = transactions["card_id"].astype(str).tolist()
    terminal_ids = transactions["terminal_id"].astype(str).tolist()
    amounts = transactions["amount"].astype(float).tolist()
    channels = _optional(transactions, "channel")
    countries = _optional(transactions, "country")

    if labels is not None and len(labels):
        frauds = labels[labels["is_fraud"].astype(bool)]
        lab_rep = epoch_seconds(frauds["reported_at"])
        lab_evt = epoch_seconds(frauds["event_time"]).tolist()
        lab_tx = frauds["transaction_id"].astype(str).tolist()
        lab_term = frauds["terminal_id"].astype(str).tolist()
    else:
        lab_rep = np.empty(0)
        lab_evt, lab_tx, lab_term = [], [], []

    times = np.concatenate([tx_ts, lab_rep])
    kinds = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(len(lab_rep), dtype=np.int8)])
    order = np.lexsort((np.arange(len(times)), kinds, times)).tolist()
    tx_ts_list = tx_ts.tolist()

    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    iterator: Iterable[int] = order
    if progress:
        from rich.progress import track

        iterator = track(order, description="replaying history (point-in-time features)")
    for k in iterator:
        if k < n:
            cid = card_ids[k]
            tid = terminal_ids[k]
            card = cards.get(cid)
            if card is None:
                card = cards[cid] = CardState()
            term = terminals.get(tid)
            if term is None:
                term = terminals[tid] = TerminalState()
            ts = tx_ts_list[k]
            out[k] = card_step(card, ts, amounts[k], tid, countries[k], channels[k]) + terminal_step(term, ts)
        else:
            j = k - n
            tid = lab_term[j]
            term = terminals.get(tid)
            if term is None:
                term = terminals[tid] = TerminalState()
            apply_label(term, lab_tx[j], lab_evt[j], True)

    features = pd.DataFrame(out, columns=list(FEATURE_NAMES), index=transactions.index)
    return ReplayResult(features=features, card_states=cards, terminal_states=terminals)
