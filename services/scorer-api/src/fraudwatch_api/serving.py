"""The model being served, and the reloader that follows the registry aliases.

A :class:`ServingModel` is an immutable bundle (model, version, thresholds, feature index, drift reference).
The app holds exactly one reference to the current bundle in :class:`ModelHolder`; a reload builds a complete
new bundle off the request path and swaps it in with a single assignment, so a request that already grabbed
the old bundle finishes with it and no request ever sees a half-loaded model. The shadow model (the
``challenger`` alias, Settings.shadow_alias) is a second bundle held and swapped the same way.

A registered version is loaded from its serving artifact (:func:`fraudwatch.serving_model.load_registered`:
numpy arrays + JSON, downloaded through the tracking server) so that the worker never imports sklearn, scipy,
skops or mlflow.pyfunc (docs/api-performance.md: that is what keeps a worker under its memory floor).
Versions registered before the artifact existed load through mlflow.pyfunc, as before, and the log says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fraudwatch.config import Settings
from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.serving_model import Reference, load_registered, resolve_alias
from fraudwatch_api.metrics import ApiMetrics

__all__ = ["ModelHolder", "ModelReloader", "ServingModel", "load_serving_model"]

log = logging.getLogger("fraudwatch_api.model")


@dataclass(frozen=True, eq=False)
class ServingModel:
    """Everything a request needs from the model, fixed at load time."""

    name: str
    version: str
    alias: str | None
    uri: str
    # fraudwatch.serving_model.CompiledFraudModel, or fraudwatch.model.FraudModel for versions registered
    # without a serving artifact (both: score_matrix, decide, explain, feature_names, thresholds, reference)
    model: Any
    feature_names: tuple[str, ...]
    review_threshold: float
    decline_threshold: float
    # Columns of the API's FEATURE_NAMES row that the model takes, in the model's order (None: identical).
    columns: np.ndarray | None = None
    reference: Reference | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def thresholds(self) -> dict[str, float]:
        return {"review": self.review_threshold, "decline": self.decline_threshold}

    @property
    def info(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias}

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """Scores of rows in FEATURE_NAMES order (one vectorised call)."""
        x = matrix if self.columns is None else matrix[:, self.columns]
        return np.asarray(self.model.score_matrix(x), dtype=np.float64)

    def decide(self, scores: np.ndarray) -> list[str]:
        return list(self.model.decide(scores))

    def explain(self, row: np.ndarray, country: str | None, k: int = 3) -> list[str]:
        x = row if self.columns is None else row[self.columns]
        return list(self.model.explain(x.tolist(), k=k, country=country))


def _reference(model: Any) -> Reference | None:
    """The training reference the model carries (histograms of the score and key features), for drift."""
    ref = getattr(model, "reference", None)
    return ref if isinstance(ref, Reference) else None


def build_serving_model(model: Any, name: str, version: str, alias: str | None, uri: str) -> ServingModel:
    """Check a loaded FraudModel against the API's feature code and wrap it."""
    names = tuple(getattr(model, "feature_names", ()) or ())
    if not names:
        raise ModelError(f"model {uri} carries no feature_names")
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ModelError(f"model {uri} needs features this code does not compute: {unknown}")
    columns = None if names == FEATURE_NAMES else np.array([FEATURE_NAMES.index(n) for n in names])
    thresholds = getattr(model, "thresholds", None)
    try:
        review, decline = float(thresholds.review), float(thresholds.decline)  # type: ignore[union-attr]
    except (AttributeError, TypeError, ValueError) as exc:
        raise ModelError(f"model {uri} has no review/decline thresholds: {thresholds!r}") from exc
    return ServingModel(
        name=name,
        version=str(version),
        alias=alias,
        uri=uri,
        model=model,
        feature_names=names,
        review_threshold=review,
        decline_threshold=decline,
        columns=columns,
        reference=_reference(model),
    )


