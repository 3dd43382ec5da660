"""Prometheus metrics of the stream job (names: docs/metrics.md), served by the driver on :9108.

Query-level numbers (rates, batch duration, state rows, Kafka lag) come from a StreamingQueryListener;
per-row numbers (outputs, dead letters, decisions, produce-to-scored latency) from the foreachBatch sink.

Kafka lag is also refreshed between batches by :class:`LagPoller` (the brokers' latest offsets against the
offsets the last completed batch reached), so that a query that has failed or stopped making progress shows
its lag growing instead of a frozen gauge: that is what the stuck-query alert (FraudwatchStreamQueryStuck)
watches, with ``fraudwatch_stream_query_active`` and ``fraudwatch_stream_last_progress_timestamp_seconds``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from fraudwatch.metrics import SharedMetrics

__all__ = ["LagPoller", "StreamMetrics", "checkpoint_offsets", "kafka_lag"]

log = logging.getLogger("fraudwatch_stream.metrics")

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)


class StreamMetrics:
    """Every metric the stream exports, in its own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.input_rps = Gauge(
            "fraudwatch_stream_input_rows_per_second", "Input rows/s (last batch)", registry=r
        )
        self.processed_rps = Gauge(
            "fraudwatch_stream_processed_rows_per_second", "Processed rows/s (last batch)", registry=r
        )
        self.batch_duration = Histogram(
            "fraudwatch_stream_batch_duration_seconds",
            "Micro-batch duration",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.produce_to_scored = Histogram(
            "fraudwatch_stream_produce_to_scored_seconds",
            "Kafka timestamp of the input transaction to its scored record written (wall clock)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter("fraudwatch_stream_rows", "Rows written by output", ["output"], registry=r)
        self.dead_letters = Counter(
            "fraudwatch_stream_dead_letters", "Records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.decisions = Counter("fraudwatch_stream_decisions", "Decisions", ["decision"], registry=r)
        self.shadow_decisions = Counter(
            "fraudwatch_stream_shadow_decisions",
            "Decisions of the challenger (shadow) model, recorded next to production's and never acted on",
            ["decision"],
            registry=r,
        )
        self.shadow_disagreements = Counter(
            "fraudwatch_stream_shadow_disagreements",
            "Shadow-scored transactions where the challenger decided otherwise than production",
            ["production", "challenger"],
            registry=r,
        )
        self.state_rows = Gauge(
            "fraudwatch_stream_state_rows",
            "Entities (cards or terminals) held in Spark state, per stateful operator",
            ["operator"],
            registry=r,
        )
        self.kafka_lag = Gauge(
            "fraudwatch_stream_kafka_lag", "Records behind the latest offset", ["topic"], registry=r
        )
        self.last_batch = Gauge(
            "fraudwatch_stream_last_batch_timestamp_seconds",
            "Unix time of the last completed batch",
            registry=r,
        )
        self.last_progress = Gauge(
            "fraudwatch_stream_last_progress_timestamp_seconds",
            "Unix time of the last completed batch that read input rows (job start until the first one)",
            registry=r,
        )
        self.last_progress.set(time.time())
        self.query_active = Gauge(
            "fraudwatch_stream_query_active",
            "1 while the streaming query runs, 0 once it has terminated (failed or stopped)",
            registry=r,
        )
        #: the offsets the last completed batch reached, per topic and partition (LagPoller reads them)
        self.end_offsets: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        # store, model and drift families: shared with the scorer API (fraudwatch.metrics)
        self.shared = SharedMetrics(r, "stream", store_ops=("put",))
        self.observe_store = self.shared.observe_store
        self.set_model = self.shared.set_model
        self.set_psi = self.shared.set_psi
        self._entities: dict[tuple[str, int], int] = {}
        for output in ("scored", "alerts", "dlq"):
            self.rows.labels(output=output)
        for decision in ("approve", "review", "decline"):
            self.decisions.labels(decision=decision)
            self.shadow_decisions.labels(decision=decision)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def count_shadow(self, production: list[Any], challenger: list[Any]) -> None:
        """Count the challenger's decisions and its disagreements with production (rows without a shadow
        decision, null or NaN, are not counted)."""
        for prod, chal in zip(production, challenger, strict=True):
            if not isinstance(chal, str):
                continue
            self.shadow_decisions.labels(decision=chal).inc()
            if chal != prod:
                self.shadow_disagreements.labels(production=str(prod), challenger=chal).inc()

    def set_entities(self, operator: str, bucket: int, entities: int) -> None:
        """A state group reported how many entities its bucket holds (sent with its state row)."""
        self._entities[(operator, bucket)] = entities
        self.state_rows.labels(operator=operator).set(
            sum(n for (op, _), n in self._entities.items() if op == operator)
        )

    def on_progress(self, progress: Any, operator_names: tuple[str, ...]) -> dict[str, Any]:
        """Update the query-level metrics from a StreamingQueryProgress; returns its JSON log fields."""
        self.input_rps.set(progress.inputRowsPerSecond or 0.0)
        self.processed_rps.set(progress.processedRowsPerSecond or 0.0)
        duration_ms = (progress.durationMs or {}).get("triggerExecution", progress.batchDuration or 0)
        self.batch_duration.observe(duration_ms / 1000.0)
        lag: dict[str, int] = {}
        for source in progress.sources or []:
            lag.update(kafka_lag(source.endOffset, source.latestOffset))
            self.set_end_offsets(_offsets(source.endOffset))
        for topic, behind in lag.items():
            self.kafka_lag.labels(topic=topic).set(behind)
        self.last_batch.set(time.time())
        if progress.numInputRows:
            self.last_progress.set(time.time())
        return {
            "batch_id": progress.batchId,
            "input_rows": progress.numInputRows,
            "input_rows_per_second": round(progress.inputRowsPerSecond or 0.0, 1),
            "processed_rows_per_second": round(progress.processedRowsPerSecond or 0.0, 1),
            "duration_ms": progress.durationMs,
            "state_store_rows": {
                (operator_names[i] if i < len(operator_names) else f"op{i}"): op.numRowsTotal
                for i, op in enumerate(progress.stateOperators or [])
            },
            "kafka_lag": lag,
        }

    def set_end_offsets(self, offsets: dict[str, dict[str, int]]) -> None:
        """Offsets a completed batch reached (from its progress, or the checkpoint at start-up)."""
        with self._lock:
            for topic, parts in offsets.items():
                self.end_offsets.setdefault(topic, {}).update({str(p): int(o) for p, o in parts.items()})

    def refresh_lag(self, latest: dict[str, dict[str, int]]) -> dict[str, int]:
        """Set the lag gauge from the brokers' latest offsets against the last completed batch."""
        with self._lock:
            done = {topic: dict(parts) for topic, parts in self.end_offsets.items()}
        lag = kafka_lag(done, {topic: parts for topic, parts in latest.items() if topic in done})
        for topic, behind in lag.items():
            self.kafka_lag.labels(topic=topic).set(behind)
        return lag


def checkpoint_offsets(checkpoint: Path) -> dict[str, dict[str, int]]:
    """The Kafka offsets of the last committed batch in a Structured Streaming checkpoint ({} if none).

    ``commits/<n>`` marks batch n committed; ``offsets/<n>`` holds, after a version line and a metadata
    line, one JSON line per source: ``{"topic": {"partition": offset}}`` (the batch's end offsets).
    """
    out: dict[str, dict[str, int]] = {}
    try:
        committed = max(
            (int(p.name) for p in (checkpoint / "commits").iterdir() if p.name.isdigit()), default=-1
        )
        if committed < 0:
            return {}
        lines = (checkpoint / "offsets" / str(committed)).read_text().splitlines()
        for line in lines[2:]:
            for topic, parts in _offsets(line).items():
                if isinstance(parts, dict):
                    out[topic] = {str(p): int(o) for p, o in parts.items()}
    except (OSError, ValueError, TypeError):  # no checkpoint yet, or one this code cannot read: lag unknown
        return {}
    return out


class LagPoller:
    """Refreshes ``fraudwatch_stream_kafka_lag`` every ``every`` seconds from the brokers (driver thread).

    Between batches the listener's lag would freeze at its last value; this keeps it current, so a query
    that is stuck (failed, or a batch that never ends) shows lag that keeps growing. Broker errors are
    logged and retried at the next tick: the poller never affects the query.
    """

    def __init__(self, metrics: StreamMetrics, bootstrap: str, topics: tuple[str, ...], every: float = 15.0):
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.topics = topics
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kafka-lag-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.every + 10)

    def latest(self, consumer: Any) -> dict[str, dict[str, int]]:
        from confluent_kafka import TopicPartition

        out: dict[str, dict[str, int]] = {}
        for topic in self.topics:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                out.setdefault(topic, {})[str(partition)] = int(high)
        return out

    def _run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "fraudwatch-stream-lag",
                "enable.auto.commit": False,
            }
        )
        try:
            while not self._stop.wait(self.every):
                try:
                    self.metrics.refresh_lag(self.latest(consumer))
                except Exception as exc:  # the brokers may be down: the next tick tries again
                    log.warning("kafka lag poll failed: %s", exc)
        finally:
            consumer.close()


def _offsets(raw: Any) -> dict[str, dict[str, int]]:
    if not raw:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return {}
    return raw if isinstance(raw, dict) else {}


def kafka_lag(end_offset: Any, latest_offset: Any) -> dict[str, int]:
    """Records behind the latest offset per topic, from a Kafka source's progress offsets."""
    end, latest = _offsets(end_offset), _offsets(latest_offset)
    out: dict[str, int] = {}
    for topic, parts in latest.items():
        done = end.get(topic, {})
        out[topic] = sum(max(0, int(off) - int(done.get(p, 0))) for p, off in parts.items())
    return out
