"""The estimators we train: a logistic-regression baseline and histogram gradient boosting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fraudwatch.model import ProbabilityBlend

__all__ = ["ALL_KINDS", "KINDS", "ModelSpec", "fit_estimator", "make_estimator"]

KINDS = ("logistic_regression", "hist_gradient_boosting")
#: every kind we can train; "blend" = 0.3 x logistic regression + 0.7 x four feature-subsampled HGBs
ALL_KINDS = (*KINDS, "blend")
BLEND_HGB = {"learning_rate": 0.03, "max_leaf_nodes": 15, "min_samples_leaf": 80, "max_features": 0.5}
BLEND_MEMBERS = 4
BLEND_LINEAR_WEIGHT = 0.3


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    # Frauds are ~1 % of transactions: weight them up (HGB) / balance classes (LR). Thresholds are tuned
    # afterwards on validation data, so the weights only shape the ranking, not the decisions.
    fraud_weight: float = 5.0


HGB_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "max_iter": 400,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "early_stopping": True,
    "validation_fraction": 0.15,
    "n_iter_no_change": 30,
    "random_state": 0,
}


def make_estimator(spec: ModelSpec) -> Pipeline:
    if spec.kind == "logistic_regression":
        params = {"class_weight": "balanced", "max_iter": 2000, **spec.params}
        return Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(**params))])
    if spec.kind == "hist_gradient_boosting":
        return Pipeline([("model", HistGradientBoostingClassifier(**{**HGB_DEFAULTS, **spec.params}))])
    raise ValueError(f"unknown model kind {spec.kind!r}; known: {ALL_KINDS}")


def fit_estimator(spec: ModelSpec, X: npt.NDArray[np.float64], y: npt.NDArray[np.int64]) -> Any:
    if spec.kind == "blend":
        linear = fit_estimator(ModelSpec("logistic_regression"), X, y)
        boosted = [
            fit_estimator(
                ModelSpec("hist_gradient_boosting", {**BLEND_HGB, "random_state": seed}, spec.fraud_weight),
                X,
                y,
            )
            for seed in range(BLEND_MEMBERS)
        ]
        share = (1.0 - BLEND_LINEAR_WEIGHT) / BLEND_MEMBERS
        return ProbabilityBlend([linear, *boosted], [BLEND_LINEAR_WEIGHT] + [share] * BLEND_MEMBERS)
    est = make_estimator(spec)
    if spec.kind == "hist_gradient_boosting":
        weight = np.where(y == 1, spec.fraud_weight, 1.0)
        est.fit(X, y, model__sample_weight=weight)
    else:
        est.fit(X, y)
    return est
