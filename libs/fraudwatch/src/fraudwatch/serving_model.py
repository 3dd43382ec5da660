"""The serving form of a fraud model: plain numpy arrays + JSON, scored without sklearn, scipy or skops.

Why this module exists: loading the skops estimator imports the whole of scikit-learn and scipy (≈ 100 MiB
per API worker, docs/api-performance.md), yet scoring needs none of it: a logistic regression is a dot
product and gradient-boosted trees are flat node arrays. Training writes the compiled form next to the skops
file (:data:`SERVING_ARRAYS` + :data:`SERVING_SPEC`, see :meth:`CompiledModel.save`), and the API loads it
with numpy alone (:class:`CompiledFraudModel`). The training-side :class:`fraudwatch.model.FraudModel`
scores through the very same :class:`CompiledModel`, so the API, the stream and training share one scorer.

This module imports numpy, numba and the feature/reason code only: never sklearn, scipy, skops or
``mlflow.pyfunc`` (a test checks it in a fresh interpreter). The types it defines that the rest of the
library used to find in :mod:`fraudwatch.model` (:class:`Thresholds`, :class:`Reference`, ...) are
re-exported there.

The tree walk is one numba kernel (``cache=True``: loaded from the on-disk cache, compiled by the Docker
build's :func:`warm_up`), one pass over every tree of every boosted member per row. It adds the trees' leaf
values in tree order onto the member's baseline, the same order scikit-learn uses, so the raw scores are the
same floating-point sums. It was measured against the previous numpy walk (all trees at once, one fancy-index
step per depth level): docs/api-performance.md.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from numba import njit

from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.reasons import REASON_RULES, explain_row

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

__all__ = [
    "DECISIONS",
    "METADATA_FILE",
    "SERVING_ARRAYS",
    "SERVING_FORMAT",
    "SERVING_SPEC",
    "CompiledFraudModel",
    "CompiledModel",
    "Histogram",
    "Linear",
    "Reference",
    "Thresholds",
    "TreeEnsemble",
    "decide",
    "load_registered",
    "population_stability_index",
    "reason_weights",
    "resolve_alias",
    "warm_up",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
DECISIONS: tuple[str, str, str] = ("approve", "review", "decline")
HISTOGRAM_BINS = 10
#: the serving artifact's files (next to the skops estimator in the model's ``artifacts/``)
SERVING_ARRAYS = "serving.npz"
SERVING_SPEC = "serving.json"
#: the metadata JSON every FraudModel carries (feature names, thresholds, training reference, provenance)
METADATA_FILE = "fraud_model.json"
SERVING_FORMAT = "fraudwatch-serving/1"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Decision thresholds on the score: ``review <= score < decline`` is review, above is decline."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.review < self.decline <= 1.0):
            raise ModelError(f"thresholds need 0 <= review < decline <= 1, got {self.review}, {self.decline}")


@dataclass(slots=True)
class Histogram:
    """A reference distribution: bin edges (``len(shares) + 1``; outer edges are -inf / +inf) and shares."""

    edges: list[float]
    shares: list[float]

    @classmethod
    def of(cls, values: npt.ArrayLike, bins: int = HISTOGRAM_BINS) -> Histogram:
        v = np.asarray(values, dtype=np.float64)
        inner = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])) if v.size else np.empty(0)
        edges = [-math.inf, *inner.tolist(), math.inf]
        return cls(edges=edges, shares=_shares(v, edges))


def _shares(values: FloatArray, edges: Sequence[float]) -> list[float]:
    counts, _ = np.histogram(values, bins=np.asarray(edges))
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * (len(edges) - 1)


def population_stability_index(reference: Histogram, values: npt.ArrayLike, floor: float = 1e-4) -> float:
    """PSI of ``values`` against the reference histogram (0.1: watch, 0.25: drifted)."""
    actual = np.maximum(np.asarray(_shares(np.asarray(values, dtype=np.float64), reference.edges)), floor)
    expected = np.maximum(np.asarray(reference.shares), floor)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass(slots=True)
class Reference:
    """What the training data looked like: per-feature quantiles and means, importances, histograms."""

    quantiles: dict[str, list[float]] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    importances: dict[str, float] = field(default_factory=dict)
    score_histogram: Histogram | None = None
    feature_histograms: dict[str, Histogram] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reference:
        score = data.get("score_histogram")
        return cls(
            quantiles={k: [float(x) for x in v] for k, v in data.get("quantiles", {}).items()},
            means={k: float(v) for k, v in data.get("means", {}).items()},
            importances={k: float(v) for k, v in data.get("importances", {}).items()},
            score_histogram=Histogram(**score) if score else None,
            feature_histograms={k: Histogram(**v) for k, v in data.get("feature_histograms", {}).items()},
        )


def decide(thresholds: Thresholds, scores: npt.ArrayLike) -> list[str]:
    """approve / review / decline of each score."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    idx = (s >= thresholds.review).astype(np.int64) + (s >= thresholds.decline).astype(np.int64)
    return [DECISIONS[i] for i in idx.tolist()]


