"""Model selection on prequential validation folds: a small, declared search space, chosen once by mean
validation average precision, then frozen and run once on the test folds.

Every candidate is a weighted average of fitted *components* (a single model is one component of weight
1). Components are fitted once per fold and shared: the blends reuse the logistic regression and the
feature-subsampled HGBs, so the blend weights cost no extra training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fraudwatch.model import FraudModel, ProbabilityBlend
from fraudwatch_training.metrics import evaluate
from fraudwatch_training.models import BLEND_HGB, BLEND_MEMBERS, ModelSpec, fit_estimator
from fraudwatch_training.protocol import Fold, known_at, without_known_compromised

__all__ = [
    "COMPONENTS",
    "SEARCH_SPACE",
    "Candidate",
    "FoldData",
    "FoldResult",
    "choose",
    "run_fold",
    "summarise",
]

METRICS = ("auc_roc", "average_precision", "card_precision_at_100")

#: Components: what gets fitted. HGB "default" = models.HGB_DEFAULTS (learning rate 0.05, 31 leaves, min 40
#: a leaf, early stopping); "small" = the blend's members (learning rate 0.03, 15 leaves, min 80 a leaf,
#: half the features per split), seed 0..3. Class weighting: LR balanced or not, HGB fraud weight 1 or 5.
COMPONENTS: dict[str, ModelSpec] = {
    "lr_balanced": ModelSpec("logistic_regression"),
    "lr_unweighted": ModelSpec("logistic_regression", {"class_weight": None}),
    "hgb_default_w1": ModelSpec("hist_gradient_boosting", {}, fraud_weight=1.0),
    "hgb_default_w5": ModelSpec("hist_gradient_boosting", {}, fraud_weight=5.0),
    "hgb_small_w1": ModelSpec("hist_gradient_boosting", {**BLEND_HGB, "random_state": 0}, fraud_weight=1.0),
    **{
        f"hgb_small_w5_s{seed}": ModelSpec(
            "hist_gradient_boosting", {**BLEND_HGB, "random_state": seed}, fraud_weight=5.0
        )
        for seed in range(BLEND_MEMBERS)
    },
}


@dataclass(frozen=True)
class Candidate:
    """A model of the search space: components and their weights (normalised when scoring)."""

    name: str
    kind: str  # the model kind it registers as: logistic_regression, hist_gradient_boosting, blend
    members: tuple[tuple[str, float], ...]

    def estimator(self, fitted: dict[str, Any]) -> Any:
        if len(self.members) == 1:
            return fitted[self.members[0][0]]
        return ProbabilityBlend([fitted[c] for c, _ in self.members], [w for _, w in self.members])


def _blend(linear_weight: float, linear: str = "lr_balanced") -> Candidate:
    share = (1.0 - linear_weight) / BLEND_MEMBERS
    members = ((linear, linear_weight), *((f"hgb_small_w5_s{s}", share) for s in range(BLEND_MEMBERS)))
    prefix = "blend_lr" if linear == "lr_balanced" else "blend_unweighted_lr"
    return Candidate(f"{prefix}{linear_weight:g}", "blend", members)


def _single(name: str, kind: str, component: str | None = None) -> Candidate:
    return Candidate(name, kind, ((component or name, 1.0),))


#: The declared search space (9 candidates, 9 fits per fold). Order breaks ties: simpler first.
SEARCH_SPACE: tuple[Candidate, ...] = (
    _single("lr_balanced", "logistic_regression"),
    _single("lr_unweighted", "logistic_regression"),
    _single("hgb_default_w1", "hist_gradient_boosting"),
    _single("hgb_default_w5", "hist_gradient_boosting"),
    _single("hgb_small_w1", "hist_gradient_boosting"),
    _single("hgb_small_w5", "hist_gradient_boosting", "hgb_small_w5_s0"),
    _blend(0.2),
    _blend(0.3),
    _blend(0.5),
)


def describe_space(space: Sequence[Candidate] = SEARCH_SPACE) -> dict[str, Any]:
    """The search space as data (for the results file)."""
    used = {c for cand in space for c, _ in cand.members}
    return {
        "components": {
            name: {"kind": s.kind, "params": s.params, "fraud_weight": s.fraud_weight}
            for name, s in COMPONENTS.items()
            if name in used
        },
        "candidates": {c.name: {"kind": c.kind, "members": [list(m) for m in c.members]} for c in space},
        "criterion": "highest mean validation average precision over the validation folds; ties: first listed",
    }


@dataclass
class FoldData:
    """What a fold needs, for the whole history (rows in event-time order)."""

    X: npt.NDArray[np.float64]
    is_fraud: npt.NDArray[np.bool_]
    reported_ns: npt.NDArray[np.int64]
    day: npt.NDArray[np.int64]
    card: npt.NDArray[np.int64]


@dataclass
class FoldResult:
    fold: dict[str, str]
    n_train: int
    n_train_fraud_known: int
    n_train_fraud_unknown: int  # frauds of the training window reported after the cut-off
    n_assessed: int
    n_assessed_fraud: int
    scores: dict[str, dict[str, float]]  # candidate -> metric -> value
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_fold(
    data: FoldData,
    fold: Fold,
    candidates: Sequence[Candidate],
    clock: Callable[[], float],
    echo: Callable[[str], None] = lambda _: None,
    labels_at_cutoff: bool = True,
) -> FoldResult:
    """Fit the components the candidates need on ``fold``'s training window (labels as known at its
    cut-off), score each candidate on the assessment window without known-compromised cards.

    ``labels_at_cutoff=False`` trains on every fraud of the window, known or not: only to measure what the
    cut-off rule costs (an ablation), never what a deployed model could do."""
    t0 = clock()
    train = fold.train_mask(data.day)
    n_fraud = int(data.is_fraud[train].sum())
    y_known = known_at(data.is_fraud[train], data.reported_ns[train], fold.cutoff_ns)
    n_unknown = n_fraud - int(y_known.sum())
    if not labels_at_cutoff:
        y_known = data.is_fraud[train].astype(np.int64)
    if y_known.sum() == 0:
        raise ValueError(f"{fold.role} fold {fold.describe()}: no fraud known at the cut-off to train on")
    assessed = without_known_compromised(
        data.day, data.card, data.is_fraud, data.reported_ns, fold.window_mask(data.day), fold.train_start
    )
    X_train = data.X[train]
    X_test = data.X[assessed]
    y_test = data.is_fraud[assessed].astype(np.int64)
    fitted: dict[str, Any] = {}
    for comp in dict.fromkeys(c for cand in candidates for c, _ in cand.members):
        fitted[comp] = fit_estimator(COMPONENTS[comp], X_train, y_known)
    scores: dict[str, dict[str, float]] = {}
    for cand in candidates:
        s = FraudModel(cand.estimator(fitted)).score_matrix(X_test)
        m = evaluate(y_test, s, data.day[assessed], data.card[assessed])
        scores[cand.name] = {k: float(m[k]) for k in METRICS}
    result = FoldResult(
        fold.describe(),
        int(train.sum()),
        n_fraud - n_unknown,
        n_unknown,
        int(assessed.sum()),
        int(y_test.sum()),
        scores,
        round(clock() - t0, 1),
    )
    echo(f"{fold.role} fold {result.fold}: {len(fitted)} fits, {result.seconds:.0f} s")
    return result


def summarise(results: Sequence[FoldResult], candidate: str) -> dict[str, dict[str, float]]:
    """Mean and sample SD across folds of each metric for ``candidate``."""
    out: dict[str, dict[str, float]] = {}
    for metric in METRICS:
        values = np.array([r.scores[candidate][metric] for r in results], dtype=np.float64)
        sd = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        out[metric] = {"mean": float(values.mean()), "sd": sd}
    return out


def choose(results: Sequence[FoldResult], candidates: Sequence[Candidate]) -> tuple[Candidate, str]:
    """The candidate with the highest mean validation AP (first listed on ties), and why in words."""
    means = {c.name: summarise(results, c.name)["average_precision"] for c in candidates}
    ranked = sorted(candidates, key=lambda c: -means[c.name]["mean"])  # stable: declared order on ties
    best = ranked[0]
    why = (
        f"highest mean validation AP over {len(results)} folds: {best.name} "
        f"{means[best.name]['mean']:.4f} ± {means[best.name]['sd']:.4f}"
    )
    if len(ranked) > 1:
        second = ranked[1]
        gap = means[best.name]["mean"] - means[second.name]["mean"]
        why += f"; runner-up {second.name} {means[second.name]['mean']:.4f} (gap {gap:.4f})"
    return best, why
