"""Framework floor of the streaming scorer: the job's query shape with trivial, vectorized bodies.

What does Spark Structured Streaming itself cost on this machine, before any feature code runs? This
benchmark builds the scorer's query shape — Kafka source, terminal bucket from the raw JSON on the JVM,
``transformWithStateInPandas`` grouped by terminal bucket, a second one grouped by card bucket, an
iterator-of-batches pandas UDF, ``foreachBatch`` — with the job's row schema (:data:`ROW_SCHEMA_DDL`, plus the
``state`` column the state rows of the design before stage-side store writes carried), but
every Python body is a few vectorized numpy/pandas operations: no JSON parsing, no features, no model. It
runs on a prefilled topic (a backlog, ``maxOffsetsPerTrigger`` records per micro-batch) and reports
records/s and CPU seconds per record of each process: the Spark JVM, each Python worker, the driver.

Variants (``--variants``, comma-separated; each a ``+``-joined set of flags):

* ``bare``: the stages pass rows through; no state is read or written.
* ``state``: each group also reads its bucket's state (a ListState log + ValueState token, like the job's
  ``EntityLog``), appends one chunk of ``--state-bytes`` per changed entity (incompressible bytes,
  base64 text) and emits one state row per group to the driver, as the job does.
* ``narrow``: the first stage drops the raw JSON (``payload``) from the rows it emits, so the second stage,
  the UDF and the collect move only ids, numbers and feature bytes.
* ``noudf``: no pandas UDF; the card stage emits the score columns itself (scoring inside the card stage).
* ``onestage``: one stateful stage only, grouped by card bucket (computed on the JVM from the raw JSON), which
  does the work of both stages (the shape of a design that takes terminal features from a table instead
  of a second stateful operator).
* ``real``: not a floor but the measurement to hold against it: the job itself
  (:func:`fraudwatch_stream.job.build_query_frame` and :meth:`StreamJob.write_batch`: validation, the feature
  kernels, Spark state, the production model from ``--tracking-uri``, the online store, the SQLite table and
  the Kafka outputs) on the same prefilled topic. With ``FRAUDWATCH_STREAM_PROFILE=1`` in the environment the
  stages print their per-step timings (``stage_profile``) and every batch its sink timings
  (``batch_written``) on stderr.
* ``onestage-real``: not a floor either: a prototype of the one-stage design's per-record work, to measure
  before anyone builds it. One ``transformWithStateInPandas`` grouped by card bucket (computed on the JVM
  from the raw JSON, as ``onestage``), whose body runs the job's own code: validation with the shared pydantic
  models (:func:`fraudwatch_stream.records.parse_frame`, as the terminal stage does), the card stage
  (:func:`fraudwatch_stream.stateful.card_stage`: the bucket's ``EntityLog`` chunk state and worker cache, the
  card kernel on the time-ordered block, the online-store write of the changed card states through
  ``StoreWriter``, the commit), then the terminal features looked up from an in-memory per-(terminal, UTC
  day) table, then :func:`fraudwatch_stream.scoring.score_transactions` (the production model, reasons for
  the alerts, the ScoredTransaction JSON) inside the stage. It emits narrow rows (no raw JSON, no channel or
  country) in the job's row + score schema, so the driver sink is the job's own
  :meth:`StreamJob.write_batch` (SQLite table, Kafka outputs). **The terminal table is a cost model of the
  lookup, not the redesign's semantics**: numpy arrays (terminals x UTC days x the 12 terminal features, in
  the model's column order), built once per Python worker from the prefilled topic's terminal ids and time
  range, holding plausible but synthetic values (Poisson daily counts, 1% frauds) rather than tiles computed
  from history; labels are not consumed (in that design they feed the daily table, not the stream). With
  ``FRAUDWATCH_STREAM_PROFILE=1`` each group prints a ``stage_profile`` line (``stage`` ``onestage``: seconds
  per step, the card stage's own steps under ``card_steps``, a unix ``at``); ``--profile-log`` names the
  file stderr goes to, and each result then carries the steps summed over the groups of its measured window
  (wall µs per record).
* ``loadgen``: no Spark query: the CPU the load generator of ``make bench-stream`` and the broker cost per
  record. Runs ``bench_stream.produce_at`` (the same paced confluent-kafka producer, ``--loadgen-rate`` events/s
  for ``--loadgen-seconds``) while ``bench_stream.Scored`` consumes the same topic (as the benchmark consumes
  ``transactions.scored``, but these records are input-sized, ~185 B, where the job's scored records are ~370
  B), and reports the CPU of this process (producer + consumer thread), the broker and the idle Spark JVM.

Starts its own Kafka broker (scripts/services.py, free ports, under <local_dir>/bench-floor) and, with
``--store redis``, a redis-server for the online store (``FRAUDWATCH_STORE_BACKEND=redis``; else the SQLite
development store). CPU is counted per process role: ``jvm`` (Spark), ``kafka_broker`` (the broker's JVM;
runs before 2026-12-03 counted it in ``jvm``), ``python_workers``, ``driver_python``, ``redis``. The ``real``
variants need the production model: ``--tracking-uri``, or ``--train-model`` (simulates history, trains the
``hist_gradient_boosting`` kind with the training pipeline and registers it as ``production`` in a SQLite
MLflow store under <local_dir>/bench-floor-model, reused by later runs). Writes
bench/results/stream_floor.json. Run: ``make bench-stream-floor`` (or ``python bench/bench_stream_floor.py``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "stream_floor.json"


def _records(n: int, cards: int, terminals: int, seed: int = 7) -> list[bytes]:
    """``n`` transaction JSON values of realistic size (ids, time, amount, channel, country)."""
    rng = np.random.default_rng(seed)
    card = rng.integers(0, cards, n)
    term = rng.integers(0, terminals, n)
    amount = np.round(rng.lognormal(3.5, 1.0, n), 2)
    t0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    secs = t0 + np.sort(rng.integers(0, 86_400 * 20, n))
    out = []
    for i in range(n):
        ts = datetime.fromtimestamp(int(secs[i]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(
            (
                f'{{"transaction_id":"tx-{i:09d}","event_time":"{ts}","card_id":"card-{card[i]:07d}",'
                f'"terminal_id":"term-{term[i]:06d}","amount":{amount[i]},"currency":"EUR",'
                f'"channel":"pos","country":"BE"}}'
            ).encode()
        )
    return out


def _prefill(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "zstd", "acks": "all"}
    )
    for i, value in enumerate(values):
        key = value[value.index(b'"card_id":"') + 11 :].split(b'"', 1)[0]
        while True:
            try:
                producer.produce(topic, value, key=key, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise RuntimeError("prefill: records not acknowledged")


# ---------------------------------------------------------------------------------------------- bodies
# Module-level functions so the processors pickle to the Python workers without this script's globals.

FEAT_T = 13  # terminal feature block width (doubles), about the job's
FEAT_C = 30  # transaction + card feature block width


def _floor_schema() -> tuple[str, tuple[str, ...]]:
    """The job's row schema plus ``state BINARY``: the ``state`` variant sends entity state downstream in
    it, as the job did before its stages wrote the online store themselves (the job has no such column)."""
    from fraudwatch_stream.records import ROW_COLUMNS, ROW_SCHEMA_DDL

    return ROW_SCHEMA_DDL + ", state BINARY", (*ROW_COLUMNS, "state")


def _rows_from_raw(pdf: pd.DataFrame, buckets: int) -> pd.DataFrame:
    n = len(pdf)
    offsets = pdf["offset"].to_numpy(dtype=np.int64)
    out = pd.DataFrame({c: pd.Series([None] * n, dtype=object) for c in _floor_schema()[1]})
    out["kind"] = np.zeros(n, dtype=np.int32)
    out["t_us"] = offsets
    out["src_partition"] = pdf["partition"].to_numpy(dtype=np.int32)
    out["src_offset"] = offsets
    out["amount"] = np.ones(n)
    out["cb"] = (offsets % buckets).astype(np.int32)
    ids = pd.Series(offsets).astype(str)
    out["transaction_id"] = ids
    out["card_id"] = ids
    out["terminal_id"] = ids
    out["payload"] = pdf["value"].map(bytes.decode) if n else []
    out["tfeat"] = [b"\0" * (8 * FEAT_T)] * n
    return out


class _State:
    """A bucket's log + token, as the job's EntityLog holds them (chunks as base64 text)."""

    def __init__(self, handle: Any) -> None:
        self.meta = handle.getValueState("meta", "token BIGINT, chunks INT")
        self.log = handle.getListState("log", "chunk STRING")

    def touch(self, entities: int, state_bytes: int) -> bytes:
        row = self.meta.get()
        if row is not None:
            for _ in self.log.get():
                pass
        blob = os.urandom(entities * state_bytes)
        chunk = base64.b64encode(blob).decode("ascii")
        chunks = (int(row[1]) if row is not None else 0) + 1
        if chunks > 8:  # compaction, like the job's log: one snapshot replaces the chunks
            self.log.put([(chunk,)])
            chunks = 1
        else:
            self.log.appendList([(chunk,)])
        self.meta.update((int.from_bytes(os.urandom(7), "little"), chunks))
        return blob


def _state_row(blob: bytes, bucket: int) -> pd.DataFrame:
    from fraudwatch_stream.records import TERMINAL_STATE

    out = pd.DataFrame({c: pd.Series([None], dtype=object) for c in _floor_schema()[1]})
    out["kind"] = [TERMINAL_STATE]
    out["state"] = [blob]
    out["cb"] = [bucket]
    out["entities"] = [1]
    return out


def _processor(
    stage: str, buckets: int, with_state: bool, state_bytes: int, narrow: bool, score: bool
) -> Any:
    from pyspark.sql.streaming import StatefulProcessor

    from fraudwatch_stream.records import TRANSACTION

    class Trivial(StatefulProcessor):  # type: ignore[misc]
        def init(self, handle: Any) -> None:
            self.state = _State(handle) if with_state else None

        def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
            pdf = pd.concat(list(rows), ignore_index=True)
            if stage == "terminal":
                out = _rows_from_raw(pdf, buckets)
                if narrow:
                    out["payload"] = None
            elif stage == "both":
                out = _rows_from_raw(pdf, buckets)
                out["cfeat"] = [b"\0" * (8 * FEAT_C)] * len(out)
                if score:
                    for column, values in next(_trivial_scores(iter([out]))).items():
                        out[column] = values.to_numpy()
            else:
                out = pdf[pdf["kind"] == TRANSACTION].copy()
                out["cfeat"] = [b"\0" * (8 * FEAT_C)] * len(out)
                if score:
                    for column, values in next(_trivial_scores(iter([out]))).items():
                        out[column] = values.to_numpy()
            yield out
            if self.state is not None and len(out):
                changed = max(1, len(out) // 2)  # about half the touched entities are new per batch
                state = _state_row(self.state.touch(changed, state_bytes), int(key[0]))
                if score:  # typed score columns (an all-None column does not convert to DOUBLE)
                    for column, values in next(_trivial_scores(iter([state]))).items():
                        state[column] = values.to_numpy()
                yield state

        def close(self) -> None:
            return None

    return Trivial()


def _trivial_scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Constant scores in the job's score schema (SCORE_SCHEMA_DDL), whatever columns it has."""
    from fraudwatch_stream.records import SCORE_SCHEMA_DDL

    names = [part.strip().split(" ")[0] for part in SCORE_SCHEMA_DDL.split(",")]
    for pdf in batches:
        n = len(pdf)
        constant = {"score": np.zeros(n), "decision": ["approve"] * n, "value": pdf["payload"].to_numpy()}
        yield pd.DataFrame({name: constant.get(name, [None] * n) for name in names})


