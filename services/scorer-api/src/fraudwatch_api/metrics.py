"""Prometheus metrics of the scorer API, named exactly as docs/metrics.md fixes them.

Each app gets its own registry (tests build many apps in one process). Every uvicorn worker exports its own
numbers on /metrics; Prometheus sums them over the pods/workers it scrapes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from fraudwatch.metrics import SharedMetrics

__all__ = ["ApiMetrics"]

COMPONENT = "api"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)


class ApiMetrics:
    """Every metric the API exports, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "fraudwatch_api_requests",
            "Requests by route, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "fraudwatch_api_request_duration_seconds",
            "Request latency by route (server side, body to response).",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.score = Histogram(
            "fraudwatch_api_score", "Fraud scores returned.", buckets=SCORE_BUCKETS, registry=r
        )
        self.decisions = Counter(
            "fraudwatch_api_decisions", "Decisions by outcome.", ["decision"], registry=r
        )
        self.reloads = Counter(
            "fraudwatch_api_model_reloads", "Models loaded after the alias moved.", registry=r
        )
        self.reload_failures = Counter(
            "fraudwatch_api_model_reload_failures",
            "Model loads that failed (the old model kept serving).",
            registry=r,
        )
        self.state_age = Histogram(
            "fraudwatch_api_state_age_seconds",
            "Age of the entity state read from the online store.",
            ["entity"],
            buckets=AGE_BUCKETS,
            registry=r,
        )
        # Shadow scoring (the challenger alias): what it would have decided, and where it differs.
        self.shadow_decisions = Counter(
            "fraudwatch_api_shadow_decisions",
            "Shadow (challenger) decisions by outcome; never acted on.",
            ["decision"],
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "fraudwatch_api_shadow_disagreements",
            "Requests where the shadow decision differs from production's, by both decisions.",
            ["production", "challenger"],
            registry=r,
        )
        self.shadow_failures = Counter(
            "fraudwatch_api_shadow_failures",
            "Shadow model loads or scorings that failed (the request was answered by production).",
            ["stage"],
            registry=r,
        )
        # as-of safety (fraudwatch_api.asof): scored against a state that already holds later events
        self.state_newer = Counter(
            "fraudwatch_api_state_newer_than_event",
            "Transactions scored against a card or terminal state newer than their event time.",
            ["entity"],
            registry=r,
        )
        self.newer_card = self.state_newer.labels(entity="card")
        self.newer_terminal = self.state_newer.labels(entity="terminal")
        # store, model and drift families: shared with the stream job (fraudwatch.metrics)
        self.shared = SharedMetrics(r, COMPONENT, store_ops=("get", "get_many"))
        self.observe_store = self.shared.observe_store
        self.set_model = self.shared.set_model
        self.set_psi = self.shared.set_psi
        # Pre-create the children the hot path uses (no label lookup per request).
        self._route_hist: dict[str, Histogram] = {}
        self.decision_counters = {
            d: self.decisions.labels(decision=d) for d in ("approve", "review", "decline")
        }
        self.shadow_decision_counters = {
            d: self.shadow_decisions.labels(decision=d) for d in ("approve", "review", "decline")
        }
        self.age_card = self.state_age.labels(entity="card")
        self.age_terminal = self.state_age.labels(entity="terminal")

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        hist = self._route_hist.get(route)
        if hist is None:
            hist = self._route_hist[route] = self.request_duration.labels(route=route)  # type: ignore[assignment]
        hist.observe(seconds)
        self.requests.labels(route=route, method=method, status=str(status)).inc()
