"""Decision thresholds from the validation precision-recall curve, and the expected-cost view.

Policy (configurable, documented in docs/model.md):

* decline: the lowest score whose precision on validation is >= ``decline_precision`` (so as many frauds
  as possible are declined while at most 1 in 10 declines hits a genuine customer). Fallback when no
  threshold reaches it: the threshold of maximum F1.
* review: the highest score whose recall is >= ``review_recall``, but flagging at most ``max_review_rate``
  of transactions (analyst capacity). Fallback: the threshold flagging exactly that share.
* review is always below decline: if the rules cross, review becomes the largest validation score below
  decline (or decline / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fraudwatch.model import Thresholds

__all__ = ["CostModel", "ThresholdChoice", "ThresholdPolicy", "choose_thresholds", "expected_cost"]


@dataclass(frozen=True)
class ThresholdPolicy:
    decline_precision: float = 0.90
    review_recall: float = 0.90
    max_review_rate: float = 0.02


@dataclass(frozen=True)
class ThresholdChoice:
    thresholds: Thresholds
    decline_rule: str  # "precision" or "fallback: max F1"
    review_rule: str  # "recall", "capacity" or "below decline"


def _curve(
    y: npt.NDArray[np.int64], s: npt.NDArray[np.float64]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with precision, recall and alert rate of ``score >= threshold``."""
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    tp = np.cumsum(yy)
    n = np.arange(1, len(ss) + 1)
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]  # last index of each distinct score
    thr = ss[last]
    precision = tp[last] / n[last]
    recall = tp[last] / max(int(y.sum()), 1)
    rate = n[last] / len(ss)
    return thr, precision, recall, rate


def choose_thresholds(
    y: npt.ArrayLike, score: npt.ArrayLike, policy: ThresholdPolicy = ThresholdPolicy()
) -> ThresholdChoice:
    """Review and decline thresholds on validation labels and scores, by ``policy``."""
    yt = np.asarray(y, dtype=np.int64)
    sc = np.asarray(score, dtype=np.float64)
    if len(yt) == 0 or yt.sum() == 0:
        raise ValueError("threshold tuning needs validation data with at least one fraud")
    thr, precision, recall, rate = _curve(yt, sc)

    ok = np.nonzero(precision >= policy.decline_precision)[0]
    if len(ok):
        i = ok[-1]  # lowest threshold (thresholds are descending) still precise enough
        decline, decline_rule = float(thr[i]), f"precision >= {policy.decline_precision}"
    else:
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        decline, decline_rule = float(thr[int(np.argmax(f1))]), "fallback: max F1"

    ok = np.nonzero((recall >= policy.review_recall) & (rate <= policy.max_review_rate))[0]
    if len(ok):
        review, review_rule = float(thr[ok[0]]), f"recall >= {policy.review_recall}"
    else:
        within = np.nonzero(rate <= policy.max_review_rate)[0]
        review = float(thr[within[-1]]) if len(within) else float(thr[0])
        review_rule = f"capacity: alert rate <= {policy.max_review_rate}"
    if review >= decline:
        below = thr[thr < decline]
        review = float(below[0]) if len(below) else decline / 2
        review_rule = "below decline"
    if decline <= 0.0:
        decline = float(np.nextafter(0.0, 1.0))
        review = 0.0
    return ThresholdChoice(Thresholds(review, decline), decline_rule, review_rule)


@dataclass(frozen=True)
class CostModel:
    """Costs of the decisions, in the currency of the amounts."""

    review_cost: float = 5.0  # an analyst's look at one alert
    false_decline_cost: float = 20.0  # a genuine customer declined (support call, churn risk)
    # A missed fraud costs its amount; a reviewed fraud is assumed caught; a declined fraud costs nothing.


def expected_cost(
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    amount: npt.ArrayLike,
    thresholds: Thresholds,
    costs: CostModel = CostModel(),
) -> dict[str, float]:
    """The cost of deciding with ``thresholds`` against approving everything (per the cost model)."""
    yt = np.asarray(y, dtype=bool)
    sc = np.asarray(score, dtype=np.float64)
    amt = np.asarray(amount, dtype=np.float64)
    decline = sc >= thresholds.decline
    review = (sc >= thresholds.review) & ~decline
    missed = float(amt[yt & ~decline & ~review].sum())
    cost = (
        missed + costs.review_cost * int(review.sum()) + costs.false_decline_cost * int((decline & ~yt).sum())
    )
    baseline = float(amt[yt].sum())
    return {
        "cost_total": cost,
        "cost_missed_fraud_amount": missed,
        "cost_approve_all": baseline,
        "cost_saving_share": 1.0 - cost / baseline if baseline else 0.0,
    }
