"""As-of safety: does the stored state already hold events later than the transaction being scored?

The API scores a transaction against the *current* state of its card and terminal. For a new transaction
that is the point-in-time state. For a back-dated request, or a re-score of a transaction the stream has
already taken in, the state holds later events (and labels reported later), and the features silently mix
them in. Rebuilding the state as of an earlier instant is not possible from a state record (it keeps windows,
not the events), so the API says so instead: the response's ``as_of`` field and the
``fraudwatch_api_state_newer_than_event_total`` counter (docs/api.md, "As-of safety").

What a record tells about its time:

* card: ``last_ts``, the exact event time of the latest transaction it holds. The state is newer when
  ``last_ts >= event_time``: at equal times the record may hold this very transaction (a re-score), which is
  the common case and cannot be told from a second transaction at the same microsecond.
* terminal: the newest UTC day of its daily tiles and the event time of the latest fraud reported to it. The
  record does not keep the exact time of its latest transaction, so its time is a lower bound, the later of
  the start of its newest day and that fraud's time; it is newer when that bound is later than the event
  (a later day, or a fraud that happened after it). A later transaction on the same day is not detected.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from fraudwatch.features import CARD_DTYPE, TERMINAL_DTYPE
from fraudwatch.store import EntityStates

__all__ = ["as_of", "state_times"]

_DAY = 86400.0
_NO_DAY = np.iinfo(np.int32).min


def state_times(states: EntityStates) -> tuple[float | None, float | None]:
    """(card, terminal) time of the stored records in epoch seconds; None for an entity never seen."""
    card = None
    if states.card is not None:
        rec = np.frombuffer(states.card, dtype=CARD_DTYPE)[0]
        card = float(rec["last_ts"]) if int(rec["n_life"]) > 0 else None
    terminal = None
    if states.terminal is not None:
        rec = np.frombuffer(states.terminal, dtype=TERMINAL_DTYPE)[0]
        day = int(rec["tile_newest"])
        bounds = [float(rec["last_fraud_ts"])]
        if day != _NO_DAY:
            bounds.append(day * _DAY)
        latest = max(bounds)
        terminal = latest if math.isfinite(latest) else None
    return card, terminal


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def as_of(event_ts: float, states: EntityStates) -> dict[str, Any]:
    """The response's ``as_of`` object of one transaction (event time in epoch seconds) and its states."""
    card, terminal = state_times(states)
    card_newer = card is not None and card >= event_ts
    terminal_newer = terminal is not None and terminal > event_ts
    return {
        "state_newer_than_event": card_newer or terminal_newer,
        "card_newer": card_newer,
        "terminal_newer": terminal_newer,
        "card_state_time": _iso(card),
        "terminal_state_time": _iso(terminal),
    }
