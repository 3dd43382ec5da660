"""The local-services machinery against the real services (scripts/services.py, tests/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.scripts import load_script

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# the same module object tests/conftest.py loaded (scripts/ is not a package)
svc = load_script("scripts/services.py", "fraudwatch_services")


def _get(url: str) -> tuple[int, bytes]:
    response = httpx.get(url, timeout=10)
    return response.status_code, response.content


def _poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not true after {timeout:.0f}s (last: {last!r})")


# --------------------------------------------------------------------------- MLflow
def test_mlflow_health_and_tracking_round_trip(mlflow_tracking_uri: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    status, body = _get(f"{mlflow_tracking_uri}/health")
    assert (status, body.strip()) == (200, b"OK")
    # the security middleware accepts clients that address the server as 127.0.0.1 too
    port = mlflow_tracking_uri.rsplit(":", 1)[1]
    assert _get(f"http://127.0.0.1:{port}/health")[0] == 200

    client = MlflowClient(tracking_uri=mlflow_tracking_uri)
    name = f"services-test-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    for step, value in enumerate([0.5, 0.25, 0.125]):
        client.log_metric(run.info.run_id, "loss", value, step=step)
    artifact = tmp_path / "note.txt"
    artifact.write_text("proxied artifact store works")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)

    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, 0.25), (2, 0.125)]
    assert client.get_experiment_by_name(name).experiment_id == experiment_id
    # artifacts go through the server (mlflow-artifacts:/), not to a path the client must share
    assert client.get_run(run.info.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    downloaded = client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "down"))
    assert Path(downloaded).read_text() == "proxied artifact store works"


def test_mlflow_runs_no_job_runner(services: Any, mlflow_tracking_uri: str) -> None:
    pid = services.recorded_pids()["mlflow"]
    tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    commands = [" ".join(p.cmdline()) for p in tree]
    assert not [c for c in commands if "huey" in c or "job" in c.lower()], commands


# --------------------------------------------------------------------------- Kafka
def test_kafka_has_the_topics_with_configured_partitions(services: Any, kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    expected = services.topics  # from fraudwatch.config.Settings
    assert len(expected) == 5
    for topic in expected:
        assert topic in metadata.topics, f"{topic} missing: {sorted(metadata.topics)}"
        assert len(metadata.topics[topic].partitions) == services.topic_partitions

    broker = ConfigResource(ConfigResource.Type.BROKER, str(next(iter(metadata.brokers))))
    configs = admin.describe_configs([broker])[broker].result()
    assert configs["auto.create.topics.enable"].value == "false"


def test_kafka_does_not_create_topics_on_produce(kafka_bootstrap: str) -> None:
    from confluent_kafka import KafkaError, Producer
    from confluent_kafka.admin import AdminClient

    topic = f"never-created-{uuid.uuid4().hex[:8]}"
    errors: list[KafkaError] = []
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "message.timeout.ms": 3000})
    producer.produce(topic, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(15)
    assert len(errors) == 1
    assert errors[0] is not None, "a produce to a missing topic must fail"
    assert errors[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT)
    assert topic not in AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics


def test_make_settings_gives_each_call_its_own_topics(make_settings: Any, kafka_bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    first = make_settings(need=("kafka",))
    second = make_settings(need=("kafka",), topic_partitions=3)
    assert set(first.all_topics).isdisjoint(second.all_topics)
    assert first.kafka_bootstrap == kafka_bootstrap
    assert first.environment == "test"
    topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
    for name in first.all_topics:
        assert len(topics[name].partitions) == first.topic_partitions
    for name in second.all_topics:
        assert len(topics[name].partitions) == 3


def test_up_is_idempotent(services: Any, kafka_bootstrap: str) -> None:
    before = services.recorded_pids()["kafka"]
    services.up(["kafka"])
    assert services.recorded_pids()["kafka"] == before
    assert services.healthy("kafka")


# --------------------------------------------------------------------------- Redis, Prometheus
def test_redis_answers(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    assert client.ping() is True
    key = f"services-test:{uuid.uuid4().hex}"
    client.set(key, b"1", ex=30)
    assert client.get(key) == b"1"
    # no persistence: the dev/test instance never writes snapshots or an AOF
    assert client.config_get("save")["save"] == ""
    assert client.config_get("appendonly")["appendonly"] == "no"


def test_prometheus_is_ready_and_scrapes_itself(services: Any, prometheus_url: str) -> None:
    assert _get(f"{prometheus_url}/-/ready")[0] == 200

    def self_scraped() -> bool:
        response = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": 'up{job="prometheus"}'})
        result = response.json()["data"]["result"]
        return bool(result) and result[0]["value"][1] == "1"

    _poll(self_scraped, 30, "Prometheus scraping itself")
    _, body = _get(f"{prometheus_url}/api/v1/targets")
    scraped = {t["labels"]["job"]: t["scrapeUrl"] for t in json.loads(body)["data"]["activeTargets"]}
    assert scraped["fraudwatch-scorer-api"] == f"http://localhost:{services.api_port}/metrics"
    assert scraped["fraudwatch-stream"] == f"http://localhost:{services.stream_metrics_port}/metrics"
    assert scraped["fraudwatch-producer"] == f"http://localhost:{services.producer_metrics_port}/metrics"


# --------------------------------------------------------------------------- CLI, failures, down
def test_status_cli_reports_the_running_services(services: Any, kafka_bootstrap: str) -> None:
    env = {
        **os.environ,
        "FRAUDWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "FRAUDWATCH_MLFLOW_PORT": str(services.mlflow_port),
        "FRAUDWATCH_REDIS_PORT": str(services.redis_port),
        "FRAUDWATCH_PROMETHEUS_PORT": str(services.prometheus_port),
    }
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "services.py"),
            "--local-dir",
            str(services.local_dir),
            "status",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    kafka_row = next(line for line in out.splitlines() if line.startswith("kafka"))
    assert str(services.recorded_pids()["kafka"]) in kafka_row
    assert str(services.kafka_port) in kafka_row
    assert " yes " in kafka_row


def test_missing_binaries_are_reported_not_fatal_unless_required(tmp_path: Path, monkeypatch: Any) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    assert java
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    ports = svc.free_ports(5)
    handle = svc.Services(
        tmp_path / "svc",
        kafka_port=ports[0],
        kafka_controller_port=ports[1],
        mlflow_port=ports[2],
        redis_port=ports[3],
        prometheus_port=ports[4],
        jars_dir=ROOT / ".local" / "jars",
        quiet=True,
    )
    rows = {row.service: row for row in handle.status()}
    assert rows["redis"].state == "not installed"
    assert rows["prometheus"].state == "not installed"
    assert rows["kafka"].installed
    assert rows["kafka"].state == "stopped"
    with pytest.raises(
        svc.ServiceError, match="redis is required but cannot run: redis-server is not on PATH"
    ):
        handle.up(["redis"])
    assert handle.recorded_pids() == {}


def test_bad_prometheus_config_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "prometheus.yml"
    bad.write_text("scrape_configs:\n  - job_name: x\n    scrape_interval: not-a-duration\n")
    handle = svc.Services(
        tmp_path / "svc",
        prometheus_port=svc.free_ports(1)[0],
        prometheus_config=bad,
        jars_dir=ROOT / ".local" / "jars",
        quiet=True,
    )
    with pytest.raises(svc.ServiceError, match="promtool rejects"):
        handle.ensure("prometheus")
    assert handle.recorded_pids() == {}


@pytest.mark.slow
def test_down_leaves_no_process_behind(tmp_path: Path) -> None:
    ports = svc.free_ports(5)
    handle = svc.Services(
        tmp_path / "second",
        kafka_port=ports[0],
        kafka_controller_port=ports[1],
        mlflow_port=ports[2],
        redis_port=ports[3],
        prometheus_port=ports[4],
        jars_dir=ROOT / ".local" / "jars",
        scrape_targets={},
        required=svc.ALL_SERVICES,
        start_timeout=120.0,
        quiet=True,
    )
    try:
        assert handle.up() == list(svc.ALL_SERVICES)
        recorded = handle.recorded_pids()
        assert set(recorded) == set(svc.ALL_SERVICES)
        every_pid = set(recorded.values())
        for pid in recorded.values():
            every_pid |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        assert len(every_pid) > len(recorded), "MLflow runs its server in a child process"
        assert all(row.healthy for row in handle.status())
    finally:
        stopped = handle.down()
    assert every_pid <= set(stopped)
    alive = [p for p in every_pid if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert alive == []
    assert handle.recorded_pids() == {}
    assert not any(svc._port_open(p) for p in ports)
    assert handle.down() == []  # a second down is a no-op


# --------------------------------------------------------------------------- Spark + Kafka connector
def test_spark_reads_kafka_through_the_connector_jars(spark: Any, make_settings: Any) -> None:
    from confluent_kafka import Producer

    settings = make_settings(need=("kafka",))
    topic = settings.topic_transactions
    records = [{"transaction_id": f"t{i}", "card_id": f"c{i % 3}", "amount": i * 1.5} for i in range(20)]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for record in records:
        producer.produce(topic, json.dumps(record).encode(), key=record["card_id"].encode())
    assert producer.flush(30) == 0

    jars = spark.sparkContext.getConf().get("spark.jars")
    assert sorted(Path(j).name.split("-")[0] for j in jars.split(",")) == [
        "commons",
        "kafka",
        "spark",
        "spark",
    ]
    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition")
    )
    rows = frame.collect()
    got = sorted((json.loads(r["value"]) for r in rows), key=lambda r: r["transaction_id"])
    assert got == sorted(records, key=lambda r: r["transaction_id"])
    assert {r["key"] for r in rows} == {"c0", "c1", "c2"}
    assert {r["partition"] for r in rows} <= set(range(settings.topic_partitions))
