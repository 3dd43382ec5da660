"""The streaming scorer: Kafka -> validate -> terminal state -> card state -> score -> sinks.

One query, one checkpoint. The two stateful stages write the states they changed to the online store
themselves (:class:`.stateful.StoreWriter`), while the batch is computed; then ``foreachBatch`` writes the
authoritative table (upsert by transaction_id, :mod:`.sinks`) and ``transactions.scored``, ``fraud.alerts``
and ``transactions.dlq`` in one Kafka write. Store first: once a transaction is visible in the table, the
state that includes it is already in the store.

A store write that failed in a stage fails the batch on the driver (:class:`StoreWriteFailed`, counted in
``fraudwatch_store_errors_total``); :meth:`StreamJob.run` then starts the query again from its checkpoint
after a back-off, so the batch is re-run from the last committed offsets and state until the store takes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fraudwatch.config import Settings
from fraudwatch.drift import LiveWindow, reference_psi
from fraudwatch.events import EARLIEST, EventBounds, dead_letter_for
from fraudwatch.model import Reference, registered_reference
from fraudwatch_stream.metrics import LagPoller, StreamMetrics, checkpoint_offsets
from fraudwatch_stream.records import (
    CARD_STATE,
    DEAD_LETTER,
    ROW_SCHEMA_DDL,
    SCORE_SCHEMA_DDL,
    STORE_ERROR,
    TERMINAL_STATE,
    TRANSACTION,
    unpack_features,
)
from fraudwatch_stream.scoring import (
    ALERT_DECISIONS,
    CHALLENGER_COLUMNS,
    ModelConfig,
    score_batches,
    warm_worker,
)
from fraudwatch_stream.sinks import KafkaOutput, ScoredTable, scored_table_path
from fraudwatch_stream.stateful import CardProcessor, StoreWriter, TerminalProcessor
from fraudwatch_stream.warmstart import initial_states

__all__ = ["JobOptions", "StoreWriteFailed", "StreamJob", "build_query_frame", "model_config"]

log = logging.getLogger("fraudwatch_stream")
OPERATORS = ("terminal", "card")
DRIFT_WINDOW = 5000  # live rows compared with the training reference
DRIFT_SECONDS = 30.0  # how often the PSI gauges are recomputed
DRIFT_MIN_ROWS = 200
#: back-off before the query is started again after the online store failed a batch (doubles per failure
#: in a row, up to the maximum)
RESTART_SECONDS = 1.0
RESTART_MAX_SECONDS = 60.0


class StoreWriteFailed(RuntimeError):
    """A stateful stage could not write its states to the online store: the batch fails (and is re-run)."""


@dataclass(frozen=True)
class JobOptions:
    """Per-run overrides of Settings."""

    state_buckets: int | None = None  # None: Settings.stream_state_buckets
    query_name: str = "fraudwatch-scorer"

    def buckets(self, settings: Settings) -> int:
        return self.state_buckets or settings.stream_state_buckets


def model_config(settings: Settings) -> ModelConfig:
    uri = settings.resolved_model_uri
    alias = uri.split("@", 1)[1] if "@" in uri else None
    return ModelConfig(
        tracking_uri=settings.mlflow_tracking_uri,
        model_uri=uri,
        model_name=settings.model_name,
        alias=alias,
        poll_seconds=settings.model_poll_seconds,
        # shadow scoring follows Settings.shadow_alias (as the API does), unless it is empty or the job itself
        # serves it
        challenger_alias=settings.shadow_alias
        if settings.shadow_alias and alias != settings.shadow_alias
        else None,
    )


def build_query_frame(spark: Any, settings: Settings, options: JobOptions) -> Any:
    """The streaming DataFrame up to the scores (everything but the sink)."""
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    buckets = options.buckets(settings)
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", f"{settings.topic_transactions},{settings.topic_labels}")
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", settings.stream_max_offsets_per_trigger)
        .option("failOnDataLoss", "true")
        .load()
    )
    # the terminal bucket is read from the raw JSON on the JVM side, so that validation can happen inside
    # the terminal stage (one Python stage fewer); the stage re-checks it against the validated terminal_id
    terminal_id = F.get_json_object(F.col("value").cast("string"), "$.terminal_id")
    keyed = raw.select(
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_micros("timestamp").alias("kafka_us"),  # produce time: the latency metric's start
        F.pmod(
            F.crc32(F.coalesce(terminal_id, F.col("offset").cast("string")).cast("binary")), F.lit(buckets)
        )
        .cast("int")
        .alias("tb"),
    )
    # warm start (FRAUDWATCH_STREAM_WARM_START): Spark applies it in batch 0 of a fresh checkpoint only
    warm_terminals, warm_cards = initial_states(spark, settings, buckets)
    with_terminal = keyed.groupBy("tb").transformWithStateInPandas(
        TerminalProcessor(
            buckets,
            settings.topic_transactions,
            settings.max_record_bytes,
            # each record is judged at its own Kafka timestamp (kafka_us); EARLIEST is a placeholder
            EventBounds.from_settings(settings, EARLIEST),
            StoreWriter(settings),
        ),
        ROW_SCHEMA_DDL,
        "Append",
        "None",
        initialState=warm_terminals,
    )
    with_card = with_terminal.groupBy("cb").transformWithStateInPandas(
        CardProcessor(buckets, settings.topic_transactions, StoreWriter(settings)),
        ROW_SCHEMA_DDL,
        "Append",
        "None",
        initialState=warm_cards,
    )
    config = model_config(settings)

    @pandas_udf(SCORE_SCHEMA_DDL)  # type: ignore[call-overload]
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        yield from score_batches(batches, config)

    scored = with_card.withColumn("s", score(F.struct("kind", "payload", "cfeat", "tfeat")))
    return scored.select("*", "s.*").drop("s")


#: Python workers one task of the query holds at once (a stateful stage and the scoring UDF each run in their
#: own): the warm-up chains as many steps, so that every worker a task can pick from the pool is warm
WARM_STEPS = 2
WARM_SCHEMA_DDL = "step int, pid long, version string, error string, seconds double"


def warm_workers(spark: Any, config: ModelConfig, steps: int = WARM_STEPS) -> list[dict[str, Any]]:
    """Warm every Python worker the query will use before it starts (:func:`warm_worker` in each).

    A tiny batch job with as many partitions as task slots and ``steps`` chained mapInPandas steps, each of
    which runs in its own Python worker: slots x steps workers load the kernels and the model, and Spark's
    worker reuse hands them to the query. Returns one row per worker (pid, model version, error, seconds).
    """
    slots = max(1, int(spark.sparkContext.defaultParallelism))

    def step(number: int) -> Any:
        def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
            yield from batches  # the rows of the steps before
            yield pd.DataFrame([{"step": number, **warm_worker(config)}])

        return run

    frame = spark.range(slots, numPartitions=slots).selectExpr(
        "cast(-1 as int) as step",
        "cast(null as long) as pid",
        "cast(null as string) as version",
        "cast(null as string) as error",
        "cast(null as double) as seconds",
    )
    for number in range(steps):
        frame = frame.mapInPandas(step(number), WARM_SCHEMA_DDL)
    return [row.asDict() for row in frame.where("step >= 0").collect()]


class StreamJob:
    """The query and its foreachBatch sink (runs on the driver)."""

    def __init__(self, spark: Any, settings: Settings, options: JobOptions | None = None) -> None:
        self.spark = spark
        self.settings = settings
        self.options = options or JobOptions()
        self.metrics = StreamMetrics()
        self.table = ScoredTable(scored_table_path(settings))
        self.output = KafkaOutput(settings)
        self.query: Any = None
        self.lag_poller: LagPoller | None = None
        self._alias = model_config(settings).alias or ""
        self.drift = LiveWindow(DRIFT_WINDOW)
        self._references: dict[tuple[str, str], Reference] = {}
        self._drift_at = 0.0
        self._listener: Any = None
        #: set by write_batch when the store failed the batch: run() then restarts the query
        self.store_failed = False
        #: queries started by run() after the store failed a batch; batches written since the job started
        self.restarts = 0
        self.batches_written = 0

    # ------------------------------------------------------------------ sink
    def write_batch(self, batch_df: Any, batch_id: int) -> None:
        started = time.monotonic()
        pdf = batch_df.select(
            "kind",
            "transaction_id",
            "card_id",
            "terminal_id",
            "t_us",
            "amount",
            "kafka_us",
            "score",
            "decision",
            "model_name",
            "model_version",
            "value",
            "cfeat",
            "tfeat",
            "cb",
            "entities",
            "reason",
            "payload",
            "error",
            "src_partition",
            "src_offset",
            *CHALLENGER_COLUMNS,
        ).toPandas()
        timings = {"compute_and_collect": time.monotonic() - started}
        n_states = self._state_reports(pdf, batch_id)
        self._dead_letter_unscored(pdf)
        kinds = pdf["kind"].to_numpy()
        scored = pdf[kinds == TRANSACTION]
        now = time.time()
        matrix = np.hstack((unpack_features(scored["cfeat"]), unpack_features(scored["tfeat"])))
        if len(scored):
            features = matrix.tolist()
            self.table.upsert(
                zip(
                    scored["transaction_id"].tolist(),
                    scored["card_id"].tolist(),
                    scored["terminal_id"].tolist(),
                    scored["t_us"].astype("int64").tolist(),
                    scored["score"].tolist(),
                    scored["decision"].tolist(),
                    scored["model_name"].tolist(),
                    scored["model_version"].tolist(),
                    features,
                    scored["value"].tolist(),
                    [batch_id] * len(scored),
                    [now] * len(scored),
                    *(scored[c].tolist() for c in CHALLENGER_COLUMNS),
                    strict=True,
                )
            )
            self.metrics.count_shadow(scored["decision"].tolist(), scored["challenger_decision"].tolist())
        timings["table"] = time.monotonic() - started - sum(timings.values())
        dead = pdf[kinds == DEAD_LETTER]
        n_dlq = len(dead)
        self.output.publish(
            scored["card_id"].tolist(),
            scored["value"].tolist(),
            scored["decision"].isin(ALERT_DECISIONS).tolist(),
            dead["payload"].tolist(),
        )
        timings["kafka"] = time.monotonic() - started - sum(timings.values())
        self._count(
            pdf,
            scored,
            matrix,
            n_dlq,
            n_states,
            batch_id,
            time.monotonic() - started,
            timings,
        )
        self.batches_written += 1

    def _state_reports(self, pdf: pd.DataFrame, batch_id: int) -> int:
        """Read the stages' report rows: bucket sizes, states written to the online store and how long that
        took. Returns the number of states written; raises :class:`StoreWriteFailed` (after counting each
        failed write in ``fraudwatch_store_errors_total``) when a stage could not write its states: that
        group committed nothing, so the batch must not reach the table; the re-run repeats it whole (the
        groups that did write write the same bytes again).
        """
        kinds = pdf["kind"].to_numpy()
        reports = pdf[(kinds == CARD_STATE) | (kinds == TERMINAL_STATE)]
        backend = self.settings.store_backend
        n_states = 0
        errors: list[str] = []
        for kind, bucket, entities, written, seconds, reason, error in zip(
            reports["kind"].tolist(),
            reports["cb"].tolist(),
            reports["entities"].tolist(),
            reports["src_offset"].tolist(),
            reports["amount"].tolist(),
            reports["reason"].tolist(),
            reports["payload"].tolist(),
            strict=True,
        ):
            operator = "card" if kind == CARD_STATE else "terminal"
            if reason == STORE_ERROR:
                self.metrics.observe_store(backend, "put", float(seconds), True)
                errors.append(f"{operator} bucket {int(bucket)}: {error}")
                continue
            self.metrics.set_entities(operator, int(bucket), int(entities))
            if written:
                n_states += int(written)
                self.metrics.observe_store(backend, "put", float(seconds), False)
        if errors:
            self.store_failed = True
            print(
                json.dumps({"event": "store_write_failed", "batch_id": batch_id, "errors": errors[:5]}),
                file=sys.stderr,
                flush=True,
            )
            raise StoreWriteFailed(
                f"batch {batch_id}: {len(errors)} state group(s) could not write to the {backend} online "
                f"store; the batch is not committed and is re-run: {errors[0]}"
            )
        return n_states

    def _dead_letter_unscored(self, pdf: pd.DataFrame) -> None:
        """Transactions the scoring UDF could not score (``error`` set) become dead letters, in place."""
        failed = ((pdf["kind"] == TRANSACTION) & pdf["error"].notna()).to_numpy()
        if not failed.any():
            return
        now = datetime.now(UTC)
        letters = [
            dead_letter_for(
                payload.encode("utf-8") if isinstance(payload, str) else None,
                str(error),
                self.settings.topic_transactions,
                int(partition),
                int(offset),
                failed_at=now,
            ).model_dump_json()
            for payload, error, partition, offset in zip(
                pdf.loc[failed, "payload"].tolist(),
                pdf.loc[failed, "error"].tolist(),
                pdf.loc[failed, "src_partition"].tolist(),
                pdf.loc[failed, "src_offset"].tolist(),
                strict=True,
            )
        ]
        pdf.loc[failed, "kind"] = DEAD_LETTER
        pdf.loc[failed, "reason"] = "scoring_error"
        pdf.loc[failed, "payload"] = letters

    def _count(
        self,
        pdf: pd.DataFrame,
        scored: pd.DataFrame,
        matrix: np.ndarray,
        n_dlq: int,
        n_states: int,
        batch_id: int,
        seconds: float,
        timings: dict[str, float],
    ) -> None:
        m = self.metrics
        decisions = scored["decision"].value_counts().to_dict() if len(scored) else {}
        alerts = int(decisions.get("review", 0) + decisions.get("decline", 0))
        m.rows.labels(output="scored").inc(len(scored))
        m.rows.labels(output="alerts").inc(alerts)
        m.rows.labels(output="dlq").inc(n_dlq)
        for decision, count in decisions.items():
            m.decisions.labels(decision=decision).inc(count)
        if n_dlq:
            for reason, count in pdf.loc[pdf["kind"] == DEAD_LETTER, "reason"].value_counts().items():
                m.dead_letters.labels(reason=str(reason)).inc(int(count))
        if len(scored):
            # real clock: input record's Kafka timestamp -> now (the scored records are acknowledged by
            # Kafka); event_time is the source's clock (simulated, possibly far ahead) and is not used
            lat = time.time() - scored["kafka_us"].to_numpy(dtype=np.float64) / 1e6
            for value in lat[np.isfinite(lat)]:
                m.produce_to_scored.observe(float(value))
            last = scored.iloc[-1]
            m.set_model(str(last["model_name"]), str(last["model_version"]), self._alias)
            self._update_drift(scored, matrix, str(last["model_name"]), str(last["model_version"]))
        print(
            json.dumps(
                {
                    "event": "batch_written",
                    "batch_id": batch_id,
                    "scored": len(scored),
                    "alerts": alerts,
                    "dead_letters": n_dlq,
                    "states_written": n_states,
                    "batch_seconds": round(seconds, 3),
                    "seconds": {k: round(v, 3) for k, v in timings.items()},
                    "decisions": {str(k): int(v) for k, v in decisions.items()},
                }
            ),
            file=sys.stderr,
            flush=True,
        )

    # ------------------------------------------------------------------ drift
    def _reference(self, name: str, version: str) -> Reference | None:
        """The training reference of a model version, cached per version (a failure is retried later)."""
        key = (name, version)
        if key not in self._references:
            try:
                self._references[key] = registered_reference(self.settings.mlflow_tracking_uri, name, version)
            except Exception as exc:  # drift is best effort: never fail a batch for it
                print(
                    json.dumps({"event": "drift_reference_unavailable", "error": str(exc)}), file=sys.stderr
                )
                return None
        return self._references[key]

    def _update_drift(self, scored: pd.DataFrame, matrix: np.ndarray, name: str, version: str) -> None:
        self.drift.add(matrix, scored["score"].to_numpy(dtype=np.float64))
        if time.monotonic() - self._drift_at < DRIFT_SECONDS or len(self.drift) < DRIFT_MIN_ROWS:
            return
        self._drift_at = time.monotonic()
        reference = self._reference(name, version)
        if reference is None:
            return
        self.metrics.set_psi(*reference_psi(reference, *self.drift.snapshot()))

    # ------------------------------------------------------------------ run
    def start(self) -> Any:
        """Start the query (from its checkpoint: after a failure, the failed batch is re-run)."""
        if self._listener is None:  # once per job: listener, RocksDB setting, lag poller
            # RocksDB: commit a changelog per batch instead of uploading a snapshot of every state store
            self.spark.conf.set(
                "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true"
            )
            self._listener = _listener(self.metrics)
            self.spark.streams.addListener(self._listener)
            self.lag_poller = LagPoller(
                self.metrics,
                self.settings.kafka_bootstrap,
                (self.settings.topic_transactions, self.settings.topic_labels),
            )
            self.lag_poller.start()
            # before the first micro-batch: a fresh Python worker spends seconds on imports, kernels and the
            # model (docs/stream.md, Start-up), and live traffic would queue behind it
            started = time.perf_counter()
            warmed: dict[str, Any] = {"event": "workers_warmed"}
            try:
                warmed["workers"] = warm_workers(self.spark, model_config(self.settings))
            except Exception as exc:  # an optimisation only: the query starts cold
                warmed["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
            warmed["seconds"] = round(time.perf_counter() - started, 3)
            print(json.dumps(warmed), file=sys.stderr, flush=True)
        frame = build_query_frame(self.spark, self.settings, self.options)
        checkpoint = self.settings.resolved_checkpoint_dir / "scorer"
        # the lag between batches (a stuck query must show it growing): from the last committed batch on
        self.metrics.set_end_offsets(checkpoint_offsets(checkpoint))
        self.store_failed = False
        self.query = (
            frame.writeStream.queryName(self.options.query_name)
            .outputMode("append")
            .option("checkpointLocation", str(checkpoint))
            .trigger(processingTime=f"{self.settings.stream_trigger_seconds} seconds")
            .foreachBatch(self.write_batch)
            .start()
        )
        return self.query

    def run(self, stopping: threading.Event, restart_seconds: float = RESTART_SECONDS) -> None:
        """Run the query until ``stopping`` is set (``python -m fraudwatch_stream``).

        When the online store failed a batch (:class:`StoreWriteFailed`), the query is started again after a
        back-off (``restart_seconds``, doubling per failure in a row up to RESTART_MAX_SECONDS): Spark re-runs
        the batch from the last committed offsets and state, so nothing is lost while the store is down, and
        the job stays up with its metrics (each failed write counted). Any other failure is raised.
        """
        from pyspark.errors import StreamingQueryException

        query = self.start()
        delay, written = restart_seconds, self.batches_written
        while not stopping.is_set():
            if query.isActive:
                # short waits, so that a signal handler (main thread only) runs promptly; a failure is
                # told apart below
                with contextlib.suppress(StreamingQueryException):
                    query.awaitTermination(1)
                continue
            error = query.exception()
            if error is None:  # stopped
                return
            if not self.store_failed:
                raise RuntimeError(str(error))
            if self.batches_written > written:
                delay = restart_seconds  # batches went through since the last start: a new outage
            print(
                json.dumps(
                    {"event": "query_restart", "reason": "store_write_failed", "after_seconds": delay}
                ),
                file=sys.stderr,
                flush=True,
            )
            if stopping.wait(delay):
                return
            delay = min(2 * delay, RESTART_MAX_SECONDS)
            self.restarts += 1
            query, written = self.start(), self.batches_written

    def stop(self) -> None:
        if self.query is not None:
            self.query.stop()
        if self._listener is not None:
            self.spark.streams.removeListener(self._listener)
            self._listener = None
        if self.lag_poller is not None:
            self.lag_poller.stop()
        self.table.close()
        self.output.close()


def _listener(metrics: StreamMetrics) -> Any:
    """The StreamingQueryListener that feeds the query-level metrics and logs."""
    from pyspark.sql.streaming import StreamingQueryListener

    class _Listener(StreamingQueryListener):
        def onQueryStarted(self, event: Any) -> None:
            metrics.query_active.set(1)
            print(json.dumps({"event": "query_started", "id": str(event.id)}), file=sys.stderr, flush=True)

        def onQueryProgress(self, event: Any) -> None:
            fields = metrics.on_progress(event.progress, OPERATORS)
            print(json.dumps({"event": "query_progress", **fields}, default=str), file=sys.stderr, flush=True)

        def onQueryIdle(self, event: Any) -> None:
            metrics.last_batch.set(time.time())

        def onQueryTerminated(self, event: Any) -> None:
            metrics.query_active.set(0)
            print(
                json.dumps({"event": "query_terminated", "exception": event.exception}),
                file=sys.stderr,
                flush=True,
            )

    return _Listener()