def reason_weights(reference: Reference) -> dict[str, float]:
    """How much each reason rule counts when ranking reasons: its feature's importance, scaled to (0.1, 1.1]."""
    imp = {k: max(v, 0.0) for k, v in reference.importances.items()}
    top = max(imp.values(), default=0.0)
    # Importance decides the order between reasons; a small floor keeps rare-but-unimportant ones rankable.
    return {r.feature: 0.1 + (imp.get(r.feature, 0.0) / top if top > 0 else 1.0) for r in REASON_RULES}


def sigmoid(raw: FloatArray) -> FloatArray:
    """scipy's ``expit`` semantics without the import: stable for large ``|raw|``."""
    out: FloatArray = np.exp(-np.logaddexp(0.0, -raw))
    return out


@njit(cache=True, nogil=True)
def _tree_raw(
    X: FloatArray,
    roots: IntArray,
    member: IntArray,
    baseline: FloatArray,
    feature: IntArray,
    threshold: FloatArray,
    missing_left: BoolArray,
    is_leaf: BoolArray,
    left: IntArray,
    right: IntArray,
    value: FloatArray,
    out: FloatArray,
) -> None:  # pragma: no cover - compiled; covered through TreeEnsemble.raw
    """Raw scores (rows x members): each member's baseline plus its trees' leaf values, in tree order."""
    n_members = baseline.shape[0]
    for i in range(X.shape[0]):
        for m in range(n_members):
            out[i, m] = baseline[m]
        for t in range(roots.shape[0]):
            node = roots[t]
            while not is_leaf[node]:
                x = X[i, feature[node]]
                go_left = missing_left[node] if math.isnan(x) else x <= threshold[node]
                node = left[node] if go_left else right[node]
            out[i, member[t]] += value[node]


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """The trees of every boosted member as flat node arrays (child indices absolute in these arrays)."""

    roots: IntArray  # first node of each tree
    member: IntArray  # which boosted member each tree belongs to (0 .. len(baseline) - 1)
    baseline: FloatArray  # each member's baseline raw prediction
    feature: IntArray
    threshold: FloatArray
    missing_left: BoolArray
    is_leaf: BoolArray
    left: IntArray
    right: IntArray
    value: FloatArray

    FIELDS = (
        "roots",
        "member",
        "baseline",
        "feature",
        "threshold",
        "missing_left",
        "is_leaf",
        "left",
        "right",
        "value",
    )

    def __post_init__(self) -> None:
        n = len(self.feature)
        sizes = {
            len(getattr(self, f)) for f in ("threshold", "missing_left", "is_leaf", "left", "right", "value")
        }
        if sizes != {n} or len(self.roots) != len(self.member):
            raise ModelError("tree arrays of different lengths: corrupt serving artifact")
        if n and (
            self.left.min() < 0
            or self.right.min() < 0
            or max(self.left.max(), self.right.max(), self.roots.max()) >= n
            or self.member.min() < 0
            or self.member.max() >= len(self.baseline)
        ):
            raise ModelError("tree node or member index out of range: corrupt serving artifact")

    @classmethod
    def from_nodes(cls, trees: Sequence[Sequence[Any]], baselines: Sequence[float]) -> TreeEnsemble:
        """From each member's list of node record arrays (sklearn's ``TreePredictor.nodes``) and baseline."""
        nodes: list[Any] = []
        member: list[int] = []
        for m, member_trees in enumerate(trees):
            nodes.extend(member_trees)
            member.extend([m] * len(member_trees))
        if not nodes:
            raise ModelError("a tree ensemble needs at least one tree")
        sizes = np.array([len(n) for n in nodes], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        allnodes = np.concatenate(nodes)
        if np.any(allnodes["is_categorical"]):
            raise ModelError("categorical splits are not supported by the compiled scorer")
        tree_of = np.repeat(offsets, sizes)
        is_leaf = allnodes["is_leaf"].astype(bool)
        own = np.arange(len(allnodes), dtype=np.int64)
        return cls(
            roots=offsets,
            member=np.asarray(member, dtype=np.int64),
            baseline=np.asarray(baselines, dtype=np.float64),
            feature=allnodes["feature_idx"].astype(np.int64),
            threshold=allnodes["num_threshold"].astype(np.float64),
            missing_left=allnodes["missing_go_to_left"].astype(bool),
            is_leaf=is_leaf,
            left=np.where(is_leaf, own, allnodes["left"].astype(np.int64) + tree_of),
            right=np.where(is_leaf, own, allnodes["right"].astype(np.int64) + tree_of),
            value=allnodes["value"].astype(np.float64),
        )

    def raw(self, X: FloatArray) -> FloatArray:
        """Raw (log-odds) scores, rows x members."""
        out = np.empty((len(X), len(self.baseline)), dtype=np.float64)
        _tree_raw(
            np.ascontiguousarray(X, dtype=np.float64),
            self.roots,
            self.member,
            self.baseline,
            self.feature,
            self.threshold,
            self.missing_left,
            self.is_leaf,
            self.left,
            self.right,
            self.value,
            out,
        )
        return out


@dataclass(frozen=True, eq=False)
class Linear:
    """A StandardScaler + LogisticRegression pipeline as numpy: the same arithmetic, no sklearn overhead."""

    mean: FloatArray | None
    scale: FloatArray | None
    coef: FloatArray
    intercept: float

    def raw(self, X: FloatArray) -> FloatArray:
        z = X
        if self.mean is not None:
            z = z - self.mean
        if self.scale is not None:
            z = z / self.scale
        out: FloatArray = z @ self.coef + self.intercept
        return out


@dataclass(frozen=True, eq=False)
class CompiledModel:
    """A fraud probability as a weighted average of members, each a linear model or a boosted member.

    ``members[i]`` is ``("linear", j)`` (``linears[j]``) or ``("trees", m)`` (column ``m`` of
    ``trees.raw``). A single model is a blend of one member with weight 1. The average is computed the
    way :class:`fraudwatch.model.ProbabilityBlend` computes it (accumulate ``w * p`` in member order, then
    divide by the weight sum), so the two agree to rounding.
    """

    members: tuple[tuple[str, int], ...]
    weights: tuple[float, ...]
    linears: tuple[Linear, ...] = ()
    trees: TreeEnsemble | None = None
    n_features: int = len(FEATURE_NAMES)

    def __post_init__(self) -> None:
        if not self.members or len(self.members) != len(self.weights):
            raise ModelError("a compiled model needs one weight per member, and at least one member")
        n_trees = len(self.trees.baseline) if self.trees is not None else 0
        for kind, j in self.members:
            if not (
                (kind == "linear" and 0 <= j < len(self.linears)) or (kind == "trees" and 0 <= j < n_trees)
            ):
                raise ModelError(f"compiled model member ({kind!r}, {j}) refers to nothing")

    def predict(self, X: npt.ArrayLike) -> FloatArray:
        """Fraud probability of each row (columns in the model's feature order)."""
        m = np.asarray(X, dtype=np.float64)
        if m.ndim == 1:
            m = m.reshape(1, -1)
        if m.shape[1] != self.n_features:
            raise ModelError(f"expected {self.n_features} feature columns, got {m.shape[1]}")
        tree_proba = sigmoid(self.trees.raw(m)) if self.trees is not None else None
        if len(self.members) == 1:
            kind, j = self.members[0]
            if kind == "trees" and tree_proba is not None:
                single: FloatArray = tree_proba[:, j].copy()
                return single
            return sigmoid(self.linears[j].raw(m))
        p = np.zeros(len(m))
        for (kind, j), weight in zip(self.members, self.weights, strict=True):
            if kind == "trees" and tree_proba is not None:
                p += weight * tree_proba[:, j]
            else:
                p += weight * sigmoid(self.linears[j].raw(m))
        p /= sum(self.weights)
        return p

    # -- the serving artifact ------------------------------------------------------------------------------

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays (for ``np.savez``) and the JSON spec that :meth:`from_arrays` reads back."""
        arrays: dict[str, np.ndarray] = {}
        linears = []
        for j, lin in enumerate(self.linears):
            arrays[f"linear{j}_coef"] = lin.coef
            if lin.mean is not None:
                arrays[f"linear{j}_mean"] = lin.mean
            if lin.scale is not None:
                arrays[f"linear{j}_scale"] = lin.scale
            linears.append({"intercept": lin.intercept})
        if self.trees is not None:
            for name in TreeEnsemble.FIELDS:
                arrays[f"trees_{name}"] = getattr(self.trees, name)
        spec = {
            "format": SERVING_FORMAT,
            "n_features": self.n_features,
            "members": [{"kind": kind, "index": j} for kind, j in self.members],
            "weights": list(self.weights),
            "linears": linears,
            "trees": self.trees is not None,
        }
        return arrays, spec

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> CompiledModel:
        if spec.get("format") != SERVING_FORMAT:
            raise ModelError(
                f"serving artifact format {spec.get('format')!r}, this code reads {SERVING_FORMAT!r}"
            )
        try:
            linears = tuple(
                Linear(
                    mean=_opt(arrays, f"linear{j}_mean"),
                    scale=_opt(arrays, f"linear{j}_scale"),
                    coef=np.asarray(arrays[f"linear{j}_coef"], dtype=np.float64),
                    intercept=float(item["intercept"]),
                )
                for j, item in enumerate(spec["linears"])
            )
            trees = None
            if spec["trees"]:
                trees = TreeEnsemble(
                    **{name: np.asarray(arrays[f"trees_{name}"]) for name in TreeEnsemble.FIELDS}
                )
            members = tuple((str(m["kind"]), int(m["index"])) for m in spec["members"])
            weights = tuple(float(w) for w in spec["weights"])
            n_features = int(spec["n_features"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"serving artifact incomplete: {exc!r}") from exc
        return cls(members, weights, linears, trees, n_features)

    def save(self, directory: Path) -> dict[str, Path]:
        """Write :data:`SERVING_ARRAYS` and :data:`SERVING_SPEC` into ``directory``; their paths by name."""
        arrays, spec = self.to_arrays()
        npz, js = directory / SERVING_ARRAYS, directory / SERVING_SPEC
        with npz.open("wb") as fh:  # a file object: np.savez would otherwise append ".npz" to the name
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # (numpy stubs type **kwds as its flags)
        js.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        return {SERVING_ARRAYS: npz, SERVING_SPEC: js}

    @classmethod
    def load(cls, directory: Path) -> CompiledModel:
        spec = json.loads((directory / SERVING_SPEC).read_text(encoding="utf-8"))
        # allow_pickle=False: the arrays are plain numbers, and nothing in an artifact may execute code
        with np.load(directory / SERVING_ARRAYS, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        return cls.from_arrays(arrays, spec)


def _opt(arrays: Mapping[str, np.ndarray], key: str) -> FloatArray | None:
    return np.asarray(arrays[key], dtype=np.float64) if key in arrays else None


class CompiledFraudModel:
    """What the API serves: the compiled scorer with the model's features, thresholds and reference.

    The same scoring surface as :class:`fraudwatch.model.FraudModel` (``score_matrix``, ``decide``,
    ``explain``, ``feature_names``, ``thresholds``, ``reference``, ``metadata``), loaded from the serving
    artifact and the metadata JSON without sklearn, scipy, skops or mlflow.pyfunc.
    """

    def __init__(self, compiled: CompiledModel, metadata: Mapping[str, Any]) -> None:
        self.compiled = compiled
        self.feature_names: tuple[str, ...] = tuple(metadata["feature_names"])
        if len(self.feature_names) != compiled.n_features:
            raise ModelError(
                f"serving artifact has {compiled.n_features} features, metadata names {len(self.feature_names)}"
            )
        t = metadata["thresholds"]
        self.thresholds = Thresholds(float(t["review"]), float(t["decline"]))
        self.reference = Reference.from_dict(metadata.get("reference", {}))
        self.metadata: dict[str, Any] = dict(metadata.get("metadata", {}))
        self._weights = reason_weights(self.reference)

    @classmethod
    def load(cls, directory: Path) -> CompiledFraudModel:
        """From a directory holding :data:`SERVING_ARRAYS`, :data:`SERVING_SPEC` and :data:`METADATA_FILE`."""
        try:
            meta = json.loads((directory / METADATA_FILE).read_text(encoding="utf-8"))
            return cls(CompiledModel.load(directory), meta)
        except ModelError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"cannot load the serving artifact in {directory.name}: {exc!r}") from exc

    def score_matrix(self, X: npt.ArrayLike) -> FloatArray:
        """Fraud probability (0..1) of each row of ``X`` (columns in ``feature_names`` order)."""
        return self.compiled.predict(X)

    def decide(self, scores: npt.ArrayLike) -> list[str]:
        return decide(self.thresholds, scores)

    def explain(self, x_row: Sequence[float], k: int = 3, country: str | None = None) -> list[str]:
        """The top-``k`` reasons for one feature vector, in an analyst's words, most telling first."""
        values = dict(zip(self.feature_names, (float(v) for v in x_row), strict=True))
        return explain_row(values, self.reference.quantiles, self._weights, k=k, country=country)


def resolve_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version an alias points at, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def load_registered(client: MlflowClient, name: str, version: str) -> CompiledFraudModel | None:
    """The serving artifact of ``models:/name/version``, downloaded through the client's tracking server.

    Only the three small files are downloaded (not the skops estimator). None when the version carries no
    serving artifact (registered before it existed): the caller loads it the old way, through mlflow.pyfunc.
    Needs only MLflow's client (``mlflow.artifacts``), never ``mlflow.pyfunc``.
    """
    import mlflow.artifacts

    tracking_uri = client.tracking_uri
    base = client.get_model_version_download_uri(name, version).rstrip("/") + "/artifacts"
    try:
        listed = mlflow.artifacts.list_artifacts(artifact_uri=base, tracking_uri=tracking_uri)
    except Exception as exc:  # the artifact store's own errors: say which model could not be read
        raise ModelError(f"cannot list the artifacts of models:/{name}/{version}: {exc}") from exc
    present = {Path(f.path).name for f in listed}
    needed = (SERVING_ARRAYS, SERVING_SPEC, METADATA_FILE)
    if not set(needed) <= present:
        return None
    with tempfile.TemporaryDirectory(prefix="fraudwatch-serving-") as tmp:
        for file in needed:
            try:
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{base}/{file}", dst_path=tmp, tracking_uri=tracking_uri
                )
            except Exception as exc:
                raise ModelError(f"cannot download {file} of models:/{name}/{version}: {exc}") from exc
        return CompiledFraudModel.load(Path(tmp))


def warm_up() -> None:
    """Load (or, without a cache, compile) the tree kernel, so that no request compiles it.

    Called at API start-up and by the Docker build, which fills the numba cache as it does for the feature
    kernels (:func:`fraudwatch.features.warm_up`).
    """
    one = np.zeros(1, dtype=np.int64)
    leaf = np.ones(1, dtype=bool)
    TreeEnsemble(
        roots=one,
        member=one,
        baseline=np.zeros(1),
        feature=one,
        threshold=np.zeros(1),
        missing_left=leaf,
        is_leaf=leaf,
        left=one,
        right=one,
        value=np.zeros(1),
    ).raw(np.zeros((1, 1)))