def _registry_client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def resolve_version(settings: Settings) -> str | None:
    """The registry version the settings' model URI points at now (None for a non-registry URI)."""
    uri = settings.resolved_model_uri
    if not uri.startswith("models:/"):
        return None
    ref = uri[len("models:/") :]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        found = resolve_alias(_registry_client(settings), name, alias)
        if found is None:
            raise ModelError(f"registered model {name!r} has no alias {alias!r}")
        return str(found.version)
    name, _, version = ref.partition("/")
    return version or None


def load_serving_model(settings: Settings, version: str | None = None) -> ServingModel:
    """Load the model the settings name (pinned to ``version`` when the alias was just resolved)."""
    uri = settings.resolved_model_uri
    alias = settings.model_alias if "@" in uri else None
    name = settings.model_name
    if version is None:
        version = resolve_version(settings)
    if uri.startswith("models:/") and version is not None:
        name = uri[len("models:/") :].split("@", 1)[0].split("/", 1)[0]
        load_uri = f"models:/{name}/{version}"
        try:
            compiled = load_registered(_registry_client(settings), name, version)
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load model {load_uri}: {exc}") from exc
        if compiled is not None:
            log.info("model loaded from its serving artifact", extra={"fields": {"uri": load_uri}})
            return build_serving_model(compiled, name, version, alias, load_uri)
        log.warning(
            "model has no serving artifact (registered before it existed): loading it through mlflow.pyfunc, "
            "which imports sklearn, scipy and skops into this worker (retrain to get the artifact)",
            extra={"fields": {"uri": load_uri}},
        )
    else:
        load_uri = uri
    return _load_pyfunc(settings, name, version, alias, load_uri)


def _load_pyfunc(
    settings: Settings, name: str, version: str | None, alias: str | None, load_uri: str
) -> ServingModel:
    """The old path: the whole pyfunc (skops estimator, hence sklearn and scipy) through mlflow.pyfunc."""
    import mlflow

    from fraudwatch.model import load_model

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    try:
        loaded = load_model(load_uri)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load model {load_uri}: {exc}") from exc
    model = _unwrap(loaded)
    return build_serving_model(model, name, version or "unknown", alias, load_uri)


def _unwrap(loaded: Any) -> Any:
    """The FraudModel out of whatever fraudwatch.model.load_model returns."""
    if hasattr(loaded, "score_matrix"):
        return loaded
    for attr in ("model", "fraud_model", "python_model"):
        inner = getattr(loaded, attr, None)
        if inner is not None and hasattr(inner, "score_matrix"):
            return inner
    if isinstance(loaded, tuple):
        for item in loaded:
            if hasattr(item, "score_matrix"):
                return item
    raise ModelError("load_model returned no object with score_matrix()")


class ModelHolder:
    """The one reference to the current ServingModel (None until a model loaded)."""

    def __init__(self) -> None:
        self.current: ServingModel | None = None
        self.last_error: str | None = None
        # The shadow model (Settings.shadow_alias): scored next to production, never acted on; None when the
        # alias does not exist.
        self.shadow: ServingModel | None = None
        self.shadow_error: str | None = None


