"""The model contract: an MLflow pyfunc that scores enriched transactions, decides and says why.

:class:`FraudModel` wraps a fitted scikit-learn estimator together with everything a consumer needs: the
feature list (always :data:`fraudwatch.features.FEATURE_NAMES`), the two decision thresholds, a training
reference (quantiles, means, importances and histograms, for reasons and drift) and provenance metadata.

* ``predict(context, frame)`` is the pyfunc entry point (stream UDF, ``mlflow models serve``).
* ``score_matrix(X)``, ``decide(scores)`` and ``explain(row)`` are the fast path: the estimator is
  compiled (:func:`compile_estimator`: the logistic regression to a dot product, gradient-boosted trees to
  flat node arrays walked by a numba kernel), because scikit-learn's own ``predict_proba`` costs
  milliseconds per call.

The estimator is stored with skops (no pickle); the metadata as JSON; and, next to them, the compiled form
as the serving artifact (numpy arrays + JSON, :mod:`fraudwatch.serving_model`), which the API loads without
sklearn, scipy or skops. Registry helpers (:func:`log_model`,
:func:`promote_if_better`, :func:`load_model`, :func:`resolve_alias`) implement the gated promotion through
the ``challenger`` and ``production`` aliases.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import numpy.typing as npt
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types import ColSpec, Schema, TensorSpec
from mlflow.types.schema import Array

from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.reasons import explain_row
from fraudwatch.serving_model import (
    DECISIONS,
    METADATA_FILE,
    CompiledModel,
    Histogram,
    Linear,
    Reference,
    Thresholds,
    TreeEnsemble,
    decide,
    population_stability_index,
    reason_weights,
    resolve_alias,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "CHALLENGER",
    "DECISIONS",
    "PRODUCTION",
    "TRUSTED_TYPES",
    "FraudModel",
    "Histogram",
    "LoadedModel",
    "PromotionResult",
    "Reference",
    "Thresholds",
    "compile_estimator",
    "compute_reference",
    "load_model",
    "log_model",
    "model_signature",
    "population_stability_index",
    "promote_if_better",
    "registered_reference",
    "resolve_alias",
    "set_alias",
]

FloatArray = npt.NDArray[np.float64]
CHALLENGER = "challenger"
PRODUCTION = "production"
# skops refuses to load any type not known to be safe; these are the only extra ones our estimators need.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "fraudwatch.model.ProbabilityBlend",
)
QUANTILE_LEVELS = 101  # 0 %, 1 %, ..., 100 %
# Features whose distribution drift is worth watching (PSI), besides the score.
DRIFT_FEATURES: tuple[str, ...] = (
    "amount",
    "card_count_1d",
    "amount_to_card_mean_30d",
    "card_terminal_is_new",
    "terminal_risk_delayed_utc30d",
    "terminal_fraud_count_utc30d",
)
_ESTIMATOR_ARTIFACT = "estimator"
_METADATA_ARTIFACT = "metadata"
_METADATA_FILE = METADATA_FILE


def compute_reference(
    X: npt.ArrayLike,
    scores: npt.ArrayLike | None = None,
    importances: Mapping[str, float] | None = None,
    feature_names: Sequence[str] = FEATURE_NAMES,
) -> Reference:
    """The reference of a training matrix (rows x ``feature_names``) and the model's scores on it."""
    m = np.asarray(X, dtype=np.float64)
    levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    q = np.quantile(m, levels, axis=0) if len(m) else np.zeros((QUANTILE_LEVELS, len(feature_names)))
    means = m.mean(axis=0) if len(m) else np.zeros(len(feature_names))
    names = list(feature_names)
    return Reference(
        quantiles={name: q[:, j].tolist() for j, name in enumerate(names)},
        means={name: float(means[j]) for j, name in enumerate(names)},
        importances=dict(importances or {}),
        score_histogram=Histogram.of(scores) if scores is not None else None,
        feature_histograms={f: Histogram.of(m[:, names.index(f)]) for f in DRIFT_FEATURES if f in names},
    )


