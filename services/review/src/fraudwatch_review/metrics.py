"""Prometheus metrics of the review queue, named as docs/metrics.md fixes them.

The open-alert count and the confirmed precision are read from the queue's table at scrape time (a
collector), so they survive restarts and are right with several replicas reading one table; the counters
and the histogram count what this process did (Prometheus ``increase`` copes with restarts).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from fraudwatch_review.queue import OUTCOMES, ReviewQueue

__all__ = ["ReviewMetrics"]

#: alert to decision: minutes to a week (analysts work in shifts; older alerts are what the panel must show)
DELAY_BUCKETS = (60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400)


class _QueueCollector(Collector):
    """Gauges computed from the table when Prometheus scrapes."""

    def __init__(self, queue: ReviewQueue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        open_alerts = GaugeMetricFamily(
            "fraudwatch_review_open_alerts", "Alerts waiting for an analyst's decision."
        )
        open_alerts.add_metric([], self.queue.count_open())
        yield open_alerts
        precision = GaugeMetricFamily(
            "fraudwatch_review_confirmed_precision",
            "Share of a model version's decided alerts that analysts confirmed as fraud.",
            labels=["model_version"],
        )
        for version, share in sorted(self.queue.confirmed_precision().items()):
            precision.add_metric([version], share)
        yield precision


class ReviewMetrics:
    """Every metric the review queue exports, in one registry per app (tests build many apps)."""

    def __init__(self, queue: ReviewQueue, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "fraudwatch_review_decisions",
            "Analyst decisions by outcome (fraud, genuine) and the model version that raised the alert.",
            ["outcome", "model_version"],
            registry=r,
        )
        self.decision_delay = Histogram(
            "fraudwatch_review_decision_delay_seconds",
            "Time from the alert (scored_at) to the analyst's decision.",
            ["outcome"],
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.alerts_consumed = Counter(
            "fraudwatch_review_alerts_consumed",
            "Records read from fraud.alerts by result (queued, duplicate, invalid).",
            ["result"],
            registry=r,
        )
        self.label_publish_failures = Counter(
            "fraudwatch_review_label_publish_failures",
            "Decisions refused because the label could not be written to Kafka (the alert stayed open).",
            registry=r,
        )
        for outcome in OUTCOMES:
            self.decision_delay.labels(outcome=outcome)
        for result in ("queued", "duplicate", "invalid"):
            self.alerts_consumed.labels(result=result)
        r.register(_QueueCollector(queue))
