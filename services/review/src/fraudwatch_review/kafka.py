"""Kafka ends of the queue: :class:`AlertConsumer` reads ``fraud.alerts``, :class:`LabelPublisher` writes
``labels``.

Alerts are committed to the consumer group only after they are in the table, so a crash re-reads them (the
table is idempotent by transaction_id). A record that is not a valid ScoredTransaction is logged, counted
and skipped: it cannot be reviewed, and the stream that wrote it keeps its own dead-letter queue.

Labels are sent with ``acks=all`` and idempotence on, and the decision waits for the broker's ack before
the alert is marked decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from fraudwatch.config import Settings
from fraudwatch.events import Label, ScoredTransaction, schema_errors
from fraudwatch_review.metrics import ReviewMetrics
from fraudwatch_review.queue import ReviewQueue

__all__ = ["AlertConsumer", "LabelPublisher", "PublishFailed"]

log = logging.getLogger("fraudwatch_review.kafka")


class PublishFailed(Exception):
    """The label did not reach the broker; the decision is refused and the alert stays open."""


class AlertConsumer:
    """Background task: fraud.alerts -> the queue table (at-least-once in, idempotent table)."""

    def __init__(self, settings: Settings, queue: ReviewQueue, metrics: ReviewMetrics) -> None:
        self.settings = settings
        self.queue = queue
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self.started = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fraudwatch-review-alerts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def ingest(self, raw: bytes | None) -> str:
        """Queue one record's value; returns the result it was counted under."""
        try:
            alert = ScoredTransaction.model_validate_json(raw or b"")
        except ValidationError as exc:
            log.warning("invalid alert skipped", extra={"fields": {"errors": schema_errors(exc)[:5]}})
            result = "invalid"
        else:
            result = "queued" if self.queue.add(alert) else "duplicate"
        self.metrics.alerts_consumed.labels(result=result).inc()
        return result

    async def _run(self) -> None:
        while True:  # reconnect on broker trouble; the service keeps serving the queue meanwhile
            consumer = AIOKafkaConsumer(
                self.settings.topic_alerts,
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=self.settings.review_group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            try:
                await consumer.start()
                self.started.set()
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for records in batches.values():
                        for record in records:
                            self.ingest(record.value)
                    if batches:
                        await consumer.commit()
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:
                log.warning("alert consumer failed; retrying", extra={"fields": {"error": repr(exc)}})
                await asyncio.sleep(2.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()


class LabelPublisher:
    """Writes analyst labels to the labels topic, keyed by transaction_id."""

    def __init__(self, settings: Settings, timeout_seconds: float = 15.0) -> None:
        self.settings = settings
        self.timeout_seconds = timeout_seconds
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=int(self.timeout_seconds * 1000),
        )
        try:
            await self._producer.start()
        except KafkaError as exc:  # the page still serves; each decision retries the connection
            log.warning("label producer not connected yet", extra={"fields": {"error": repr(exc)}})
            await self._producer.stop()
            self._producer = None

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def publish(self, label: Label) -> None:
        """Send one label and wait for the broker's ack; raises PublishFailed otherwise."""
        if self._producer is None:
            await self.start()
        if self._producer is None:
            raise PublishFailed("Kafka is not reachable")
        try:
            await asyncio.wait_for(
                self._producer.send_and_wait(
                    self.settings.topic_labels,
                    value=label.model_dump_json(exclude_none=True).encode(),
                    key=label.transaction_id.encode(),
                ),
                timeout=self.timeout_seconds,
            )
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(
                f"the label was not written to {self.settings.topic_labels}: {exc!r}"
            ) from exc


def label_for(
    alert_tx: str, card_id: str, terminal_id: str, event_time: datetime, is_fraud: bool, analyst: str
) -> Label:
    """The label of a decision: reported now (never before the transaction itself: a simulated clock may
    run ahead of the wall clock), by ``analyst:<name>``."""
    now = datetime.now(UTC)
    return Label(
        transaction_id=alert_tx,
        card_id=card_id,
        terminal_id=terminal_id,
        event_time=event_time,
        is_fraud=is_fraud,
        reported_at=max(now, event_time),
        source=f"analyst:{analyst}",
    )