class ProbabilityBlend:
    """A weighted average of fitted classifiers' fraud probabilities (the ``blend`` model kind).

    Members are fitted by the training code; a blend of a linear model and a few feature-subsampled
    gradient-boosted models ranks frauds better than either alone (docs/benchmarks.md).
    """

    def __init__(self, members: Sequence[Any] = (), weights: Sequence[float] = ()) -> None:
        if len(members) != len(weights):
            raise ModelError("a blend needs one weight per member")
        self.members = list(members)
        self.weights = [float(w) for w in weights]
        self.classes_ = np.array([0, 1])

    def predict_proba(self, X: npt.ArrayLike) -> FloatArray:
        m = np.asarray(X, dtype=np.float64)
        p = np.zeros(len(m))
        for member, weight in zip(self.members, self.weights, strict=True):
            p += weight * np.asarray(member.predict_proba(m))[:, 1]
        p /= sum(self.weights)
        out: FloatArray = np.column_stack([1.0 - p, p])
        return out


def compile_estimator(estimator: Any) -> CompiledModel | None:
    """The numpy/numba scorer of the estimators we train, or None (then sklearn's predict_proba is used).

    This is also what the serving artifact stores (:meth:`CompiledModel.save`), so every consumer scores
    with the same code whether it loaded the skops estimator or the artifact.
    """
    blend = isinstance(estimator, ProbabilityBlend)
    parts = estimator.members if blend else [estimator]
    weights = tuple(estimator.weights) if blend else (1.0,)
    members: list[tuple[str, int]] = []
    linears: list[Linear] = []
    trees: list[list[Any]] = []
    baselines: list[float] = []
    for part in parts:
        steps = list(part.steps) if hasattr(part, "steps") else [("model", part)]
        final = steps[-1][1]
        pre = [s for _, s in steps[:-1] if s is not None and s != "passthrough"]
        kind = type(final).__name__
        if kind == "HistGradientBoostingClassifier" and not pre and final.n_trees_per_iteration_ == 1:
            members.append(("trees", len(baselines)))
            trees.append([p[0].nodes for p in final._predictors])
            baselines.append(float(np.ravel(final._baseline_prediction)[0]))
        elif kind == "LogisticRegression" and len(pre) <= 1 and np.ravel(final.intercept_).size == 1:
            mean = scale = None
            if pre:
                if type(pre[0]).__name__ != "StandardScaler":
                    return None
                mean = np.asarray(pre[0].mean_, dtype=np.float64) if pre[0].with_mean else None
                scale = np.asarray(pre[0].scale_, dtype=np.float64) if pre[0].with_std else None
            members.append(("linear", len(linears)))
            coef = np.ravel(final.coef_).astype(np.float64)
            linears.append(Linear(mean, scale, coef, float(np.ravel(final.intercept_)[0])))
        else:
            return None
    try:
        ensemble = TreeEnsemble.from_nodes(trees, baselines) if trees else None
    except ModelError:  # categorical splits: sklearn's own predict_proba handles them
        return None
    n_features = int(getattr(parts[0], "n_features_in_", len(FEATURE_NAMES)))
    return CompiledModel(tuple(members), weights, tuple(linears), ensemble, n_features)


def model_kind(estimator: Any) -> str:
    if isinstance(estimator, ProbabilityBlend):
        return "blend"
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    return {
        "HistGradientBoostingClassifier": "hist_gradient_boosting",
        "LogisticRegression": "logistic_regression",
    }.get(type(final).__name__, type(final).__name__)


