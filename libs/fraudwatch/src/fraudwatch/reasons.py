"""Reasons: why a transaction scored as it did, in words a fraud analyst understands.

Each :class:`ReasonRule` watches one feature, fires when the value is suspicious (a fixed trigger, e.g.
"more than 3 small amounts in the last hour"), and says so in a sentence built from the feature values.
Fired rules are ranked by how unusual the value is against the training reference (the share of training
transactions with a value at least as large: its *tail*) weighted by the feature's importance to the model:
``priority = importance_weight x -log(tail)``. No per-request SHAP: a bisect per fired rule.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["REASON_RULES", "ReasonRule", "explain_row", "tail_share"]

Values = Mapping[str, float]


@dataclass(frozen=True, slots=True)
class ReasonRule:
    """One reason: the feature it reads, when it fires and what it says."""

    feature: str
    fires: Callable[[Values], bool]
    text: Callable[[Values, str | None], str]


def _n(value: float) -> str:
    return str(round(value))


def _amount(v: Values) -> str:
    return f"{v['amount']:,.2f}"


def _days(value: float) -> str:
    d = round(value)
    return "today" if d == 0 else ("1 day ago" if d == 1 else f"{d} days ago")


def _since_prev(v: Values) -> str:
    seconds = math.expm1(v["card_log_seconds_since_prev"])
    if seconds < 120:
        return f"{seconds:.0f} seconds"
    if seconds < 7200:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


def _abroad(v: Values, country: str | None) -> str:
    return f"card used abroad ({country})" if country else "card used abroad"


# Order matters only for ties. Triggers are deliberately simple and stated in the analyst's terms.
REASON_RULES: tuple[ReasonRule, ...] = (
    ReasonRule(
        "amount_to_card_mean_30d",
        lambda v: v["amount_to_card_mean_30d"] >= 3.0 and v["card_is_new"] == 0,
        lambda v, c: f"amount {v['amount_to_card_mean_30d']:.1f}x the card's 30-day average",
    ),
    ReasonRule(
        "amount_to_card_max_30d",
        lambda v: v["amount_to_card_max_30d"] > 1.2 and v["card_count_30d"] >= 3,
        lambda v, c: (
            f"amount {_amount(v)} above the card's 30-day maximum ({v['amount_to_card_max_30d']:.1f}x)"
        ),
    ),
    ReasonRule(
        "amount",
        lambda v: v["amount"] >= 200.0,
        lambda v, c: f"large amount ({_amount(v)})",
    ),
    ReasonRule(
        "terminal_fraud_count_utc30d",
        lambda v: v["terminal_fraud_count_utc30d"] >= 1,
        lambda v, c: (
            f"terminal had {_n(v['terminal_fraud_count_utc30d'])} reported "
            f"fraud{'s' if v['terminal_fraud_count_utc30d'] >= 2 else ''} in the last 30 days"
        ),
    ),
    ReasonRule(
        "terminal_risk_delayed_utc30d",
        lambda v: v["terminal_risk_delayed_utc30d"] >= 0.05,
        lambda v, c: (
            f"{v['terminal_risk_delayed_utc30d']:.0%} of the terminal's transactions were fraud "
            "(the 30 UTC days that ended at least a week ago)"
        ),
    ),
    ReasonRule(
        "terminal_days_since_fraud",
        lambda v: v["terminal_days_since_fraud"] <= 7.0,
        lambda v, c: f"terminal's latest reported fraud was {_days(v['terminal_days_since_fraud'])}",
    ),
    ReasonRule(
        "card_small_count_1h",
        lambda v: v["card_small_count_1h"] >= 3,
        lambda v, c: f"card-testing pattern: {_n(v['card_small_count_1h'])} small amounts in the last hour",
    ),
    ReasonRule(
        "card_count_1h",
        lambda v: v["card_count_1h"] >= 3,
        lambda v, c: f"{_n(v['card_count_1h'])} transactions on this card in the last hour",
    ),
    ReasonRule(
        "card_count_1d",
        lambda v: v["card_count_1d"] >= 8,
        lambda v, c: f"{_n(v['card_count_1d'])} transactions on this card in the last 24 hours",
    ),
    ReasonRule(
        "card_log_seconds_since_prev",
        lambda v: v["card_is_new"] == 0 and v["card_log_seconds_since_prev"] < math.log1p(300.0),
        lambda v, c: f"only {_since_prev(v)} since the card's previous transaction",
    ),
    ReasonRule(
        "card_country_changed_6h",
        lambda v: v["card_country_changed_6h"] >= 1,
        lambda v, c: (
            f"card used in another country{f' ({c})' if c else ''} less than 6 hours "
            "after its previous transaction"
        ),
    ),
    ReasonRule(
        "card_country_is_new",
        lambda v: v["card_country_is_new"] >= 1 and v["card_is_new"] == 0,
        lambda v, c: f"first use of the card in {c}" if c else "first use of the card in this country",
    ),
    ReasonRule("card_abroad", lambda v: v["card_abroad"] >= 1, _abroad),
    ReasonRule(
        "card_terminal_is_new",
        lambda v: v["card_terminal_is_new"] >= 1 and v["card_is_new"] == 0,
        lambda v, c: "first use of this terminal by the card",
    ),
    ReasonRule(
        "is_night",
        lambda v: v["is_night"] >= 1,
        lambda v, c: (
            f"night-time transaction ({_n(v['hour_of_day']):0>2}:00-{_n(v['hour_of_day']):0>2}:59 UTC)"
        ),
    ),
    ReasonRule(
        "card_is_new", lambda v: v["card_is_new"] >= 1, lambda v, c: "first transaction seen for this card"
    ),
    ReasonRule(
        "terminal_is_new",
        lambda v: v["terminal_is_new"] >= 1,
        lambda v, c: "first transaction seen at this terminal",
    ),
)

# For these features a *small* value is the unusual one: their tail is the share at or below the value.
LOW_IS_UNUSUAL: frozenset[str] = frozenset({"card_log_seconds_since_prev", "terminal_days_since_fraud"})
MIN_TAIL = 1e-4


def tail_share(quantiles: Sequence[float], value: float, low: bool = False) -> float:
    """Share of the reference at least as extreme as ``value``, from evenly spaced quantiles (0..100 %)."""
    steps = len(quantiles) - 1
    if steps <= 0:
        return 1.0
    if low:
        share = bisect.bisect_right(quantiles, value) / (steps + 1)
    else:
        share = (steps + 1 - bisect.bisect_left(quantiles, value)) / (steps + 1)
    return min(1.0, max(MIN_TAIL, share))


def explain_row(
    values: Values,
    quantiles: Mapping[str, Sequence[float]],
    weights: Mapping[str, float],
    k: int = 3,
    country: str | None = None,
) -> list[str]:
    """The top-``k`` fired reasons of one transaction, most telling first."""
    fired: list[tuple[float, int, str]] = []
    for pos, rule in enumerate(REASON_RULES):
        if not rule.fires(values):
            continue
        q = quantiles.get(rule.feature)
        tail = tail_share(q, values[rule.feature], rule.feature in LOW_IS_UNUSUAL) if q else 0.5
        priority = weights.get(rule.feature, 0.0) * -math.log(tail)
        fired.append((-priority, pos, rule.text(values, country)))
    fired.sort()
    return [text for _, _, text in fired[:k]]
