"""`make demo` as a smoke test, and every Grafana panel query answered by a real Prometheus.

The demo runs in a temporary directory on free ports (every address is a FRAUDWATCH_* setting), with real
Kafka, MLflow, Redis, Prometheus, Spark, the API, the review queue and the producer. Before it starts,
earlier traffic is already on the topics (as on a machine where the demo ran before): the summary must count
this run's traffic only. While its services still run, a small producer and API load keep every component's
metrics fresh, an analyst decides one alert through the review queue's JSON API, and each dashboard query
must return data.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from monitoring import queries

ROOT = Path(__file__).resolve().parents[2]
EARLIER = 1500  # transactions already on the topic before the demo starts
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def _free_port_pair() -> int:
    """A free port p with p+1 free too (Kafka's controller listens on the next port)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _poll(check, timeout: float, interval: float = 1.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    local = tmp_path_factory.mktemp("demo") / ".local"
    kafka = _free_port_pair()
    ports = {
        name: _free_port()
        for name in ("mlflow", "redis", "prometheus", "api", "stream", "producer", "review")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDWATCH_")}
    env.update(
        {
            "FRAUDWATCH_LOCAL_DIR": str(local),
            "FRAUDWATCH_KAFKA_BOOTSTRAP": f"localhost:{kafka}",
            "FRAUDWATCH_MLFLOW_PORT": str(ports["mlflow"]),
            "FRAUDWATCH_MLFLOW_TRACKING_URI": f"http://localhost:{ports['mlflow']}",
            "FRAUDWATCH_REDIS_PORT": str(ports["redis"]),
            "FRAUDWATCH_REDIS_URL": f"redis://localhost:{ports['redis']}/0",
            "FRAUDWATCH_PROMETHEUS_PORT": str(ports["prometheus"]),
            "FRAUDWATCH_API_PORT": str(ports["api"]),
            "FRAUDWATCH_API_WORKERS": "1",
            "FRAUDWATCH_STREAM_METRICS_PORT": str(ports["stream"]),
            "FRAUDWATCH_PRODUCER_METRICS_PORT": str(ports["producer"]),
            "FRAUDWATCH_REVIEW_PORT": str(ports["review"]),
            "FRAUDWATCH_SPARK_JARS_DIR": str(ROOT / ".local" / "jars" / "spark"),
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "SPARK_LOCAL_IP": "127.0.0.1",
        }
    )
    return env


@pytest.fixture(scope="module")
def demo_run(demo_env: dict[str, str]):  # type: ignore[no-untyped-def]
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "demo.py"),
        "--duration",
        "20",
        "--days",
        "14",  # with the demo's 1,000 cards: ~35,000 transactions, ~90 frauds, 2-day validation/test windows
    ]
    try:
        # earlier traffic: the services up, and transactions on the topic before the demo starts
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "services.py"), "up", "kafka"],
            cwd=ROOT,
            env=demo_env,
            check=True,
        )
        subprocess.run(
            [sys.executable, "-m", "fraudwatch_producer", "--rate", "0", "--max-events", str(EARLIER),
             "--no-labels", "--metrics-port", "0", "--progress", "off"],
            cwd=ROOT, env=demo_env, check=True, capture_output=True,
        )  # fmt: skip
        proc = subprocess.run(cmd, cwd=ROOT, env=demo_env, capture_output=True, text=True, timeout=1200)
        yield proc
    finally:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "demo.py"), "--stop-apps"], cwd=ROOT, env=demo_env
        )
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "services.py"), "down"], cwd=ROOT, env=demo_env
        )


def _valid_transactions(bootstrap: str, topic: str) -> int:
    """Distinct transaction ids of the valid transactions on ``topic`` (an independent consumer)."""
    from confluent_kafka import Consumer, TopicPartition
    from pydantic import ValidationError

    from fraudwatch.events import Transaction

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{time.time_ns()}"})
    ids: set[str] = set()
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        left = {p for p, end in ends.items() if end > 0}
        while left:
            msg = consumer.poll(10)
            assert msg is not None, f"no record within 10 s; partitions left {left}"
            if msg.error():
                continue
            with contextlib.suppress(ValidationError):
                ids.add(Transaction.model_validate_json(msg.value()).transaction_id)
            if msg.offset() + 1 >= ends[msg.partition()]:
                left.discard(msg.partition())
    finally:
        consumer.close()
    return len(ids)


def _summary_value(out: str, label: str) -> str:
    match = re.search(rf"^\s+{re.escape(label)}\s+(.+)$", out, re.MULTILINE)
    assert match, f"{label!r} missing from the demo summary:\n{out[-3000:]}"
    return match.group(1).strip()