class FraudModel(PythonModel):  # type: ignore[misc]
    """A fitted fraud classifier with its features, thresholds, training reference and provenance."""

    def __init__(
        self,
        estimator: Any = None,
        thresholds: Thresholds | None = None,
        reference: Reference | None = None,
        metadata: Mapping[str, Any] | None = None,
        feature_names: Sequence[str] = FEATURE_NAMES,
    ) -> None:
        self.feature_names: tuple[str, ...] = tuple(feature_names)
        self.thresholds = thresholds or Thresholds(0.5, 0.9)
        self.reference = reference or Reference()
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.estimator: Any = None
        self.compiled: CompiledModel | None = None
        self._weights: dict[str, float] = {}
        self._check_features()
        if estimator is not None:
            self.set_estimator(estimator)
        self._refresh_weights()

    # -- construction and persistence ------------------------------------------------------------------

    def set_estimator(self, estimator: Any) -> None:
        self.estimator = estimator
        self.compiled = compile_estimator(estimator)
        self.metadata.setdefault("model_kind", model_kind(estimator))

    def _check_features(self) -> None:
        if self.feature_names != FEATURE_NAMES:
            missing = sorted(set(FEATURE_NAMES) - set(self.feature_names))
            extra = sorted(set(self.feature_names) - set(FEATURE_NAMES))
            raise ModelError(
                "model features differ from fraudwatch.features.FEATURE_NAMES "
                f"(missing {missing}, unexpected {extra}, or another order): retrain with this library"
            )

    def _refresh_weights(self) -> None:
        self._weights = reason_weights(self.reference)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "feature_names": list(self.feature_names),
            "thresholds": {"review": self.thresholds.review, "decline": self.thresholds.decline},
            "reference": self.reference.to_dict(),
            "metadata": self.metadata,
        }

    def apply_metadata(self, data: Mapping[str, Any]) -> None:
        self.feature_names = tuple(data["feature_names"])
        self._check_features()
        t = data["thresholds"]
        self.thresholds = Thresholds(float(t["review"]), float(t["decline"]))
        self.reference = Reference.from_dict(data.get("reference", {}))
        self.metadata = dict(data.get("metadata", {}))
        self._refresh_weights()

    def save_artifacts(self, directory: Path) -> dict[str, str]:
        """Write the estimator (skops), the metadata (JSON) and, when the estimator compiles, the serving
        artifact (numpy arrays + JSON, read by :class:`fraudwatch.serving_model.CompiledFraudModel`), for
        ``mlflow.pyfunc.log_model(artifacts=)``."""
        import skops.io as sio

        if self.estimator is None:
            raise ModelError("no estimator to save")
        est_path = directory / "estimator.skops"
        meta_path = directory / _METADATA_FILE
        sio.dump(self.estimator, est_path)
        meta_path.write_text(json.dumps(self.to_metadata(), indent=1, default=str), encoding="utf-8")
        out = {_ESTIMATOR_ARTIFACT: str(est_path), _METADATA_ARTIFACT: str(meta_path)}
        if self.compiled is not None:
            out.update({name: str(path) for name, path in self.compiled.save(directory).items()})
        return out

    def __getstate__(self) -> dict[str, Any]:
        # The pickled python_model carries no estimator: that lives in the skops artifact (load_context).
        state = dict(self.__dict__)
        state["estimator"] = None
        state["compiled"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def load_context(self, context: Any) -> None:
        import skops.io as sio

        artifacts = context.artifacts
        try:
            meta = json.loads(Path(artifacts[_METADATA_ARTIFACT]).read_text(encoding="utf-8"))
            est_path = artifacts[_ESTIMATOR_ARTIFACT]
            untrusted = set(sio.get_untrusted_types(file=est_path)) - set(TRUSTED_TYPES)
            if untrusted:
                raise ModelError(f"estimator artifact contains untrusted types: {sorted(untrusted)}")
            estimator = sio.load(est_path, trusted=list(TRUSTED_TYPES))
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load the fraud model's artifacts: {exc}") from exc
        self.apply_metadata(meta)
        self.set_estimator(estimator)

    # -- scoring -----------------------------------------------------------------------------------------

    def matrix(self, frame: pd.DataFrame) -> FloatArray:
        """The feature matrix of a frame of enriched transactions (extra columns ignored)."""
        missing = [f for f in self.feature_names if f not in frame.columns]
        if missing:
            raise ModelError(f"input lacks feature columns: {missing}")
        return frame.loc[:, list(self.feature_names)].to_numpy(dtype=np.float64)

    def score_matrix(self, X: npt.ArrayLike) -> FloatArray:
        """Fraud probability (0..1) of each row of ``X`` (columns in ``feature_names`` order)."""
        m = np.asarray(X, dtype=np.float64)
        if m.ndim == 1:
            m = m.reshape(1, -1)
        if m.shape[1] != len(self.feature_names):
            raise ModelError(f"expected {len(self.feature_names)} feature columns, got {m.shape[1]}")
        if self.estimator is None:
            raise ModelError("the model has no estimator (was load_context called?)")
        if self.compiled is not None:
            return self.compiled.predict(m)
        proba: FloatArray = np.asarray(self.estimator.predict_proba(m)[:, 1], dtype=np.float64)
        return proba

    def decide(self, scores: npt.ArrayLike) -> list[str]:
        """approve / review / decline of each score."""
        return decide(self.thresholds, scores)

    def explain(self, x_row: Sequence[float], k: int = 3, country: str | None = None) -> list[str]:
        """The top-``k`` reasons for one feature vector, in an analyst's words, most telling first."""
        values = dict(zip(self.feature_names, (float(v) for v in x_row), strict=True))
        return explain_row(values, self.reference.quantiles, self._weights, k=k, country=country)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score, decide and explain each enriched transaction (a frame with the feature columns)."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(model_input)
        k = int((params or {}).get("reasons", 3))
        X = self.matrix(model_input)
        scores = self.score_matrix(X)
        countries: list[Any] = (
            model_input["country"].tolist() if "country" in model_input.columns else [None] * len(X)
        )
        reasons = [
            self.explain(row, k=k, country=c if isinstance(c, str) and c else None)
            for row, c in zip(X.tolist(), countries, strict=True)
        ]
        return pd.DataFrame(
            {"score": scores, "decision": self.decide(scores), "reasons": reasons},
            index=model_input.index,
        )


def model_signature() -> ModelSignature:
    """Inputs: the features (double) and an optional country; outputs: score, decision, reasons."""
    columns: list[ColSpec | TensorSpec] = [ColSpec("double", name) for name in FEATURE_NAMES]
    columns.append(ColSpec("string", "country", required=False))
    inputs = Schema(columns)
    outputs = Schema(
        [ColSpec("double", "score"), ColSpec("string", "decision"), ColSpec(Array("string"), "reasons")]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [
        f"mlflow=={version('mlflow')}",
        f"scikit-learn=={version('scikit-learn')}",
        f"skops=={version('skops')}",
        f"numpy=={version('numpy')}",
        f"pandas=={version('pandas')}",
        "fraudwatch",  # the workspace library (not on PyPI): install it from this repository
    ]


def log_model(
    model: FraudModel,
    *,
    name: str = "fraud-detector",
    input_example: pd.DataFrame | None = None,
    registered_model_name: str | None = "fraud-detector",
    client: MlflowClient | None = None,
) -> ModelVersion | None:
    """Log ``model`` to the active run (signature, input example, skops estimator, JSON metadata).

    Registers it as ``registered_model_name`` and returns the new version (None if not registered).
    """
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="fraud-model-") as tmp:
        artifacts = model.save_artifacts(Path(tmp))
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=model,
            artifacts=artifacts,
            signature=model_signature(),
            input_example=input_example,
            registered_model_name=registered_model_name,
            pip_requirements=_pip_requirements(),
            metadata={"fraudwatch": {k: v for k, v in model.metadata.items() if _is_scalar(v)}},
        )
    if registered_model_name is None or info.registered_model_version is None:
        return None
    c = client or MlflowClient()
    return c.get_model_version(registered_model_name, str(info.registered_model_version))


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def set_alias(client: MlflowClient, name: str, alias: str, version: str | int) -> None:
    client.set_registered_model_alias(name, alias, str(version))


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model loaded from the registry: the pyfunc, the FraudModel inside it and where it came from."""

    pyfunc: Any
    model: FraudModel
    uri: str
    name: str | None
    version: str | None
    run_id: str | None


def registered_reference(tracking_uri: str, name: str, version: str) -> Reference:
    """The training reference of a registered model version, read from its metadata file (no estimator load).

    Both the tracking and the registry URI are given explicitly: MLflow's registry default is a SQLite file
    in the working directory, which would not know the model (and would be created as a side effect).
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version_download_uri(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=tracking_uri
        )
        meta = next(Path(path).rglob(_METADATA_FILE), None)
        if meta is None:
            raise ModelError(f"models:/{name}/{version} has no {_METADATA_FILE}: not a fraudwatch FraudModel")
        data = json.loads(meta.read_text(encoding="utf-8"))
    return Reference.from_dict(data.get("reference", {}))


