"""The metric families more than one component exports (docs/metrics.md), defined once.

The scorer API and the stream job both read or write the online store, serve a model and watch drift, so
both export ``fraudwatch_store_*``, ``fraudwatch_model_info`` and the PSI gauges, told apart by the
``component`` label (or, for the store, by ``op``). Declaring them here gives them one help text and one
set of buckets wherever they are scraped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["STORE_BUCKETS", "SharedMetrics"]

STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


class SharedMetrics:
    """Store, model and drift metrics of one ``component`` ("api", "stream"), in the caller's registry."""

    def __init__(self, registry: CollectorRegistry, component: str, store_ops: Iterable[str]) -> None:
        self.component = component
        r = registry
        self.store_duration = Histogram(
            "fraudwatch_store_duration_seconds",
            "Online store operation latency.",
            ["backend", "op"],
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "fraudwatch_store_errors", "Online store operations that failed.", ["backend", "op"], registry=r
        )
        self.model_info = Gauge(
            "fraudwatch_model_info",
            "The model in use (=1).",
            ["component", "name", "version", "alias"],
            registry=r,
        )
        self.feature_psi = Gauge(
            "fraudwatch_feature_psi",
            "Population stability index of a feature: live window vs the training reference.",
            ["component", "feature"],
            registry=r,
        )
        self.score_psi = Gauge(
            "fraudwatch_score_psi", "PSI of live scores vs the training reference.", ["component"], registry=r
        )
        for backend in ("sqlite", "redis"):  # zero series, so dashboards show "no errors", not "no data"
            for op in store_ops:
                self.store_errors.labels(backend=backend, op=op)
        self._model: tuple[str, str, str] | None = None

    def observe_store(self, backend: str, op: str, seconds: float, failed: bool) -> None:
        """The online store's ``observer`` callback."""
        self.store_duration.labels(backend=backend, op=op).observe(seconds)
        if failed:
            self.store_errors.labels(backend=backend, op=op).inc()

    def set_model(self, name: str, version: str, alias: str) -> None:
        """Mark (name, version, alias) as the model in use; the previous one's series goes away."""
        key = (name, version, alias)
        if key == self._model:
            return
        if self._model is not None:
            with contextlib.suppress(KeyError):
                self.model_info.remove(self.component, *self._model)
        self.model_info.labels(component=self.component, name=name, version=version, alias=alias).set(1)
        self._model = key

    def set_psi(self, score_psi: float | None, features: Mapping[str, float]) -> None:
        if score_psi is not None:
            self.score_psi.labels(component=self.component).set(score_psi)
        for feature, value in features.items():
            self.feature_psi.labels(component=self.component, feature=feature).set(value)
