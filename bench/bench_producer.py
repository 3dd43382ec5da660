"""Producer throughput, measured by an independent consumer (confluent-kafka) on a real broker.

Runs the `fraudwatch-produce` CLI as a subprocess at max rate and at fixed rates; a consumer in this
process counts the messages arriving on the topic and times first -> last arrival. Starts its own broker
through scripts/services.py (own directory, free ports) unless --bootstrap is given. Writes
bench/results/producer.json and the "Producer" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- producer:start -->", "<!-- producer:end -->"
sys.path.insert(0, str(ROOT / "scripts"))


def write_section(doc: Path, body: str) -> None:
    section = f"{START}\n{body.rstrip()}\n{END}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    doc.write_text(text)


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        future.result()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(n in topics and all(p.leader >= 0 for p in topics[n].partitions.values()) for n in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {names} not ready")


def measure(bootstrap: str, rate: float, events: int, labels: bool, partitions: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    tx_topic, label_topic = f"bench.transactions.{tag}", f"bench.labels.{tag}"
    create_topics(bootstrap, [tx_topic, label_topic], partitions)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"bench-{tag}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([tx_topic])
    cmd = [
        sys.executable,
        "-m",
        "fraudwatch_producer",
        "--rate",
        str(rate),
        "--max-events",
        str(events),
        "--metrics-port",
        "0",
        "--progress",
        "off",
        "--seed",
        "1",
    ]
    if not labels:
        cmd.append("--no-labels")
    env = {
        **os.environ,
        "FRAUDWATCH_KAFKA_BOOTSTRAP": bootstrap,
        "FRAUDWATCH_TOPIC_TRANSACTIONS": tx_topic,
        "FRAUDWATCH_TOPIC_LABELS": label_topic,
    }
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    count, first, last = 0, None, None
    deadline = time.monotonic() + 120 + events / max(rate, 1000)
    while count < events and time.monotonic() < deadline:
        msgs = consumer.consume(num_messages=10_000, timeout=0.5)
        if msgs:
            now = time.monotonic()
            first = first if first is not None else now
            last = now
            count += sum(1 for m in msgs if m.error() is None)
    consumer.close()
    out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"producer failed ({proc.returncode}): {err[-2000:]}")
    seconds = (last - first) if first is not None and last is not None else float("nan")
    measured = count / seconds if seconds and seconds > 0 else float("nan")
    return {
        "target_rate": rate or "max",
        "events": events,
        "labels": labels,
        "consumed": count,
        "seconds": round(seconds, 3),
        "consumer_rate": round(measured),
        "producer_summary": out.strip().splitlines()[-1] if out.strip() else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    parser.add_argument("--events", type=int, default=300_000, help="events for the max-rate run")
    parser.add_argument("--rates", default="5000,20000", help="fixed rates (15 s each)")
    parser.add_argument("--partitions", type=int, default=2)
    args = parser.parse_args()

    services = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from services import Services, free_ports  # scripts/services.py

        port, controller = free_ports(2)
        services = Services(
            Path(tempfile.mkdtemp(prefix="fw-bench-")),
            kafka_port=port,
            kafka_controller_port=controller,
            required={"kafka"},
            topics=[],
            quiet=True,
        )
        services.up(["kafka"])
        bootstrap = services.kafka_bootstrap
    try:
        runs = [measure(bootstrap, 0, args.events, labels=False, partitions=args.partitions)]
        runs.append(measure(bootstrap, 0, args.events, labels=True, partitions=args.partitions))
        for rate in (float(r) for r in args.rates.split(",") if r):
            runs.append(measure(bootstrap, rate, int(rate * 15), labels=True, partitions=args.partitions))
    finally:
        if services is not None:
            services.down()
    for r in runs:
        print(r)
    result = {
        "benchmark": "producer",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "broker": "local KRaft broker on the same machine" if services else bootstrap,
        "runs": runs,
    }
    out = ROOT / "bench" / "results" / "producer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    def target(r: dict[str, Any]) -> str:
        return "max" if r["target_rate"] == "max" else f"{r['target_rate']:,.0f}/s"

    rows = "\n".join(
        f"| {target(r)} | {'yes' if r['labels'] else 'no'} | {r['consumed']:,} | {r['seconds']:.1f} s | "
        f"{r['consumer_rate']:,} |"
        for r in runs
    )
    body = (
        "## Producer\n\n"
        f"`make bench-producer` ({result['measured_at']}, {os.cpu_count()} CPUs, broker on the same machine, "
        f"{args.partitions} partitions, acks=all, idempotent, gzip level 1). Throughput of the `transactions` "
        "topic as seen by an independent confluent-kafka consumer (messages / time from first to last "
        "arrival). With labels, as many label records follow on `labels`.\n\n"
        "| target rate | labels | transactions consumed | time | events/s (consumer) |\n|---|---|---|---|---|\n"
        + rows
        + "\n"
    )
    write_section(ROOT / "docs" / "benchmarks.md", body)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