def load_model(uri: str, client: MlflowClient | None = None) -> LoadedModel:
    """Load ``models:/fraud-detector@production`` (or any model URI) for the API and the stream."""
    try:
        pyfunc = mlflow.pyfunc.load_model(uri)
        inner = pyfunc.unwrap_python_model()
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load model {uri!r}: {exc}") from exc
    if not isinstance(inner, FraudModel):
        raise ModelError(f"{uri!r} is not a fraudwatch FraudModel (got {type(inner).__name__})")
    name = version = None
    if uri.startswith("models:/"):
        from mlflow import MlflowClient

        ref = uri[len("models:/") :]
        c = client or MlflowClient()
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = resolve_alias(c, name, alias)
            version = mv.version if mv is not None else None
        elif "/" in ref:
            name, version = ref.split("/", 1)
    run_id = pyfunc.metadata.run_id if pyfunc.metadata is not None else None
    return LoadedModel(pyfunc, inner, uri, name, str(version) if version is not None else None, run_id)


@dataclass(frozen=True, slots=True)
class PromotionResult:
    """What the promotion gate decided, with both models' scores on the same validation data."""

    candidate_version: str
    previous_production: str | None
    production: str
    promoted: bool
    metric: str
    candidate_value: float
    production_value: float | None

    def summary(self) -> str:
        if self.previous_production is None:
            return f"v{self.candidate_version} is the first model: production ({self.metric} {self.candidate_value:.4f})"
        verdict = "promoted to production" if self.promoted else "kept as challenger"
        return (
            f"candidate v{self.candidate_version} {self.metric} {self.candidate_value:.4f} vs production "
            f"v{self.previous_production} {self.production_value:.4f}: {verdict}"
        )


