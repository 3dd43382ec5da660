"""The serving artifact: the numpy/numba predictor reproduces scikit-learn's predict_proba to 1e-12 and loads
without sklearn, scipy's heavy parts, skops or mlflow.pyfunc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.model import FraudModel, ProbabilityBlend, Thresholds, compile_estimator, compute_reference
from fraudwatch.serving_model import SERVING_ARRAYS, SERVING_SPEC, CompiledFraudModel, CompiledModel
from fraudwatch_training.models import ModelSpec, fit_estimator

N_FEATURES = len(FEATURE_NAMES)


def _data(n: int, seed: int, missing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a signal in a few columns; with ``missing``, NaNs in two of them (HGB learns where to send them)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 5] = rng.integers(0, 4, n)  # a low-cardinality column: many ties at split thresholds
    logit = 2.5 * X[:, 0] - 1.5 * X[:, 3] + X[:, 10] * X[:, 11] + 0.8 * X[:, 5] - 4.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    if missing:
        X[rng.random(n) < 0.1, 0] = np.nan
        X[rng.random(n) < 0.05, 3] = np.nan
    return X, y


def _probe(seed: int = 9, missing: bool = True) -> np.ndarray:
    """Scoring rows: fresh values, exact ties on a split column and, with ``missing``, NaNs in the columns
    trained with and without missing values (the linear model takes no NaN: blends are scored without)."""
    X, _ = _data(3000, seed, missing=missing)
    if missing:
        rng = np.random.default_rng(seed)
        X[rng.random(len(X)) < 0.1, 10] = np.nan  # never missing in training: sklearn's default routing
    X[:50, 5] = 1.0
    return X


def _save_and_load(model: FraudModel, tmp_path: Path) -> CompiledFraudModel:
    model.save_artifacts(tmp_path)
    return CompiledFraudModel.load(tmp_path)


@pytest.fixture(scope="module")
def blend() -> ProbabilityBlend:
    X, y = _data(4000, 1, missing=False)
    est = fit_estimator(ModelSpec("blend"), X, y)
    assert isinstance(est, ProbabilityBlend)
    return est


def test_blend_artifact_reproduces_predict_proba(blend: ProbabilityBlend, tmp_path: Path) -> None:
    """The production model kind (LR + four feature-subsampled HGBs) at 1e-12."""
    model = FraudModel(blend, Thresholds(0.2, 0.6))
    served = _save_and_load(model, tmp_path)
    X = _probe(missing=False)
    expected = blend.predict_proba(X)[:, 1]
    got = served.score_matrix(X)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # one row at a time (the API's case) gives the same numbers as the block, to the last bits of the linear
    # member's dot product (BLAS sums a row and a block in different orders)
    for i in range(0, 200, 17):
        np.testing.assert_allclose(served.score_matrix(X[i]), got[i : i + 1], rtol=0, atol=1e-15)
    assert served.decide(got) == model.decide(expected)


@pytest.mark.parametrize("kind", ["logistic_regression", "hist_gradient_boosting"])
def test_single_model_artifacts_reproduce_predict_proba(kind: str, tmp_path: Path) -> None:
    X, y = _data(3000, 2, missing=kind == "hist_gradient_boosting")
    est = fit_estimator(ModelSpec(kind, {"max_iter": 60} if kind == "hist_gradient_boosting" else {}), X, y)
    served = _save_and_load(FraudModel(est), tmp_path)
    X_probe = _probe(missing=kind == "hist_gradient_boosting")
    if kind == "hist_gradient_boosting":
        assert np.isnan(X_probe).any(axis=1).sum() > 300  # the NaN routes were exercised
    np.testing.assert_allclose(
        served.score_matrix(X_probe), est.predict_proba(X_probe)[:, 1], rtol=0, atol=1e-12
    )


def test_artifact_carries_thresholds_reference_and_reasons(blend: ProbabilityBlend, tmp_path: Path) -> None:
    X, _ = _data(2000, 3, missing=False)
    model = FraudModel(blend, Thresholds(0.25, 0.75))
    model.reference = compute_reference(
        X, model.score_matrix(X), {FEATURE_NAMES[0]: 1.0, FEATURE_NAMES[3]: 0.5}
    )
    model._refresh_weights()
    served = _save_and_load(model, tmp_path)
    assert served.thresholds == model.thresholds
    assert served.feature_names == model.feature_names
    assert served.reference.quantiles == model.reference.quantiles
    for row in X[:20]:
        assert served.explain(row.tolist(), country="BE") == model.explain(row.tolist(), country="BE")


def test_estimators_that_do_not_compile_write_no_artifact(tmp_path: Path) -> None:
    """Categorical splits are not compiled: such a model keeps sklearn's predict_proba and has no artifact."""
    X, y = _data(3000, 4, missing=False)
    est = HistGradientBoostingClassifier(max_iter=20, categorical_features=[5], random_state=0).fit(X, y)
    assert any(node["is_categorical"] for p in est._predictors for node in p[0].nodes)
    assert compile_estimator(est) is None
    artifacts = FraudModel(est).save_artifacts(tmp_path)
    assert not (tmp_path / SERVING_ARRAYS).exists()
    assert set(artifacts) == {"estimator", "metadata"}