class ModelReloader:
    """Polls the registry aliases (production, and the shadow alias) and swaps in a version when one moves.

    ``check_once()`` is the whole logic (tests call it directly); ``run()`` calls it every
    Settings.model_poll_seconds. A failed load keeps the old model, counts a reload failure and logs it; the
    same broken version is retried on the next poll (it may have been a transient artifact-store error).
    The shadow alias follows the same rules, except that when it cannot be resolved (removed, or the
    registry unreachable) shadow scoring stops until it resolves again: the shadow never affects production.
    """

    def __init__(
        self,
        settings: Settings,
        holder: ModelHolder,
        metrics: ApiMetrics,
        loader: Callable[[Settings, str | None], ServingModel] = load_serving_model,
        on_swap: Callable[[ServingModel], None] | None = None,
    ) -> None:
        self.settings = settings
        self.holder = holder
        self.metrics = metrics
        self.loader = loader
        self.on_swap = on_swap
        self._lock = asyncio.Lock()

    def _install(self, new: ServingModel) -> None:
        self.holder.current = new  # the atomic swap: one reference assignment
        self.holder.last_error = None
        self.metrics.set_model(new.name, new.version, new.alias or "")
        if self.on_swap is not None:
            self.on_swap(new)

    def load_initial(self) -> bool:
        """Load the model at startup; on failure the app starts unready and the poller keeps trying."""
        try:
            self._install(self.loader(self.settings, None))
        except Exception as exc:
            self.holder.last_error = str(exc)
            log.error(
                "model load failed at startup: %s",
                exc,
                extra={"fields": {"uri": self.settings.resolved_model_uri}},
            )
            return False
        log.info("model loaded", extra={"fields": self.holder.current.info if self.holder.current else {}})
        self.check_shadow()
        return True

    def check_sync(self) -> bool:
        """One registry check of both aliases (blocking); True when a new production model was swapped in."""
        swapped = self._check_production()
        self.check_shadow()
        return swapped

    def _shadow_settings(self) -> Settings | None:
        """The settings that name the shadow alias, or None when there is no shadow to follow."""
        alias = self.settings.shadow_alias
        if not alias or self.settings.model_uri is not None or alias == self.settings.model_alias:
            return None
        return self.settings.model_copy(update={"model_alias": alias})

    def check_shadow(self) -> bool:
        """One registry check of the shadow alias (blocking); True when the shadow bundle changed."""
        shadow_settings = self._shadow_settings()
        if shadow_settings is None:
            return False
        current = self.holder.shadow
        try:
            version = resolve_version(shadow_settings)
        except Exception as exc:
            if current is None:
                return False
            self.holder.shadow = None
            log.info(
                "shadow scoring stopped: %s", exc, extra={"fields": {"alias": shadow_settings.model_alias}}
            )
            return True
        if current is not None and version == current.version:
            return False
        try:
            new = self.loader(shadow_settings, version)
        except Exception as exc:
            self.metrics.shadow_failures.labels(stage="load").inc()
            self.holder.shadow_error = str(exc)
            log.error(
                "shadow model load failed, keeping the previous shadow: %s",
                exc,
                extra={"fields": {"version": version, "shadow": current.version if current else None}},
            )
            return False
        self.holder.shadow = new  # one reference assignment, like the production swap
        self.holder.shadow_error = None
        log.info(
            "shadow model swapped",
            extra={"fields": {"from": current.version if current else None, "to": new.version, **new.info}},
        )
        return True

    def _check_production(self) -> bool:
        current = self.holder.current
        try:
            version = resolve_version(self.settings)
        except Exception as exc:
            # The registry is unreachable: keep serving, say so in the log (not a reload failure).
            log.warning("model registry check failed: %s", exc)
            return False
        if current is not None and version is not None and version == current.version:
            return False
        try:
            new = self.loader(self.settings, version)
        except Exception as exc:
            self.metrics.reload_failures.inc()
            self.holder.last_error = str(exc)
            log.error(
                "model reload failed, keeping the current model: %s",
                exc,
                extra={"fields": {"version": version, "serving": current.version if current else None}},
            )
            return False
        self._install(new)
        if current is not None:
            self.metrics.reloads.inc()
        log.info(
            "model swapped",
            extra={"fields": {"from": current.version if current else None, "to": new.version}},
        )
        return True

    async def check_once(self) -> bool:
        """One registry check off the event loop; True when a new model was swapped in."""
        async with self._lock:
            return await asyncio.to_thread(self.check_sync)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.model_poll_seconds)
            try:
                await self.check_once()
            except Exception:  # never let the poller die
                log.exception("model poller iteration failed")