def _metric(metric: str, y: FloatArray, scores: FloatArray) -> float:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if metric == "average_precision":
        return float(average_precision_score(y, scores))
    if metric == "roc_auc":
        return float(roc_auc_score(y, scores))
    raise ModelError(f"unknown promotion metric {metric!r} (average_precision, roc_auc)")


def promote_if_better(
    client: MlflowClient,
    name: str,
    candidate_version: str | int,
    validation_X: npt.ArrayLike,
    validation_y: npt.ArrayLike,
    metric: str = "average_precision",
    echo: Callable[[str], None] | None = print,
) -> PromotionResult:
    """Set ``challenger`` on the candidate; move ``production`` to it only if it beats production on the
    same validation data (strictly better). The first model becomes production."""
    cand = str(candidate_version)
    set_alias(client, name, CHALLENGER, cand)
    X = np.asarray(validation_X, dtype=np.float64)
    y = np.asarray(validation_y, dtype=np.float64)
    cand_model = load_model(f"models:/{name}/{cand}", client).model
    cand_value = _metric(metric, y, cand_model.score_matrix(X))
    current = resolve_alias(client, name, PRODUCTION)
    if current is None:
        set_alias(client, name, PRODUCTION, cand)
        result = PromotionResult(cand, None, cand, True, metric, cand_value, None)
    elif str(current.version) == cand:
        result = PromotionResult(cand, cand, cand, False, metric, cand_value, cand_value)
    else:
        prod_model = load_model(f"models:/{name}/{current.version}", client).model
        prod_value = _metric(metric, y, prod_model.score_matrix(X))
        better = cand_value > prod_value
        if better:
            set_alias(client, name, PRODUCTION, cand)
        result = PromotionResult(
            cand,
            str(current.version),
            cand if better else str(current.version),
            better,
            metric,
            cand_value,
            prod_value,
        )
    if echo is not None:
        echo(result.summary())
    return result
