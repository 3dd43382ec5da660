"""The feature declarations: every window once, as data, plus the names and meaning of every feature.

The compiled kernels (:mod:`.kernels`, driven through :mod:`.engine`), the feature table in docs/model.md
(:func:`feature_table`, checked by a test) and the independent oracle test all read these declarations, so a
new window is one line here.

Two kinds of windows, because the two entities see very different volumes:

* **card windows** are exact trailing windows over the card's earlier transactions ``p`` with
  ``0 <= t - t_p < window``, taken from a ring of the card's :data:`CARD_RING` most recent transactions
  (time, amount). They are exact as long as the card has at most ``CARD_RING`` earlier transactions in the
  window; beyond that only the ``CARD_RING`` most recent count (the Handbook's busiest card has 156 in 30 days).
* **terminal windows** are UTC-day tiles (a terminal can see thousands of transactions a day), named
  ``_utcNd``: with ``delay == 0`` the current UTC day so far and the ``N - 1`` days before it; with a delay,
  the ``N`` latest UTC days that *ended* at least ``delay`` before the transaction, so every transaction in the
  window is old enough to carry its label (the delayed-risk denominators count only those).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CARD_COUNTRIES_KEPT",
    "CARD_FEATURES",
    "CARD_RING",
    "CARD_TERMINALS_KEPT",
    "CARD_WINDOWS",
    "COUNTRY_CHANGE_SECONDS",
    "DAY",
    "FEATURE_NAMES",
    "HOUR",
    "LABEL_IDS_KEPT",
    "NO_FRAUD_DAYS",
    "NO_PREVIOUS_SECONDS",
    "RATIO_FLOOR",
    "SMALL_AMOUNT",
    "TERMINAL_FEATURES",
    "TERMINAL_TILES",
    "TERMINAL_WINDOWS",
    "TX_FEATURES",
    "Window",
    "feature_table",
]

HOUR = 3600
DAY = 86400

Entity = Literal["card", "terminal"]
Column = Literal["transactions", "small_amounts", "amount", "frauds"]
Function = Literal["count", "sum", "mean", "max", "risk"]


@dataclass(frozen=True, slots=True)
class Window:
    """One windowed aggregate: ``function`` of ``column`` over the entity's events in a window.

    ``window`` and ``delay`` are seconds; terminal windows are whole UTC days (``window`` a multiple of
    :data:`DAY`). ``column`` is what is aggregated: ``transactions`` (each counts 1), ``small_amounts``
    (transactions under :data:`SMALL_AMOUNT`), ``amount``, or ``frauds`` (reported fraud labels, by the
    day of the fraudulent transaction). ``risk`` is frauds / transactions over the same days.
    """

    name: str
    entity: Entity
    column: Column
    function: Function
    window: int
    delay: int = 0

    def __post_init__(self) -> None:
        if self.entity == "card":
            if self.delay or self.column == "frauds" or self.function == "risk":
                raise ValueError(f"{self.name}: card windows are undelayed aggregates of transactions")
            if self.column in ("transactions", "small_amounts") and self.function != "count":
                raise ValueError(f"{self.name}: only amounts are summed, averaged or maximised")
        else:
            if self.window % DAY or self.delay < 0:
                raise ValueError(f"{self.name}: terminal windows are whole UTC days with a delay >= 0")
            if self.column not in ("transactions", "frauds") or self.function not in ("count", "risk"):
                raise ValueError(
                    f"{self.name}: terminal windows count transactions or frauds, or their ratio"
                )

    @property
    def days(self) -> int:
        return self.window // DAY

    def describe(self) -> str:
        """What the window covers, in words (the docs' feature table)."""
        if self.entity == "card":
            what = {
                ("transactions", "count"): "number of the card's earlier transactions",
                (
                    "small_amounts",
                    "count",
                ): f"number of the card's earlier transactions under {SMALL_AMOUNT:.2f}",
                ("amount", "sum"): "sum of the amounts of the card's earlier transactions",
                ("amount", "mean"): "mean amount of the card's earlier transactions (0 if none)",
                ("amount", "max"): "largest amount of the card's earlier transactions (0 if none)",
            }[(self.column, self.function)]
            return (
                f"{what} with 0 <= t - t_prev < {_span(self.window)} (exact up to {CARD_RING} in the window)"
            )
        what = {
            ("transactions", "count"): "the terminal's earlier transactions",
            ("frauds", "count"): "reported frauds (by the fraud's UTC day)",
            ("frauds", "risk"): "reported frauds / transactions (capped at 1; 0 if no transaction)",
        }[(self.column, self.function)]
        if not self.delay:
            days = (
                "the current UTC day so far"
                if self.days == 1
                else f"the current UTC day and the {self.days - 1} before it"
            )
            return f"{what} on {days}"
        return (
            f"{what} on the {self.days} latest UTC day{'s' if self.days > 1 else ''} that ended at least "
            f"{_span(self.delay)} before the transaction (all old enough to carry their label)"
        )


def _span(seconds: int) -> str:
    if seconds % DAY == 0:
        return f"{seconds // DAY} d" if seconds != DAY else "24 h"
    return f"{seconds // HOUR} h"


SMALL_AMOUNT = 5.0  # card testing probes with amounts below this
CARD_RING = 160  # most recent transactions a card keeps (time, amount)
CARD_TERMINALS_KEPT = 32  # most recent distinct terminals a card keeps (crc32 keys)
CARD_COUNTRIES_KEPT = 8  # most recent distinct countries a card keeps
LABEL_IDS_KEPT = 64  # 64-bit hashes of the most recently applied fraud labels' transaction ids (dedup)
NO_PREVIOUS_SECONDS = 30.0 * DAY  # "time since previous transaction" of a card never seen
NO_FRAUD_DAYS = 365.0  # "days since the terminal's latest reported fraud" when it never had one
RATIO_FLOOR = 1.0  # amounts are compared with averages floored at 1 currency unit (no blow-ups near 0)
COUNTRY_CHANGE_SECONDS = 6 * HOUR
LABEL_DELAY = 7 * DAY  # the Handbook's feedback delay: the delayed terminal windows end this long ago

CARD_WINDOWS: tuple[Window, ...] = (
    Window("card_count_1h", "card", "transactions", "count", HOUR),
    Window("card_small_count_1h", "card", "small_amounts", "count", HOUR),
    Window("card_sum_amount_1h", "card", "amount", "sum", HOUR),
    Window("card_count_1d", "card", "transactions", "count", DAY),
    Window("card_sum_amount_1d", "card", "amount", "sum", DAY),
    Window("card_mean_amount_1d", "card", "amount", "mean", DAY),
    Window("card_max_amount_1d", "card", "amount", "max", DAY),
    Window("card_count_7d", "card", "transactions", "count", 7 * DAY),
    Window("card_mean_amount_7d", "card", "amount", "mean", 7 * DAY),
    Window("card_max_amount_7d", "card", "amount", "max", 7 * DAY),
    Window("card_count_30d", "card", "transactions", "count", 30 * DAY),
    Window("card_mean_amount_30d", "card", "amount", "mean", 30 * DAY),
    Window("card_max_amount_30d", "card", "amount", "max", 30 * DAY),
)

TERMINAL_WINDOWS: tuple[Window, ...] = (
    Window("terminal_count_utc1d", "terminal", "transactions", "count", DAY),
    Window("terminal_count_utc7d", "terminal", "transactions", "count", 7 * DAY),
    Window("terminal_count_utc30d", "terminal", "transactions", "count", 30 * DAY),
    Window("terminal_fraud_count_utc30d", "terminal", "frauds", "count", 30 * DAY),
    Window("terminal_count_delayed_utc1d", "terminal", "transactions", "count", DAY, LABEL_DELAY),
    Window("terminal_count_delayed_utc7d", "terminal", "transactions", "count", 7 * DAY, LABEL_DELAY),
    Window("terminal_count_delayed_utc30d", "terminal", "transactions", "count", 30 * DAY, LABEL_DELAY),
    Window("terminal_risk_delayed_utc1d", "terminal", "frauds", "risk", DAY, LABEL_DELAY),
    Window("terminal_risk_delayed_utc7d", "terminal", "frauds", "risk", 7 * DAY, LABEL_DELAY),
    Window("terminal_risk_delayed_utc30d", "terminal", "frauds", "risk", 30 * DAY, LABEL_DELAY),
)


def _tiles_needed(windows: tuple[Window, ...]) -> int:
    # a delayed window ends at most ceil(delay / DAY) + 1 days before the current one
    return max(w.days + ((-(-w.delay // DAY) + 1) if w.delay else 0) for w in windows)


#: UTC-day tiles a terminal keeps (38 with a 30-day window delayed by 7 days)
TERMINAL_TILES = _tiles_needed(TERMINAL_WINDOWS)

#: transaction features and what they are (from the transaction alone; times are UTC)
TX_DESCRIPTIONS: dict[str, str] = {
    "amount": "amount",
    "log_amount": "log(1 + amount)",
    "hour_of_day": "UTC hour of event_time (0-23)",
    "is_night": "hour_of_day < 6",
    "is_weekend": "event_time on a Saturday or Sunday (UTC)",
    "is_ecom": "channel is ecom",
    "is_atm": "channel is atm",
}
#: card features that are not windows, and what they are
CARD_DESCRIPTIONS: dict[str, str] = {
    "amount_to_card_mean_30d": "amount / max(card_mean_amount_30d, 1); the lifetime mean if no transaction "
    "in 30 d; 1 for a new card",
    "amount_to_card_max_30d": "amount / max(card_max_amount_30d, 1); the lifetime mean if no transaction in "
    "30 d; 1 for a new card",
    "amount_to_card_mean_life": "amount / max(lifetime mean amount, 1); 1 for a new card",
    "card_log_seconds_since_prev": "log(1 + seconds since the card's latest earlier transaction), clipped to "
    "[0, 30 d]; 30 d for a new card",
    "card_log_count_life": "log(1 + the card's lifetime transaction count)",
    "card_is_new": "the card has no earlier transaction",
    "card_terminal_is_new": f"the terminal is not among the card's {CARD_TERMINALS_KEPT} most recent distinct "
    "terminals",
    "card_country_is_new": f"the country is given and not among the card's {CARD_COUNTRIES_KEPT} most recent "
    "distinct countries",
    "card_country_changed_6h": "the country is given and differs from the country of the card's latest "
    "earlier transaction that had one, less than 6 h ago",
    "card_abroad": "the country is given and differs from the card's home country (the first one seen)",
}
#: terminal features that are not windows, and what they are
TERMINAL_DESCRIPTIONS: dict[str, str] = {
    "terminal_days_since_fraud": "days from the latest reported fraud's event_time to the transaction, "
    "clipped to [0, 365]; 365 if none",
    "terminal_is_new": "the terminal has no earlier transaction",
}

TX_FEATURES: tuple[str, ...] = tuple(TX_DESCRIPTIONS)
CARD_FEATURES: tuple[str, ...] = tuple(w.name for w in CARD_WINDOWS) + tuple(CARD_DESCRIPTIONS)
TERMINAL_FEATURES: tuple[str, ...] = tuple(w.name for w in TERMINAL_WINDOWS) + tuple(TERMINAL_DESCRIPTIONS)
#: the model's input, in this order: what the card kernel writes (transaction + card) then the terminal kernel
FEATURE_NAMES: tuple[str, ...] = TX_FEATURES + CARD_FEATURES + TERMINAL_FEATURES


def feature_table() -> str:
    """The markdown feature table of docs/model.md, generated from the declarations (a test compares)."""
    lines = ["| feature | what it covers |", "|---|---|"]
    described = {w.name: w.describe() for w in CARD_WINDOWS + TERMINAL_WINDOWS}
    described |= TX_DESCRIPTIONS | CARD_DESCRIPTIONS | TERMINAL_DESCRIPTIONS
    lines += [f"| `{name}` | {described[name]} |" for name in FEATURE_NAMES]
    return "\n".join(lines)
