"""Bounded per-entity state for cards and terminals, and its compact serialisation.

State is a set of time buckets, so its size is bounded whatever a card's activity:

* card: 12 five-minute buckets (the 1 h window), 24 hourly buckets (1 d) and 30 daily buckets (7 d, 30 d),
  each ``[bucket_index, count, amount_sum, amount_max, small_amount_count]``; lifetime count and sum; the
  previous transaction's time and country; the home country; the 32 most recent distinct terminals
  (as CRC-32 keys) and 8 most recent countries.
* terminal: 37 daily buckets ``[day_index, transaction_count, reported_fraud_count]`` (the current 30 days
  and the Handbook-style windows delayed by 7 days), the event time of the latest reported fraud, and the
  ids of the 64 most recently applied labels (so a redelivered label is not counted twice).

Sizes are documented in docs/features.md (measured by tests/unit/test_features.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import orjson

from fraudwatch.errors import FeatureStateError

__all__ = [
    "CARD_COUNTRIES_KEPT",
    "CARD_TERMINALS_KEPT",
    "DAY",
    "HOUR",
    "LABEL_IDS_KEPT",
    "M5",
    "STATE_VERSION",
    "TERMINAL_DAYS_KEPT",
    "CardState",
    "TerminalState",
    "terminal_key",
]

M5 = 300
HOUR = 3600
DAY = 86400
STATE_VERSION = 1

CARD_M5_KEPT = 12
CARD_HOURS_KEPT = 24
CARD_DAYS_KEPT = 30
CARD_TERMINALS_KEPT = 32
CARD_COUNTRIES_KEPT = 8
TERMINAL_DAYS_KEPT = 37  # current 30 d window and the 7-day-delayed 30 d window: days [d-36, d]
LABEL_IDS_KEPT = 64
SMALL_AMOUNT = 5.0  # card testing probes with amounts below this


def terminal_key(terminal_id: str) -> int:
    """A stable 32-bit key for a terminal id (the same in every process, unlike ``hash``)."""
    return zlib.crc32(terminal_id.encode("utf-8"))


@dataclass(slots=True)
class CardState:
    """What fraudwatch remembers about one card. Buckets are ``[index, count, sum, max, small]``."""

    m5: list[list[float]] = field(default_factory=list)
    hours: list[list[float]] = field(default_factory=list)
    days: list[list[float]] = field(default_factory=list)
    n_life: int = 0
    sum_life: float = 0.0
    last_ts: float = -1.0
    last_country: str = ""
    home_country: str = ""
    terminals: list[int] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [
                STATE_VERSION,
                self.m5,
                self.hours,
                self.days,
                self.n_life,
                self.sum_life,
                self.last_ts,
                self.last_country,
                self.home_country,
                self.terminals,
                self.countries,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> CardState:
        try:
            v = orjson.loads(data)
            if v[0] != STATE_VERSION:
                raise FeatureStateError(f"card state version {v[0]} is not {STATE_VERSION}")
            return cls(v[1], v[2], v[3], int(v[4]), float(v[5]), float(v[6]), v[7], v[8], v[9], v[10])
        except FeatureStateError:
            raise
        except Exception as exc:
            raise FeatureStateError(f"cannot decode card state: {exc}") from exc


@dataclass(slots=True)
class TerminalState:
    """What fraudwatch remembers about one terminal. Buckets are ``[day_index, tx_count, fraud_count]``."""

    days: list[list[int]] = field(default_factory=list)
    n_life: int = 0
    last_fraud_ts: float = -1.0
    label_ids: list[str] = field(default_factory=list)
    last_ts: float = -1.0

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [STATE_VERSION, self.days, self.n_life, self.last_fraud_ts, self.label_ids, self.last_ts]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TerminalState:
        try:
            v = orjson.loads(data)
            if v[0] != STATE_VERSION:
                raise FeatureStateError(f"terminal state version {v[0]} is not {STATE_VERSION}")
            return cls(v[1], int(v[2]), float(v[3]), v[4], float(v[5]))
        except FeatureStateError:
            raise
        except Exception as exc:
            raise FeatureStateError(f"cannot decode terminal state: {exc}") from exc
