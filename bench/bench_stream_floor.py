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

Starts its own Kafka broker (scripts/services.py, free ports, under <local_dir>/bench-floor). Writes
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


def _services_module() -> Any:
    spec = importlib.util.spec_from_file_location("fraudwatch_services", ROOT / "scripts" / "services.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fraudwatch_services"] = module
    spec.loader.exec_module(module)
    return module


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
    """CPU seconds of this process (driver), its JVM child and the Python workers, between two marks.

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
                if proc.pid == self.me.pid:
                    role = "driver_python"
                elif proc.name() == "java":
                    role = "jvm"
                elif "pyspark.daemon" in " ".join(proc.cmdline()):
                    role = "python_workers"
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


def run_variant(
    spark: Any, settings: Any, topic: str, n: int, variant: str, state_bytes: int, batch: int, buckets: int
) -> dict[str, Any]:
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from fraudwatch_stream.records import SCORE_SCHEMA_DDL

    row_schema = _floor_schema()[0]
    flags = set(variant.split("+"))
    unknown = flags - {"bare", "state", "narrow", "noudf", "onestage", "real"}
    if unknown:
        raise ValueError(f"unknown variant flags {sorted(unknown)}")
    if "real" in flags:
        return _measure(
            spark, settings, variant, n, batch, *_real_job(spark, settings, topic, batch, buckets)
        )
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


def _real_job(spark: Any, settings: Any, topic: str, batch: int, buckets: int) -> tuple[Any, Any, dict]:
    """The job's own query frame and sink on ``topic`` (outputs to fresh topics named after it)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    from fraudwatch_stream.job import JobOptions, StreamJob, build_query_frame

    names = {f"topic_{k}": f"{topic}.{k}" for k in ("labels", "scored", "alerts", "dlq")}
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in names.values()]).values():
        future.result(timeout=30)
    real = settings.model_copy(
        update={
            **names,
            "topic_transactions": topic,
            "stream_max_offsets_per_trigger": batch,
            # history replayed from a backlog: no plausibility window against the Kafka timestamp
            "event_max_age_days": 0,
            "event_max_future_seconds": 0,
        }
    )
    job = StreamJob(spark, real, JobOptions(state_buckets=buckets, query_name="floor-real"))
    frame = build_query_frame(spark, real, job.options)
    seen = {"rows": 0, "batches": 0}

    def sink(df: Any, batch_id: int) -> None:
        job.write_batch(df, batch_id)
        seen["rows"] = job.table.count()
        seen["batches"] += 1

    return frame, sink, seen


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
    cpu0, rows0, t0 = sampler.snapshot(), seen["rows"], time.monotonic()
    while seen["rows"] < n and time.monotonic() < deadline and query.exception() is None:
        time.sleep(0.05)
    cpu1, rows1, t1 = sampler.snapshot(), seen["rows"], time.monotonic()
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
    }


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
        help="MLflow holding the production model (variant real; default: Settings)",
    )
    args = parser.parse_args(argv)

    from fraudwatch.config import Settings
    from fraudwatch_stream.session import build_spark

    services_mod = _services_module()
    local = ROOT / ".local" / "bench-floor"
    shutil.rmtree(local, ignore_errors=True)
    kafka_port, controller_port = services_mod.free_ports(2)
    services = services_mod.Services(
        local, kafka_port=kafka_port, kafka_controller_port=controller_port, topics=[], required=["kafka"]
    )
    services.up(["kafka"], required=["kafka"])
    results: list[dict[str, Any]] = []
    try:
        settings = Settings(
            local_dir=local, kafka_bootstrap=services.kafka_bootstrap, stream_shuffle_partitions=2
        )
        if args.tracking_uri:
            settings = settings.model_copy(update={"mlflow_tracking_uri": args.tracking_uri})
        values = _records(args.records, cards=50_000, terminals=10_000)
        spark = build_spark("fraudwatch-floor", settings)
        for variant in args.variants.split(","):
            topic = f"floor-{variant.replace('+', '-')}-{time.time_ns()}"
            _prefill(settings.kafka_bootstrap, topic, values, 2)
            result = run_variant(
                spark, settings, topic, args.records, variant, args.state_bytes, args.batch, args.buckets
            )
            print(json.dumps(result), flush=True)
            results.append(result)
        spark.stop()
    finally:
        services.down()
    report = {
        "benchmark": "stream_floor",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "records": args.records,
        "batch": args.batch,
        "buckets": args.buckets,
        "state_bytes_per_entity": args.state_bytes,
        "results": results,
    }
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
