"""`make demo`: the whole pipeline on this machine, then a summary.

Services up (Kafka, MLflow, Redis and Prometheus where installed) -> simulated history -> train and promote
-> scorer API and stream job started -> live traffic (plus a few malformed records) for --duration seconds
-> wait for the stream to catch up -> summary: events produced, scored and alerted, dead letters, precision
and recall of the alerts against the simulator's ground truth (the labels topic), API and stream latency,
and where to look. The API and the stream keep running until `make down` (or stop at the end with --stop).

Every address comes from FRAUDWATCH_* settings, so the smoke test runs it on other ports in a temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
APPS = ("stream", "api")


def _services_module() -> Any:
    name = "fraudwatch_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "services.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def say(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL from settings
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL from settings
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


class Apps:
    """The API and stream processes the demo starts; PID files under <local_dir>/run/apps/."""

    def __init__(self, local_dir: Path) -> None:
        self.dir = local_dir / "run" / "apps"
        self.logs = local_dir / "logs"

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stop(name)
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        create = psutil.Process(proc.pid).create_time()
        (self.dir / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "create_time": create}))
        return proc

    def alive(self, name: str) -> psutil.Process | None:
        try:
            rec = json.loads((self.dir / f"{name}.pid").read_text())
            proc = psutil.Process(int(rec["pid"]))
            if (
                abs(proc.create_time() - float(rec["create_time"])) > 1
                or proc.status() == psutil.STATUS_ZOMBIE
            ):
                return None
            return proc
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def stop(self, name: str) -> None:
        proc = self.alive(name)
        if proc is not None:
            procs = [proc, *proc.children(recursive=True)]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            _, left = psutil.wait_procs(procs, timeout=30)
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(left, timeout=10)
            say(f"stopped {name} (pid {proc.pid})")
        (self.dir / f"{name}.pid").unlink(missing_ok=True)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def consume_all(bootstrap: str, topic: str, idle_seconds: float = 3.0) -> list[Any]:
    """Every record currently on ``topic`` (an independent consumer, confluent-kafka)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        records: list[Any] = []
        done = {p for p, end in ends.items() if end == 0}
        last = time.monotonic()
        while len(done) < len(ends) and time.monotonic() - last < idle_seconds:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            records.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return records
    finally:
        consumer.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live traffic")
    parser.add_argument("--rate", type=int, default=500, help="transactions per second")
    parser.add_argument("--days", type=int, default=60, help="days of simulated history to train on")
    parser.add_argument("--stop", action="store_true", help="stop everything at the end")
    parser.add_argument("--stop-apps", action="store_true", help="only stop the API and stream it started")
    args = parser.parse_args(argv)

    from fraudwatch.config import get_settings

    settings = get_settings()
    local = settings.local_dir.resolve()
    apps = Apps(local)
    if args.stop_apps:
        for name in APPS:
            apps.stop(name)
        return 0

    py = sys.executable
    env = {
        **os.environ,
        "FRAUDWATCH_LOCAL_DIR": str(local),
        "PYSPARK_PYTHON": py,
        "PYSPARK_DRIVER_PYTHON": py,
    }
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    started = time.monotonic()

    say("1/7 local services")
    services = _services_module().Services(local, required=("kafka", "mlflow"))
    services.up()

    data = local / "data"
    say(f"2/7 simulated history ({args.days} days) -> {data}")
    if not (data / "transactions.parquet").exists():
        subprocess.run(
            [py, "-m", "fraudwatch.simulator", "--days", str(args.days), "--out", str(data)],
            check=True,
            env=env,
        )
    else:
        say("    history already there")

    say("3/7 train, evaluate, register and promote fraud-detector")
    # validation, test and the label-delay gap are 7 days each by default; a short history gets shorter ones
    window = max(1, min(7, args.days // 7))
    split = ["--validation-days", str(window), "--test-days", str(window), "--gap-days", str(window)]
    subprocess.run(
        [py, "-m", "fraudwatch_training", "train", "--data", str(data / "transactions.parquet"), *split],
        check=True,
        env=env,
    )

    say("4/7 scorer API and stream job")
    api = f"http://{settings.api_host}:{settings.api_port}"

    def stream_ran_a_batch() -> bool:  # Spark is up and the query has completed a micro-batch
        metrics = http_text(f"http://127.0.0.1:{settings.stream_metrics_port}/metrics")
        return "\nfraudwatch_stream_last_batch_timestamp_seconds " in metrics

    apps.start("api", [py, "-m", "fraudwatch_api"], env)
    apps.start("stream", [py, "-m", "fraudwatch_stream"], env)
    # a few malformed records first: they go to the DLQ, and give the stream its first micro-batch
    from confluent_kafka import Producer

    bad = [
        b"not json",
        b'{"transaction_id": "bad-1"}',
        b'{"transaction_id":"bad-2","event_time":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"t","amount":-5}',
        b'{"transaction_id":"bad-3","event_time":"yesterday","card_id":"c","terminal_id":"t","amount":1}',
        b"x" * (settings.max_record_bytes + 10),
    ]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for raw in bad:
        producer.produce(settings.topic_transactions, raw)
    producer.flush(10)
    try:
        wait_until(lambda: http_ok(f"{api}/readyz"), 240, "the scorer API /readyz")
        wait_until(stream_ran_a_batch, 300, "the stream job's first micro-batch")
    except SystemExit:
        for name in APPS:
            print(f"--- {name} log ---\n{apps.tail(name)}", file=sys.stderr)
        raise

    say(f"5/7 live traffic: {args.rate} tx/s for {args.duration:.0f}s, labels at 1 simulated day = 1 s")
    produce = subprocess.run(
        [py, "-m", "fraudwatch_producer", "--rate", str(args.rate), "--duration", str(args.duration),
         "--label-delay-scale", "1", "--progress", "off"],
        check=True, env=env, capture_output=True, text=True,
    )  # fmt: skip
    print(produce.stdout.strip().splitlines()[-1] if produce.stdout.strip() else "", flush=True)

    say("6/7 waiting for the stream to score everything")
    sent = consume_all(settings.kafka_bootstrap, settings.topic_transactions)
    valid_ids = set()
    for m in sent:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            valid_ids.add(json.loads(m.value())["transaction_id"])
    valid_ids -= {"bad-1", "bad-2", "bad-3"}
    scored: dict[str, dict[str, Any]] = {}

    def caught_up() -> bool:
        for m in consume_all(settings.kafka_bootstrap, settings.topic_scored, idle_seconds=1.0):
            rec = json.loads(m.value())
            scored[rec["transaction_id"]] = rec
        return valid_ids <= scored.keys()

    wait_until(caught_up, 240, "the stream to score every valid transaction", interval=2.0)
    alerts = {
        json.loads(m.value())["transaction_id"]
        for m in consume_all(settings.kafka_bootstrap, settings.topic_alerts)
    }
    dlq = consume_all(settings.kafka_bootstrap, settings.topic_dlq)
    labels = {}
    for m in consume_all(settings.kafka_bootstrap, settings.topic_labels):
        rec = json.loads(m.value())
        labels[rec["transaction_id"]] = bool(rec["is_fraud"])

    labelled = [t for t in scored if t in labels]
    frauds = {t for t in labelled if labels[t]}
    flagged = {t for t in labelled if t in alerts}
    tp = len(frauds & flagged)
    precision = tp / len(flagged) if flagged else float("nan")
    recall = tp / len(frauds) if frauds else float("nan")
    latencies = [
        (datetime.fromisoformat(r["scored_at"]) - datetime.fromisoformat(r["event_time"])).total_seconds()
        * 1000
        for r in scored.values()
        if r["transaction_id"] in valid_ids
    ]

    say("7/7 API latency: 500 sequential POST /score with live cards")
    import httpx

    sample = [r for r in list(scored.values())[:500]]
    api_ms: list[float] = []
    with httpx.Client(base_url=api, timeout=5) as client:
        for r in sample:
            body = {
                k: r[k]
                for k in (
                    "transaction_id",
                    "event_time",
                    "card_id",
                    "terminal_id",
                    "amount",
                    "currency",
                    "channel",
                    "country",
                )
                if r.get(k) is not None
            }
            t0 = time.perf_counter()
            resp = client.post("/score", json=body)
            api_ms.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()

    decisions = {
        d: sum(1 for r in scored.values() if r["decision"] == d) for d in ("approve", "review", "decline")
    }
    print()
    print("fraudwatch demo summary")
    print("=" * 64)
    rows = [
        ("transactions produced (valid)", f"{len(valid_ids):,}"),
        ("malformed records sent", f"{len(bad)}"),
        ("scored (distinct transaction_id)", f"{len(scored):,}"),
        ("decisions", ", ".join(f"{k} {v:,}" for k, v in decisions.items())),
        ("alerts on fraud.alerts", f"{len(alerts):,}"),
        ("dead letters on transactions.dlq", f"{len(dlq):,}"),
        ("labelled so far (ground truth)", f"{len(labelled):,} ({len(frauds):,} frauds)"),
        ("alert precision / recall", f"{precision:.3f} / {recall:.3f}"),
        (
            "stream latency event->scored p50 / p99",
            f"{percentile(latencies, 0.5):,.0f} ms / {percentile(latencies, 0.99):,.0f} ms",
        ),
        (
            "API POST /score p50 / p99",
            f"{statistics.median(api_ms):.2f} ms / {percentile(api_ms, 0.99):.2f} ms",
        ),
        ("wall time", f"{time.monotonic() - started:,.0f} s"),
    ]
    for k, v in rows:
        print(f"  {k:<40} {v}")
    print()
    print(f"  MLflow UI        {settings.mlflow_tracking_uri}")
    print(f"  API docs         {api}/docs")
    print(f"  stream metrics   http://127.0.0.1:{settings.stream_metrics_port}/metrics")
    if any(r.service == "prometheus" and r.healthy for r in services.status()):
        print(f"  Prometheus       http://localhost:{settings.prometheus_port}")
    print(f"  logs             {apps.logs}")
    if args.stop:
        for name in APPS:
            apps.stop(name)
        services.down()
    else:
        print("\n  Services keep running: `make down` stops everything.")
    ok = len(scored) >= len(valid_ids) and len(dlq) >= len(bad)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