class CpuSampler:
    """CPU seconds of this process (driver), the Spark JVM, the Python workers and the services this benchmark
    started (Kafka broker, redis-server), between two marks.

    Counted per process id: a worker that starts inside the window counts in full; one that exits inside
    it loses what it used after the first mark (Spark keeps its Python workers, so this is rare; the
    report lists how many processes exited).
    """

    def __init__(self) -> None:
        self.me = psutil.Process()

    def snapshot(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        for proc in [self.me, *self.me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cmdline = " ".join(proc.cmdline())
                if proc.pid == self.me.pid:
                    role = "driver_python"
                elif proc.name() == "java":
                    role = "kafka_broker" if "kafka.Kafka" in cmdline else "jvm"
                elif "pyspark.daemon" in cmdline:
                    role = "python_workers"
                elif proc.name().startswith("redis-server"):
                    role = "redis"
                else:
                    role = "other"
                out[proc.pid] = (role, times.user + times.system)
        return out

    @staticmethod
    def diff(after: dict[int, tuple[str, float]], before: dict[int, tuple[str, float]]) -> dict[str, float]:
        roles: dict[str, float] = {}
        for pid, (role, cpu) in after.items():
            roles[role] = roles.get(role, 0.0) + cpu - (before[pid][1] if pid in before else 0.0)
        exited = len(set(before) - set(after))
        out = {k: round(v, 3) for k, v in roles.items()}
        if exited:
            out["processes_exited"] = float(exited)
        return out


FLAGS = frozenset({"bare", "state", "narrow", "noudf", "onestage", "real", "onestage-real", "loadgen"})


def run_variant(
    spark: Any,
    settings: Any,
    topic: str,
    n: int,
    variant: str,
    state_bytes: int,
    batch: int,
    buckets: int,
    values: list[bytes] | None = None,
) -> dict[str, Any]:
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from fraudwatch_stream.records import SCORE_SCHEMA_DDL

    row_schema = _floor_schema()[0]
    flags = set(variant.split("+"))
    unknown = flags - FLAGS
    if unknown:
        raise ValueError(f"unknown variant flags {sorted(unknown)}")
    if "real" in flags:
        return _measure(
            spark, settings, variant, n, batch, *_real_job(spark, settings, topic, batch, buckets)
        )
    if "onestage-real" in flags:
        assert values is not None
        job = _onestage_real_job(spark, settings, topic, batch, buckets, values)
        return _measure(spark, settings, variant, n, batch, *job)
    with_state, narrow, noudf = "state" in flags, "narrow" in flags, "noudf" in flags
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", batch)
        .load()
    )
    key_field = "$.card_id" if "onestage" in flags else "$.terminal_id"
    entity_id = F.get_json_object(F.col("value").cast("string"), key_field)
    keyed = raw.select(
        "value",
        "topic",
        "partition",
        "offset",
        F.pmod(F.crc32(F.coalesce(entity_id, F.lit("")).cast("binary")), F.lit(buckets))
        .cast("int")
        .alias("tb"),
    )
    card_schema = row_schema + (", " + SCORE_SCHEMA_DDL if noudf else "")
    if "onestage" in flags:
        carded = keyed.groupBy("tb").transformWithStateInPandas(
            _processor("both", buckets, with_state, state_bytes, narrow, noudf), card_schema, "Append", "None"
        )
    else:
        staged = keyed.groupBy("tb").transformWithStateInPandas(
            _processor("terminal", buckets, with_state, state_bytes, narrow, False),
            row_schema,
            "Append",
            "None",
        )
        carded = staged.groupBy("cb").transformWithStateInPandas(
            _processor("card", buckets, with_state, state_bytes, narrow, noudf), card_schema, "Append", "None"
        )
    if noudf:
        frame = carded
    else:
        score = pandas_udf(_trivial_scores, SCORE_SCHEMA_DDL)  # type: ignore[call-overload]
        scored = carded.withColumn("s", score(F.struct("kind", "payload", "cfeat", "tfeat")))
        frame = scored.select("*", "s.*").drop("s")

    seen = {"rows": 0, "batches": 0}

    def sink(df: Any, batch_id: int) -> None:
        pdf = df.select(
            "kind", "transaction_id", "score", "decision", "value", "cfeat", "tfeat", "state"
        ).toPandas()
        seen["rows"] += int((pdf["kind"] == 0).sum())
        seen["batches"] += 1

    return _measure(spark, settings, variant, n, batch, frame, sink, seen)


def _job_settings(settings: Any, topic: str, batch: int) -> Any:
    """The job's Settings on ``topic``, with fresh output topics named after it (created here)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    names = {f"topic_{k}": f"{topic}.{k}" for k in ("labels", "scored", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in names.values()]).values():
        future.result(timeout=30)
    return settings.model_copy(
        update={
            **names,
            # a table (and SQLite store) of its own: a run on the same records must not find them scored
            "local_dir": Path(settings.local_dir) / "runs" / topic,
            "topic_transactions": topic,
            "stream_max_offsets_per_trigger": batch,
            # history replayed from a backlog: no plausibility window against the Kafka timestamp
            "event_max_age_days": 0,
            "event_max_future_seconds": 0,
        }
    )


def _table_sink(job: Any) -> tuple[Any, dict[str, int]]:
    """The job's foreachBatch sink, counting the rows of its table."""
    seen = {"rows": 0, "batches": 0}

    def sink(df: Any, batch_id: int) -> None:
        job.write_batch(df, batch_id)
        seen["rows"] = job.table.count()
        seen["batches"] += 1

    return sink, seen


def _real_job(spark: Any, settings: Any, topic: str, batch: int, buckets: int) -> tuple[Any, Any, dict]:
    """The job's own query frame and sink on ``topic`` (outputs to fresh topics named after it)."""
    from fraudwatch_stream.job import JobOptions, StreamJob, build_query_frame

    real = _job_settings(settings, topic, batch)
    job = StreamJob(spark, real, JobOptions(state_buckets=buckets, query_name="floor-real"))
    frame = build_query_frame(spark, real, job.options)
    return (frame, *_table_sink(job))


# --------------------------------------------------------------------- onestage-real: the prototype body

#: in the worker: a module of its own (survives between tasks, like the job's module-level caches) holding
#: the terminal tables this worker built, by key
_TABLES_MODULE = "_fraudwatch_floor_terminal_tables"
TERMINAL_TABLE_SEED = 11
FRAUD_SHARE = 0.01


def _terminal_table(spec: tuple[int, str, int, int]) -> tuple[pd.Index, np.ndarray, np.ndarray]:
    """This worker's per-(terminal, UTC day) table for ``spec`` = (key, ids joined by newlines, first UTC day,
    days): the terminal index, the (terminals, days, 12) float64 array of terminal features in the model's
    column order (TERMINAL_FEATURES), and the row of a terminal the table does not hold. Built at the first
    call in a worker and kept; the values are synthetic (a cost model of the lookup, module docstring)."""
    import types

    from fraudwatch.features import TERMINAL_FEATURES, TERMINAL_WINDOWS

    holder = sys.modules.get(_TABLES_MODULE)
    if holder is None:
        holder = types.ModuleType(_TABLES_MODULE)
        holder.tables = {}  # type: ignore[attr-defined]
        sys.modules[_TABLES_MODULE] = holder
    key, ids_text, _, days = spec
    if key in holder.tables:  # type: ignore[attr-defined]
        return holder.tables[key]  # type: ignore[attr-defined,no-any-return]
    ids = ids_text.split("\n")
    rng = np.random.default_rng(TERMINAL_TABLE_SEED)
    back = 45  # UTC days of history before the first one: every window of the table is full
    rate = rng.gamma(2.0, 5.0, len(ids))[:, None]  # transactions per terminal and day, mean 10
    daily = rng.poisson(rate, (len(ids), back + days)).astype(np.float64)
    frauds = rng.binomial(daily.astype(np.int64), FRAUD_SHARE).astype(np.float64)
    zero = np.zeros((len(ids), 1))
    csum_tx, csum_fraud = np.hstack((zero, daily.cumsum(1))), np.hstack((zero, frauds.cumsum(1)))
    day = np.arange(back, back + days)  # the table's days, as columns of ``daily``

    def total(csum: np.ndarray, last: np.ndarray, n: int) -> np.ndarray:  # days last-n+1 .. last
        return np.asarray(csum[:, last + 1] - csum[:, last + 1 - n])

    columns: dict[str, np.ndarray] = {}
    for w in TERMINAL_WINDOWS:
        last = day - (-(-w.delay // 86_400) if w.delay else 0)
        count = total(csum_tx, last, w.days)
        if w.function == "risk":
            columns[w.name] = np.minimum(1.0, total(csum_fraud, last, w.days) / np.maximum(count, 1.0))
        elif w.column == "frauds":
            columns[w.name] = total(csum_fraud, last, w.days)
        else:
            columns[w.name] = count
    columns["terminal_days_since_fraud"] = np.minimum(365.0, rng.exponential(60.0, (len(ids), days)))
    columns["terminal_is_new"] = np.zeros((len(ids), days))
    assert tuple(columns) == TERMINAL_FEATURES, "the table's columns must be the model's terminal columns"
    table = np.ascontiguousarray(np.stack([columns[name] for name in TERMINAL_FEATURES], axis=2))
    new = np.zeros(len(TERMINAL_FEATURES))
    new[TERMINAL_FEATURES.index("terminal_days_since_fraud")] = 365.0
    new[TERMINAL_FEATURES.index("terminal_is_new")] = 1.0
    built = (pd.Index(ids), table, new)
    holder.tables[key] = built  # type: ignore[attr-defined]
    return built


def _onestage_group(
    key: Any,
    rows: Iterator[pd.DataFrame],
    log: Any,
    *,
    buckets: int,
    topic: str,
    max_record_bytes: int,
    bounds: Any,
    store: Any,
    config: Any,
    table_spec: tuple[int, str, int, int],
) -> pd.DataFrame:
    """One card bucket's micro-batch through the one-stage design's work (module docstring)."""
    import io

    from fraudwatch_stream.records import (
        DEAD_LETTER,
        ROW_COLUMNS,
        SCORE_SCHEMA_DDL,
        TRANSACTION,
        dead_letter_row,
        pack_features,
        parse_frame,
    )
    from fraudwatch_stream.scoring import score_transactions
    from fraudwatch_stream.stateful import PROFILE, CacheStats, card_stage

    bucket = int(key[0])
    marks = [("start", time.perf_counter())]
    raw = pd.concat(list(rows), ignore_index=True)
    marks.append(("input", time.perf_counter()))
    pdf = parse_frame(
        raw, topic_transactions=topic, max_record_bytes=max_record_bytes, buckets=buckets, bounds=bounds
    )
    kinds = pdf["kind"].to_numpy()
    # the bucket came from the raw JSON (JVM side): a transaction whose validated card_id hashes elsewhere
    # would split that card's state, so it is a dead letter (as the terminal stage does for terminals)
    for i in ((kinds == TRANSACTION) & (pdf["cb"].to_numpy() != bucket)).nonzero()[0].tolist():
        dead = dead_letter_row(raw.iloc[i], "invalid_value", "card_id: ambiguous (duplicated or re-encoded)")
        for column, value in dead.items():
            pdf.at[i, column] = value
    kinds = pdf["kind"].to_numpy()
    pieces = [pdf.loc[kinds == DEAD_LETTER, list(ROW_COLUMNS)]]
    # labels (kinds == LABEL) are not the stream's in this design: they feed the daily terminal table
    transactions = pdf.loc[kinds == TRANSACTION, list(ROW_COLUMNS)]
    marks.append(("validate", time.perf_counter()))
    card_profile: dict[str, Any] = {}
    hits, misses = CacheStats.hits, CacheStats.misses
    if len(transactions):
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured) if PROFILE else contextlib.nullcontext():
            carded = pd.concat(
                list(
                    card_stage(
                        key, iter([transactions]), log, buckets=buckets, topic_transactions=topic, store=store
                    )
                ),
                ignore_index=True,
            )
        for line in captured.getvalue().splitlines():
            with contextlib.suppress(ValueError):
                card_profile = json.loads(line).get("seconds", card_profile)
    else:
        carded = pd.DataFrame(columns=list(ROW_COLUMNS))
    marks.append(("card_stage", time.perf_counter()))
    is_tx = (carded["kind"] == TRANSACTION).to_numpy()
    pieces.append(carded[~is_tx])  # the card stage's report row (and any feature_error dead letters)
    work = carded[is_tx]
    score_names = [part.strip().split(" ")[0] for part in SCORE_SCHEMA_DDL.split(",")]
    if len(work):
        index, table, new = _terminal_table(table_spec)
        codes = index.get_indexer(work["terminal_id"])
        day = work["t_us"].to_numpy(dtype=np.int64) // 86_400_000_000 - table_spec[2]
        held = (codes >= 0) & (day >= 0) & (day < table.shape[1])
        features = np.where(held[:, None], table[np.where(held, codes, 0), np.where(held, day, 0)], new)
        work = work.assign(tfeat=pack_features(features))
        marks.append(("terminal_lookup", time.perf_counter()))
        scored = score_transactions(work, config)  # payload -> None: the scored JSON is in ``value``
        marks.append(("score", time.perf_counter()))
        pieces.append(scored.assign(channel=None, country=None))  # narrow rows
    out = pd.concat([p for p in pieces if len(p)], ignore_index=True) if any(len(p) for p in pieces) else None
    columns = [*ROW_COLUMNS, *score_names]
    if out is None:
        out = pd.DataFrame(columns=columns)
    out = out.reindex(columns=columns)  # NaN where a piece lacks a column: Arrow takes it as null
    out["score"] = out["score"].astype("float64")
    out["challenger_score"] = out["challenger_score"].astype("float64")
    marks.append(("assemble", time.perf_counter()))
    if PROFILE:
        steps = {name: round(t - marks[i][1], 5) for i, (name, t) in enumerate(marks[1:])}
        record = {
            "event": "stage_profile",
            "stage": "onestage",
            "bucket": bucket,
            "rows": len(raw),
            "transactions": len(work),
            "alerts": int(out["decision"].isin(["review", "decline"]).sum()),
            "seconds": steps,
            "card_steps": card_profile,
            "cache_hit": CacheStats.hits - hits,
            "cache_miss": CacheStats.misses - misses,
            "pid": os.getpid(),
            "at": time.time(),
        }
        print(json.dumps(record), file=sys.stderr, flush=True)
    return out


def _onestage_processor(
    settings: Any, buckets: int, config: Any, table_spec: tuple[int, str, int, int]
) -> Any:
    from pyspark.sql.streaming import StatefulProcessor

    from fraudwatch.events import EARLIEST, EventBounds
    from fraudwatch_stream.stateful import EntityLog, StoreWriter

    store = StoreWriter(settings)
    # each record is judged at its own Kafka timestamp (kafka_us), as in the job
    bounds = EventBounds.from_settings(settings, EARLIEST)
    topic, max_bytes = settings.topic_transactions, settings.max_record_bytes

    class OneStageReal(StatefulProcessor):  # type: ignore[misc]
        def init(self, handle: Any) -> None:
            self.log = EntityLog("card", handle)

        def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Any:
            yield _onestage_group(
                key,
                rows,
                self.log,
                buckets=buckets,
                topic=topic,
                max_record_bytes=max_bytes,
                bounds=bounds,
                store=store,
                config=config,
                table_spec=table_spec,
            )

        def close(self) -> None:
            return None

    return OneStageReal()


def _table_spec(values: list[bytes]) -> tuple[int, str, int, int]:
    """(key, terminal ids, first UTC day, days) of the prefilled topic's transactions."""
    import zlib

    import orjson

    terminals, days = set(), set()
    for value in values:
        record = orjson.loads(value)
        terminals.add(record["terminal_id"])
        days.add(int(datetime.fromisoformat(record["event_time"]).timestamp()) // 86_400)
    ids = "\n".join(sorted(terminals))
    first = min(days)
    return zlib.crc32(ids.encode()) ^ first, ids, first, max(days) - first + 1


def _onestage_real_job(
    spark: Any, settings: Any, topic: str, batch: int, buckets: int, values: list[bytes]
) -> tuple[Any, Any, dict[str, int]]:
    """The one-stage prototype's query on ``topic`` and the job's own sink (outputs to fresh topics)."""
    from pyspark.sql import functions as F

    from fraudwatch_stream.job import JobOptions, StreamJob, model_config
    from fraudwatch_stream.records import ROW_SCHEMA_DDL, SCORE_SCHEMA_DDL

    real = _job_settings(settings, topic, batch)
    job = StreamJob(spark, real, JobOptions(state_buckets=buckets, query_name="floor-onestage-real"))
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", real.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", batch)
        .option("failOnDataLoss", "true")
        .load()
    )
    card_id = F.get_json_object(F.col("value").cast("string"), "$.card_id")
    keyed = raw.select(
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_micros("timestamp").alias("kafka_us"),
        F.pmod(F.crc32(F.coalesce(card_id, F.col("offset").cast("string")).cast("binary")), F.lit(buckets))
        .cast("int")
        .alias("bucket"),
    )
    processor = _onestage_processor(real, buckets, model_config(real), _table_spec(values))
    frame = keyed.groupBy("bucket").transformWithStateInPandas(
        processor, ROW_SCHEMA_DDL + ", " + SCORE_SCHEMA_DDL, "Append", "None"
    )
    return (frame, *_table_sink(job))


# --------------------------------------------------------------------------- loadgen: generator + broker


def _bench_stream_module() -> Any:
    """bench/bench_stream.py as a module (once): its load generator, and its loader of scripts/services.py."""
    if "fraudwatch_bench_stream" in sys.modules:
        return sys.modules["fraudwatch_bench_stream"]
    spec = importlib.util.spec_from_file_location(
        "fraudwatch_bench_stream", ROOT / "bench" / "bench_stream.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fraudwatch_bench_stream"] = module
    spec.loader.exec_module(module)
    return module


def _services_module() -> Any:
    """scripts/services.py (free ports, starting and stopping the broker), through bench_stream's loader."""
    return _bench_stream_module()._services_module()


def run_loadgen(settings: Any, rate: int, seconds: float) -> dict[str, Any]:
    """CPU per record of make bench-stream's load generator and consumer, and of the broker (module doc)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    bench_stream = _bench_stream_module()
    topic = f"floor-loadgen-{time.time_ns()}"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(topic, settings.topic_partitions, 1)]).values():
        future.result(timeout=30)
    target = settings.model_copy(update={"topic_transactions": topic, "topic_scored": topic})
    load0 = os.getloadavg()[0]
    consumer = bench_stream.Scored(target)
    sampler = CpuSampler()
    cpu0, t0 = sampler.snapshot(), time.monotonic()
    try:
        sent = bench_stream.produce_at(
            target, rate, seconds, "loadgen", np.random.default_rng(7), 50_000, 10_000
        )
        produced = time.monotonic() - t0
        deadline = time.monotonic() + 60
        while len(consumer.seen) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu1, t1 = sampler.snapshot(), time.monotonic()
        consumed = len(consumer.seen)
    finally:
        consumer.close()
    cpu = CpuSampler.diff(cpu1, cpu0)
    n = len(sent)
    return {
        "variant": "loadgen",
        "records_produced": n,
        "records_consumed": consumed,
        "target_eps": rate,
        "produced_eps": round(n / produced, 1),
        "seconds": round(t1 - t0, 2),
        "cpu_seconds": cpu,
        "cpu_us_per_record": {k: round(v / n * 1e6, 1) for k, v in cpu.items() if k != "processes_exited"},
        "load_avg_1m": [load0, os.getloadavg()[0]],
    }


def profile_summary(log: Path, start: float, end: float) -> dict[str, Any]:
    """The ``onestage`` stage_profile lines of ``log`` within [start, end] (unix seconds), summed: wall µs
    per record of each step (over all groups; two groups run at once on 2 cores)."""
    steps: dict[str, float] = {}
    card: dict[str, float] = {}
    rows = groups = alerts = hits = misses = 0
    for line in log.read_text(errors="replace").splitlines():
        if '"stage": "onestage"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line[line.index("{") :])
            if not start <= record["at"] <= end:
                continue
            rows += int(record["rows"])
            alerts += int(record.get("alerts", 0))
            hits += int(record.get("cache_hit", 0))
            misses += int(record.get("cache_miss", 0))
            groups += 1
            for name, seconds in record["seconds"].items():
                steps[name] = steps.get(name, 0.0) + seconds
            for name, seconds in (record.get("card_steps") or {}).items():
                card[name] = card.get(name, 0.0) + seconds
    if not rows:
        return {}
    return {
        "groups": groups,
        "rows": rows,
        "alert_share": round(alerts / rows, 4),
        "bucket_cache": {"hits": hits, "misses": misses},
        "wall_us_per_record": {k: round(v / rows * 1e6, 1) for k, v in steps.items()},
        "card_stage_wall_us_per_record": {k: round(v / rows * 1e6, 1) for k, v in card.items()},
    }


def _measure(
    spark: Any, settings: Any, variant: str, n: int, batch: int, frame: Any, sink: Any, seen: dict
) -> dict[str, Any]:
    """Run ``frame`` into ``sink`` on a backlog; records/s and CPU per process after two warm-up batches."""
    checkpoint = Path(settings.local_dir) / "checkpoints" / f"{variant.replace('+', '-')}-{time.time_ns()}"
    sampler = CpuSampler()
    query = (
        frame.writeStream.queryName(f"floor-{variant.replace('+', '-')}")
        .option("checkpointLocation", str(checkpoint))
        .trigger(processingTime="0 seconds")
        .foreachBatch(sink)
        .start()
    )
    # warm-up: the first batches pay worker start-up and class loading; measure from the 3rd batch on
    warm_rows = 2 * batch
    deadline = time.monotonic() + 900
    while seen["rows"] < warm_rows and time.monotonic() < deadline and query.exception() is None:
        time.sleep(0.05)
    cpu0, rows0, t0, unix0 = sampler.snapshot(), seen["rows"], time.monotonic(), time.time()
    load0 = os.getloadavg()[0]
    while seen["rows"] < n and time.monotonic() < deadline and query.exception() is None:
        time.sleep(0.05)
    cpu1, rows1, t1, unix1 = sampler.snapshot(), seen["rows"], time.monotonic(), time.time()
    progress = [p for p in query.recentProgress][-5:]
    query.stop()
    if query.exception() is not None:
        raise RuntimeError(f"floor query failed: {query.exception()}")
    measured = rows1 - rows0
    cpu = CpuSampler.diff(cpu1, cpu0)
    wall = t1 - t0
    return {
        "variant": variant,
        "records_measured": measured,
        "seconds": round(wall, 2),
        "records_per_second": round(measured / wall, 1) if wall > 0 else None,
        "cpu_seconds": cpu,
        "cpu_us_per_record": {
            k: round(v / measured * 1e6, 1) for k, v in cpu.items() if k != "processes_exited"
        }
        if measured
        else {},
        "cpu_us_per_record_total": round(
            sum(v for k, v in cpu.items() if k != "processes_exited") / measured * 1e6, 1
        )
        if measured
        else None,
        "batches": seen["batches"],
        "mean_batch_seconds": round(wall / max(1, seen["batches"] - 2), 3),
        "last_progress_duration_ms": [p.get("durationMs") for p in progress],
        "load_avg_1m": [load0, os.getloadavg()[0]],
        "window_unix": [round(unix0, 3), round(unix1, 3)],
    }


def train_model(model_dir: Path) -> str:
    """A SQLite MLflow store under ``model_dir`` whose ``production`` alias points at a model trained with the
    training pipeline on simulated history (the ``hist_gradient_boosting`` kind, as bench_api's production);
    an existing one is reused. Returns its tracking URI."""
    from mlflow import MlflowClient

    from fraudwatch.config import Settings

    name = Settings().model_name
    model_dir = model_dir.resolve()
    model_dir.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{model_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with contextlib.suppress(Exception):
        client.get_model_version_by_alias(name, "production")
        return tracking_uri
    from fraudwatch.simulator import simulate
    from fraudwatch_training.pipeline import train_and_register

    history = simulate(31, 3000, 1000, seed=7)
    cwd = Path.cwd()
    os.chdir(model_dir)  # MLflow's default artifact root (./mlruns) lands next to the store
    try:
        trained = train_and_register(
            history.transactions,
            history.labels,
            tracking_uri,
            model_name=name,
            kinds=("hist_gradient_boosting",),
            plots=False,
            data_source="bench-stream-floor",
        )
    finally:
        os.chdir(cwd)
    client.set_registered_model_alias(name, "production", str(trained.model_version))
    return tracking_uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=150_000, help="records in the prefilled topic")
    parser.add_argument("--batch", type=int, default=10_000, help="maxOffsetsPerTrigger")
    parser.add_argument("--buckets", type=int, default=16, help="state groups per stage")
    parser.add_argument("--state-bytes", type=int, default=500, help="bytes per changed entity state")
    parser.add_argument("--variants", default="bare,state,state+narrow,state+narrow+noudf")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow holding the production model (variants real, onestage-real; default: Settings)",
    )
    parser.add_argument(
        "--train-model",
        action="store_true",
        help="train and register a production model under <local>/bench-floor-model (reused) and use it",
    )
    parser.add_argument(
        "--store", choices=("sqlite", "redis"), default=None, help="online store (default: Settings)"
    )
    parser.add_argument("--loadgen-rate", type=int, default=10_000, help="events/s of the loadgen variant")
    parser.add_argument("--loadgen-seconds", type=float, default=20.0, help="seconds of the loadgen variant")
    parser.add_argument(
        "--profile-log",
        type=Path,
        default=None,
        help="the file this run's stderr goes to (with FRAUDWATCH_STREAM_PROFILE=1): per-step timings per result",
    )
    parser.add_argument("--note", default=None, help="a note kept with the run in the results file")
    args = parser.parse_args(argv)

    from fraudwatch.config import Settings
    from fraudwatch_stream.session import build_spark

    services_mod = _services_module()
    local = ROOT / ".local" / "bench-floor"
    shutil.rmtree(local, ignore_errors=True)
    load_start = os.getloadavg()[0]
    tracking_uri = (
        train_model(ROOT / ".local" / "bench-floor-model") if args.train_model else args.tracking_uri
    )
    store = args.store or Settings().store_backend
    kafka_port, controller_port, redis_port = services_mod.free_ports(3)
    names = ["kafka", "redis"] if store == "redis" else ["kafka"]
    services = services_mod.Services(
        local,
        kafka_port=kafka_port,
        kafka_controller_port=controller_port,
        redis_port=redis_port,
        topics=[],
        required=names,
    )
    results: list[dict[str, Any]] = []
    try:
        services.up(names, required=names)
        settings = Settings(
            local_dir=local,
            kafka_bootstrap=services.kafka_bootstrap,
            stream_shuffle_partitions=2,
            store_backend=store,
            redis_url=services.redis_url,
        )
        if tracking_uri:
            settings = settings.model_copy(update={"mlflow_tracking_uri": tracking_uri})
        values = _records(args.records, cards=50_000, terminals=10_000)
        spark = build_spark("fraudwatch-floor", settings)
        for variant in args.variants.split(","):
            if variant == "loadgen":
                result = run_loadgen(settings, args.loadgen_rate, args.loadgen_seconds)
            else:
                topic = f"floor-{variant.replace('+', '-')}-{time.time_ns()}"
                _prefill(settings.kafka_bootstrap, topic, values, 2)
                result = run_variant(
                    spark,
                    settings,
                    topic,
                    args.records,
                    variant,
                    args.state_bytes,
                    args.batch,
                    args.buckets,
                    values,
                )
                if args.profile_log is not None and "onestage-real" in variant:
                    sys.stderr.flush()
                    result["profile"] = profile_summary(args.profile_log, *result["window_unix"])
            print(json.dumps(result), flush=True)
            results.append(result)
        spark.stop()
    finally:
        services.down(names)
    report = {
        "benchmark": "stream_floor",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
            "load_avg_1m_start": load_start,
        },
        "records": args.records,
        "batch": args.batch,
        "buckets": args.buckets,
        "state_bytes_per_entity": args.state_bytes,
        "store_backend": store,
        "results": results,
    }
    if args.note:
        report["note"] = args.note
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = []
    if args.out.exists():
        with contextlib.suppress(ValueError):
            runs = json.loads(args.out.read_text()).get("runs", [])
    runs.append(report)
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