def test_corrupt_or_foreign_artifacts_are_model_errors(blend: ProbabilityBlend, tmp_path: Path) -> None:
    compiled = compile_estimator(blend)
    assert compiled is not None
    arrays, spec = compiled.to_arrays()
    with pytest.raises(ModelError, match="format"):
        CompiledModel.from_arrays(arrays, {**spec, "format": "something-else/9"})
    broken = dict(arrays)
    broken["trees_left"] = arrays["trees_left"].copy()
    broken["trees_left"][3] = len(arrays["trees_feature"]) + 5
    with pytest.raises(ModelError, match="out of range"):
        CompiledModel.from_arrays(broken, spec)
    missing = {k: v for k, v in arrays.items() if k != "linear0_coef"}
    with pytest.raises(ModelError, match="incomplete"):
        CompiledModel.from_arrays(missing, spec)
    FraudModel(blend).save_artifacts(tmp_path)
    (tmp_path / SERVING_SPEC).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="cannot load"):
        CompiledFraudModel.load(tmp_path)


def test_loading_and_scoring_imports_no_sklearn_skops_or_pyfunc(
    blend: ProbabilityBlend, tmp_path: Path
) -> None:
    """A fresh interpreter loads the artifact and scores: none of the heavy modules come in."""
    FraudModel(blend).save_artifacts(tmp_path)
    X = _probe(missing=False)[:100]
    np.save(tmp_path / "probe.npy", X)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "from fraudwatch.serving_model import CompiledFraudModel\n"
        f"d = Path({str(tmp_path)!r})\n"
        "m = CompiledFraudModel.load(d)\n"
        "s = m.score_matrix(np.load(d / 'probe.npy'))\n"
        # scipy.linalg is not on this list: numba itself imports it (its BLAS check, numba/np/arraymath.py) as
        # soon as any compiled function loads, the feature kernels included
        "heavy = ['sklearn', 'skops', 'mlflow', 'mlflow.pyfunc', 'scipy.special', 'scipy.sparse', 'scipy.stats']\n"
        "print(json.dumps({'scores': s.tolist(), 'loaded': [h for h in heavy if h in sys.modules]}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    np.testing.assert_allclose(result["scores"], blend.predict_proba(X)[:, 1], rtol=0, atol=1e-12)


def test_lr_without_scaler_and_pipeline_variants_compile() -> None:
    X, y = _data(2000, 5, missing=False)
    plain = LogisticRegression(max_iter=500).fit(X, y)
    scaled = Pipeline(
        [("scale", StandardScaler(with_mean=False)), ("model", LogisticRegression(max_iter=500))]
    )
    scaled.fit(X, y)
    for est in (plain, scaled):
        compiled = compile_estimator(est)
        assert compiled is not None
        np.testing.assert_allclose(compiled.predict(X), est.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
