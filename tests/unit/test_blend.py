"""The blend model kind: compiled scores equal predict_proba, and it survives the skops round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraudwatch.features import FEATURE_NAMES
from fraudwatch.model import FraudModel, ProbabilityBlend
from fraudwatch_training.models import ModelSpec, fit_estimator


def _data(n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(n, len(FEATURE_NAMES)))
    logit = 2.5 * X[:, 0] - 1.5 * X[:, 3] + X[:, 10] * X[:, 11] - 4.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return X, y


def test_blend_fast_path_equals_predict_proba_and_round_trips(tmp_path: Path) -> None:
    X, y = _data()
    blend = fit_estimator(ModelSpec("blend"), X, y)
    assert isinstance(blend, ProbabilityBlend)
    assert len(blend.members) == 5
    assert sum(blend.weights) == pytest.approx(1.0)
    model = FraudModel(blend)
    assert model.metadata["model_kind"] == "blend"
    fast = model.score_matrix(X[:200])
    slow = blend.predict_proba(X[:200])[:, 1]
    np.testing.assert_allclose(fast, slow, rtol=1e-10, atol=1e-12)

    artifacts = model.save_artifacts(tmp_path)

    class Context:
        def __init__(self, paths: dict[str, str]) -> None:
            self.artifacts = paths

    loaded = FraudModel()
    loaded.load_context(Context(artifacts))
    np.testing.assert_allclose(loaded.score_matrix(X[:200]), fast, rtol=0, atol=0)


def test_blend_ranks_at_least_as_well_as_its_linear_member() -> None:
    from sklearn.metrics import average_precision_score

    X, y = _data(6000)
    train, test = slice(0, 4000), slice(4000, None)
    blend = FraudModel(fit_estimator(ModelSpec("blend"), X[train], y[train]))
    linear = FraudModel(fit_estimator(ModelSpec("logistic_regression"), X[train], y[train]))
    ap_blend = average_precision_score(y[test], blend.score_matrix(X[test]))
    ap_linear = average_precision_score(y[test], linear.score_matrix(X[test]))
    assert ap_blend >= ap_linear - 0.01


def test_blend_needs_one_weight_per_member() -> None:
    from fraudwatch.errors import ModelError

    with pytest.raises(ModelError):
        ProbabilityBlend([object()], [0.5, 0.5])
