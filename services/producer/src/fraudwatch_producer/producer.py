"""The async Kafka producer loop: paces a source, batches records per partition, sends labels when due.

Records are appended to aiokafka batches per partition (the Java client's murmur2 partitioner on the key,
so a card always lands on the same partition, in order) and submitted with ``send_batch``; delivery is
counted in the futures' callbacks, never awaited one by one. The producer is idempotent with acks=all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_lz4, has_zstd
from aiokafka.partitioner import murmur2

from fraudwatch_producer.metrics import ProducerMetrics
from fraudwatch_producer.sources import Records

MAX_CHUNK = 5_000  # records generated per loop iteration at most
TICK_SECONDS = 0.02


GZIP_LEVEL = 1


def _fast_gzip() -> None:
    """Make aiokafka's gzip codec use level 1 instead of its hard-wired level 9.

    At level 9 zlib costs ~23 µs per 250-byte transaction, more than everything else in the producer;
    level 1 compresses JSON nearly as well at a fraction of the CPU. aiokafka 0.14 has no setting for it,
    so we rebind the encoder its record builders call (both the Cython and the pure-Python one).
    """
    import functools
    import importlib

    from aiokafka import codec

    fast = functools.partial(codec.gzip_encode, compresslevel=GZIP_LEVEL)
    for name in ("aiokafka.record._crecords.default_records", "aiokafka.record.default_records"):
        with contextlib.suppress(ImportError):
            module = importlib.import_module(name)
            if getattr(module, "gzip_encode", None) is codec.gzip_encode:
                module.gzip_encode = fast


def best_compression() -> str:
    """zstd or lz4 when aiokafka has its codec library (cramjam) installed, else gzip (always there)."""
    if has_zstd():
        return "zstd"
    if has_lz4():
        return "lz4"
    return "gzip"


class Source(Protocol):
    frauds: int

    def next(self, n: int, now: float) -> Records: ...

    def due_labels(self, now: float, limit: int | None = None) -> Records: ...


@dataclass(frozen=True)
class ProducerOptions:
    bootstrap: str
    topic_transactions: str = "transactions"
    topic_labels: str = "labels"
    rate: float = 5_000.0  # transactions/s; 0 = as fast as possible (live); ignored for replay
    # > 0: the source's simulated clock paces the events (live or replay); ``rate`` is then only reported.
    speedup: float = 0.0
    duration: float | None = None  # seconds; None = until stopped (live) or the end of the history (replay)
    max_events: int | None = None
    replay: bool = False
    compression: str = "auto"
    linger_ms: int = 20
    max_batch_bytes: int = 512 * 1024
    client_id: str = "fraudwatch-producer"


@dataclass
class RunSummary:
    """What a run did; ``sent`` counts only records Kafka acknowledged."""

    generated: int = 0
    sent: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    labels_pending: int = 0
    frauds: int = 0
    seconds: float = 0.0
    stopped_by_signal: bool = False
    compression: str = ""
    sim_clock_ns: int | None = None  # where the source's simulated clock got to

    @property
    def sim_clock(self) -> str:
        if self.sim_clock_ns is None:
            return ""
        return datetime.fromtimestamp(self.sim_clock_ns / 1e9, UTC).isoformat(timespec="seconds")

    @property
    def rate(self) -> float:
        return self.generated / self.seconds if self.seconds else 0.0

    def line(self, opts: ProducerOptions) -> str:
        tx = self.sent.get(opts.topic_transactions, 0)
        lb = self.sent.get(opts.topic_labels, 0)
        errors = sum(self.errors.values())
        how = "stopped by signal" if self.stopped_by_signal else "done"
        return (
            f"{how}: {tx:,} transactions ({self.frauds:,} fraud) and {lb:,} labels sent in {self.seconds:.1f}s "
            f"({tx / self.seconds if self.seconds else 0:,.0f} tx/s), {errors:,} errors, "
            f"{self.labels_pending:,} labels not yet due, compression={self.compression}"
            + (f", simulated clock at {self.sim_clock}" if self.sim_clock_ns is not None else "")
        )


class _Sender:
    """Per-partition batch building and delivery accounting on top of AIOKafkaProducer.send_batch."""

    def __init__(self, producer: AIOKafkaProducer, metrics: ProducerMetrics, summary: RunSummary) -> None:
        self.producer = producer
        self.metrics = metrics
        self.summary = summary
        self._partitions: dict[str, int] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self.inflight: set[asyncio.Future[Any]] = set()
        self.first_error: BaseException | None = None

    async def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            parts = await self.producer.partitions_for(topic)
            self._partitions[topic] = len(parts)
        return self._partitions[topic]

    def _partition(self, topic: str, key: bytes, n: int) -> int:
        p = self._partition_of.get((topic, key))
        if p is None:
            # Same as the Java client's default partitioner (aiokafka's DefaultPartitioner).
            p = (murmur2(key) & 0x7FFFFFFF) % n
            if len(self._partition_of) < 2_000_000:
                self._partition_of[(topic, key)] = p
        return p

    async def send(self, topic: str, records: Records) -> None:
        if not records.values:
            return
        n = await self.partitions(topic)
        by_partition: dict[int, tuple[list[bytes], list[bytes]]] = {}
        for key, value in zip(records.keys, records.values, strict=True):
            keys, values = by_partition.setdefault(self._partition(topic, key, n), ([], []))
            keys.append(key)
            values.append(value)
        for partition, (keys, values) in by_partition.items():
            batch = self.producer.create_batch()
            count = 0
            for key, value in zip(keys, values, strict=True):
                if batch.append(key=key, value=value, timestamp=None) is None:
                    await self._submit(batch, topic, partition, count)
                    batch, count = self.producer.create_batch(), 0
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
                count += 1
            if count:
                await self._submit(batch, topic, partition, count)

    async def _submit(self, batch: Any, topic: str, partition: int, count: int) -> None:
        batch.close()
        future = await self.producer.send_batch(batch, topic, partition=partition)
        self.inflight.add(future)
        future.add_done_callback(self._delivered(topic, count))

    def _delivered(self, topic: str, count: int) -> Callable[[asyncio.Future[Any]], None]:
        def done(future: asyncio.Future[Any]) -> None:
            self.inflight.discard(future)
            if future.cancelled() or future.exception() is not None:
                self.summary.errors[topic] = self.summary.errors.get(topic, 0) + count
                self.metrics.errors.labels(topic=topic).inc(count)
                if self.first_error is None and not future.cancelled():
                    self.first_error = future.exception()
            else:
                self.summary.sent[topic] = self.summary.sent.get(topic, 0) + count
                self.metrics.sent.labels(topic=topic).inc(count)

        return done

    async def drain(self) -> None:
        await self.producer.flush()
        if self.inflight:
            await asyncio.gather(*list(self.inflight), return_exceptions=True)


async def run(
    source: Source,
    opts: ProducerOptions,
    metrics: ProducerMetrics | None = None,
    stop: asyncio.Event | None = None,
    progress: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Produce from ``source`` until the duration, the event budget, the source's end or ``stop``."""
    metrics = metrics or ProducerMetrics()
    for topic in (
        opts.topic_transactions,
        opts.topic_labels,
    ):  # zero series: "no errors" rather than "no data"
        metrics.sent.labels(topic=topic)
        metrics.errors.labels(topic=topic)
    stop = stop or asyncio.Event()
    summary = RunSummary()
    summary.compression = best_compression() if opts.compression == "auto" else opts.compression
    if summary.compression == "gzip":
        _fast_gzip()
    producer = AIOKafkaProducer(
        bootstrap_servers=opts.bootstrap,
        client_id=opts.client_id,
        acks="all",
        enable_idempotence=True,
        compression_type=None if summary.compression == "none" else summary.compression,
        linger_ms=opts.linger_ms,
        max_batch_size=opts.max_batch_bytes,
        max_request_size=max(opts.max_batch_bytes * 2, 1_048_576),
        request_timeout_ms=30_000,
    )
    await producer.start()
    sender = _Sender(producer, metrics, summary)
    # A simulated clock with a speed-up paces the source itself; otherwise live traffic keeps --rate.
    clock_paced = opts.replay or opts.speedup > 0
    live_rate = 0.0 if clock_paced else opts.rate
    metrics.target_rate.set(0.0 if opts.replay else opts.rate)
    window: deque[tuple[float, int]] = deque()
    t0 = time.monotonic()
    last_progress = 0.0
    try:
        await sender.partitions(opts.topic_transactions)
        await sender.partitions(opts.topic_labels)
        while not stop.is_set():
            if sender.first_error is not None:
                raise sender.first_error
            mono = time.monotonic()
            elapsed = mono - t0
            if opts.duration is not None and elapsed >= opts.duration:
                break
            budget = MAX_CHUNK
            if opts.max_events is not None:
                budget = min(budget, opts.max_events - summary.generated)
                if budget <= 0:
                    break
            if live_rate > 0:
                due = int(elapsed * live_rate) - summary.generated
                budget = min(budget, due)
                metrics.lag_seconds.set(max(0.0, (due - MAX_CHUNK) / live_rate))
            elif clock_paced:
                metrics.lag_seconds.set(getattr(source, "lag_seconds", lambda _n: 0.0)(time.time()))
            now = time.time()
            records = source.next(budget, now) if budget > 0 else Records()
            summary.generated += len(records)
            await sender.send(opts.topic_transactions, records)
            await sender.send(opts.topic_labels, source.due_labels(time.time(), limit=4 * MAX_CHUNK))
            window.append((mono, summary.generated))
            while window and mono - window[0][0] > 5.0:
                window.popleft()
            if len(window) > 1 and window[-1][0] > window[0][0]:
                metrics.achieved_rate.set((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]))
            if progress is not None and mono - last_progress > 0.25:
                summary.seconds = elapsed
                progress(summary)
                last_progress = mono
            if getattr(source, "exhausted", False):
                break
            if not records:
                # Nothing due yet: wait for the next event's slot (or the next label tick), or a stop.
                wait = TICK_SECONDS if live_rate <= 0 else min(TICK_SECONDS, 1.0 / live_rate)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)
            else:
                await asyncio.sleep(0)  # let the sender and the delivery callbacks run
        summary.stopped_by_signal = stop.is_set()
        if getattr(source, "exhausted", False) and not stop.is_set():
            # A finished replay sends the rest of its labels (they are part of the history).
            while True:
                rest = source.due_labels(float("inf"), limit=4 * MAX_CHUNK)
                if not rest:
                    break
                await sender.send(opts.topic_labels, rest)
    finally:
        await sender.drain()
        await producer.stop()
        summary.seconds = time.monotonic() - t0
        summary.frauds = source.frauds
        summary.labels_pending = len(getattr(source, "pending", ()))
        clock = getattr(source, "clock", None)
        if clock is not None:
            summary.sim_clock_ns = clock.now_ns(time.time())
    if sender.first_error is not None:
        raise sender.first_error
    return summary