def test_demo_runs_end_to_end_and_prints_the_summary(
    demo_run: subprocess.CompletedProcess[str], demo_env: dict[str, str]
) -> None:
    out = demo_run.stdout + demo_run.stderr
    assert demo_run.returncode == 0, out[-5000:]
    earlier = int(_summary_value(out, "earlier traffic on the topics").split()[0].replace(",", ""))
    produced = int(_summary_value(out, "transactions produced (valid)").replace(",", ""))
    scored = int(_summary_value(out, "scored (distinct transaction_id)").replace(",", ""))
    dead = int(_summary_value(out, "dead letters on transactions.dlq").replace(",", ""))
    assert earlier == EARLIER
    # this run's traffic only: the earlier transactions are scored too (the stream reads from the earliest
    # offset) but not counted
    on_topic = _valid_transactions(demo_env["FRAUDWATCH_KAFKA_BOOTSTRAP"], "transactions")
    assert produced > 1000
    assert produced == on_topic - EARLIER
    assert scored == produced
    assert dead == 5  # exactly the demo's malformed records
    for name in ("precision at review", "recall at review", "precision at decline", "recall at decline"):
        row = _summary_value(out, name)
        assert "offline" in row, row
        assert re.search(r"within|outside|too few labels|no labels yet", row), row
    assert re.fullmatch(
        r"[\d,]+ ms / [\d,]+ ms", _summary_value(out, "stream latency Kafka->scored p50 / p99")
    )
    assert "ms" in _summary_value(out, "API POST /score p50 / p99")
    # the like-for-like reference was computed: the live scenarios regenerated, the model run on the
    # held-out history (the mix table), else the summary would say it fell back to the raw test figures
    assert "mix-adjusted offline figures unavailable" not in out, out[-5000:]
    assert "fraud mix: this run's labelled frauds vs the offline reference window" in out
    # the review queue runs on after the demo and holds at least this run's alerts (and the earlier ones)
    review = f"http://127.0.0.1:{demo_env['FRAUDWATCH_REVIEW_PORT']}"
    queue = re.fullmatch(r"([\d,]+) at (\S+)", _summary_value(out, "review queue (open alerts)"))
    assert queue and queue.group(2) == f"{review}/queue", _summary_value(out, "review queue (open alerts)")
    alerts = int(_summary_value(out, "alerts on fraud.alerts").replace(",", ""))
    open_alerts = int(queue.group(1).replace(",", ""))
    assert open_alerts >= alerts > 0
    assert httpx.get(f"{review}/api/alerts", params={"limit": 1}, timeout=10).json()["open"] == open_alerts
    # what an analyst does: open the queue in a browser, log in (no token in development), see the alerts
    with httpx.Client(base_url=review, timeout=10, follow_redirects=True) as browser:
        page = browser.post("/login", data={"analyst": "e2e-analyst", "token": ""})
        assert page.status_code == 200 and str(page.url).endswith("/queue"), page.text[:500]
        assert 'id="alerts"' in page.text and "e2e-analyst" in page.text
    # warm start: the live cards are the history's, known from their first live transaction on
    share = re.fullmatch(
        r"([\d.]+)% \(a cold start: ([\d.]+)% of the same rows\)",
        _summary_value(out, "live rows with card_is_new"),
    )
    assert share, _summary_value(out, "live rows with card_is_new")
    warm, cold = (float(v) for v in share.groups())
    assert warm < 1.0 < cold, (warm, cold)
    print(out[out.index("fraudwatch demo summary") :])  # the summary in the test report (-rA)


def test_every_dashboard_query_returns_data(
    demo_run: subprocess.CompletedProcess[str], demo_env: dict[str, str]
) -> None:
    assert demo_run.returncode == 0, (demo_run.stdout + demo_run.stderr)[-3000:]
    prom = f"http://localhost:{demo_env['FRAUDWATCH_PROMETHEUS_PORT']}"
    api = f"http://127.0.0.1:{demo_env['FRAUDWATCH_API_PORT']}"
    review = f"http://127.0.0.1:{demo_env['FRAUDWATCH_REVIEW_PORT']}"
    producer = subprocess.Popen(
        [sys.executable, "-m", "fraudwatch_producer", "--rate", "100", "--duration", "1200", "--label-delay-scale", "1",
         "--progress", "off"],
        cwd=ROOT, env=demo_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    failures: dict[str, str] = {}
    try:
        body = {
            "transaction_id": "dash-1",
            "event_time": "2026-11-28T03:00:00Z",
            "card_id": "card-000001",
            "terminal_id": "term-000001",
            "amount": 12.0,
        }
        with (
            httpx.Client(base_url=prom, timeout=10) as client,
            httpx.Client(base_url=api, timeout=10) as api_client,
        ):

            def up(job: str) -> bool:
                res = client.get("/api/v1/query", params={"query": f'up{{job="{job}"}} == 1'}).json()
                return bool(res["data"]["result"])

            jobs = ("fraudwatch-scorer-api", "fraudwatch-stream", "fraudwatch-producer", "fraudwatch-review")
            assert _poll(lambda: all(up(j) for j in jobs), 120), "Prometheus does not scrape every component"
            # an analyst decides one alert through the queue's JSON API: the decision panels get data
            alert = api_client.get(f"{review}/api/alerts", params={"limit": 1}).json()["alerts"][0]
            decided = api_client.post(
                f"{review}/api/decisions",
                json={
                    "transaction_id": alert["transaction_id"],
                    "outcome": "fraud",
                    "analyst": "e2e-analyst",
                },
            )
            assert decided.status_code == 200, decided.text
            assert decided.json()["decided_by"] == "e2e-analyst"
            all_queries = list(queries.all_dashboard_queries())
            assert all_queries

            def answered(q: queries.Query) -> bool:
                for i in range(20):  # keep API traffic flowing so rate() windows have requests
                    api_client.post("/score", json={**body, "transaction_id": f"dash-{i}"})
                res = client.get("/api/v1/query", params={"query": q.for_prometheus()}).json()
                assert res.get("status") == "success", f"{q.where}: {res.get('error')}"
                return bool(res["data"]["result"])

            for q in all_queries:
                if not _poll(lambda q=q: answered(q), 90, interval=3):
                    failures[f"{q.source}: {q.where}"] = f"no data for {q.for_prometheus()}"
    finally:
        producer.send_signal(signal.SIGTERM)
        producer.wait(timeout=60)
    assert not failures, "\n".join(f"{k}: {v}" for k, v in failures.items())
