"""The producer's Prometheus metrics (names as in docs/metrics.md), on their own registry."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


@dataclass
class ProducerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sent = Counter(
            "fraudwatch_producer_sent", "Records acknowledged by Kafka.", ["topic"], registry=r
        )
        self.errors = Counter(
            "fraudwatch_producer_errors", "Records Kafka did not accept.", ["topic"], registry=r
        )
        self.achieved_rate = Gauge(
            "fraudwatch_producer_achieved_rate", "Transactions per second over the last seconds.", registry=r
        )
        self.target_rate = Gauge(
            "fraudwatch_producer_target_rate", "Target transactions per second.", registry=r
        )
        self.lag_seconds = Gauge(
            "fraudwatch_producer_lag_seconds",
            "How far the producer is behind its target schedule.",
            registry=r,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (0 disables it)."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
