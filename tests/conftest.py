"""Shared fixtures: REAL local services for integration tests, started through scripts/services.py.

Contract (all session-scoped unless noted; nothing starts until a test asks for it, so unit tests start
nothing):

- ``services``            the :class:`Services` handle of this test session (own directory under
                          .local/test-services/, own ports), stopped at the end of the session.
- ``kafka_bootstrap``     "localhost:<port>" of a running broker (KRaft, auto topic creation off).
- ``mlflow_tracking_uri`` "http://localhost:<port>" of a running MLflow tracking server.
- ``redis_url``           "redis://localhost:<port>/0" of a running Redis (fails if redis-server is missing).
- ``prometheus_url``      "http://localhost:<port>" of a running Prometheus scraping the test ports
                          (fails if prometheus is missing). Scrape interval 1 s.
- ``make_settings``       (function) factory ``make_settings(*, need=("kafka", "mlflow"), topics=True,
                          **overrides) -> Settings``: environment "test", local_dir = the test's tmp_path,
                          every address pointing at the services above, UNIQUE topic names for this call
                          (created with the configured partitions when ``topics``), and free ports for the
                          API / stream / producer metrics (the ones Prometheus scrapes). The services in
                          ``need`` are started (Redis too when ``store_backend="redis"``).
- ``test_settings``       (function) ``make_settings()``.
- ``spark``               a local SparkSession (fraudwatch_stream.session.build_spark) with the Kafka
                          connector; stopped at the end of the session.

Ports are free ports picked per session, so parallel sessions (and a developer's `make up`) never collide;
set FRAUDWATCH_TEST_FIXED_PORTS=1 for the fixed set (Kafka 19092/19093, MLflow 15000, Redis 16379,
Prometheus 19090). FRAUDWATCH_TEST_KEEP_SERVICES=1 keeps the session directory (logs) afterwards; it is
also kept when tests failed, until the next session cleans it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from tests.scripts import load_script

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fraudwatch.config import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_SERVICES_DIR = ROOT / ".local" / "test-services"
FIXED_PORTS = {
    "kafka": 19092,
    "controller": 19093,
    "mlflow": 15000,
    "redis": 16379,
    "prometheus": 19090,
    "api": 18000,
    "stream": 19108,
    "producer": 19109,
}
SERVICE_FIXTURES = {"services", "kafka_bootstrap", "mlflow_tracking_uri", "redis_url", "prometheus_url"}
SERVICE_FIXTURES |= {"make_settings", "test_settings", "spark"}


# scripts/services.py as module ``fraudwatch_services`` (no clash with the services/ directory)
svc = load_script("scripts/services.py", "fraudwatch_services")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # a test that uses a real service is an integration test, marked or not (so -m "not integration" works)
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _owner_alive(session_dir: Path) -> bool:
    try:
        owner = json.loads((session_dir / "owner.json").read_text())
        proc = psutil.Process(int(owner["pid"]))
        return abs(proc.create_time() - float(owner["create_time"])) < 1.0
    except (OSError, ValueError, KeyError, psutil.Error):
        return False


def _clean_stale_sessions() -> None:
    """Stop and remove what crashed or finished earlier sessions left behind (their pytest is gone)."""
    if not TEST_SERVICES_DIR.is_dir():
        return
    for old in TEST_SERVICES_DIR.iterdir():
        if not old.is_dir() or not old.name.startswith("session-") or _owner_alive(old):
            continue
        with contextlib.suppress(Exception):
            svc.Services(old, jars_dir=ROOT / ".local" / "jars", quiet=True).down()
        shutil.rmtree(old, ignore_errors=True)


class TestServices:
    """The session's services plus the extra ports the apps under test listen on."""

    __test__ = False

    def __init__(self, session_dir: Path) -> None:
        if os.environ.get("FRAUDWATCH_TEST_FIXED_PORTS") == "1":
            ports = dict(FIXED_PORTS)
        else:
            ports = dict(zip(FIXED_PORTS, svc.free_ports(len(FIXED_PORTS)), strict=True))
        self.ports = ports
        self.session_dir = session_dir
        self.api_port = ports["api"]
        self.stream_metrics_port = ports["stream"]
        self.producer_metrics_port = ports["producer"]
        self.handle = svc.Services(
            session_dir,
            kafka_port=ports["kafka"],
            kafka_controller_port=ports["controller"],
            mlflow_port=ports["mlflow"],
            redis_port=ports["redis"],
            prometheus_port=ports["prometheus"],
            jars_dir=ROOT / ".local" / "jars",
            scrape_targets={
                "fraudwatch-scorer-api": [f"localhost:{ports['api']}"],
                "fraudwatch-stream": [f"localhost:{ports['stream']}"],
                "fraudwatch-producer": [f"localhost:{ports['producer']}"],
            },
            scrape_interval="1s",
            required=svc.ALL_SERVICES,  # CI installs redis and prometheus: missing binaries are failures
            start_timeout=120.0,
            quiet=True,
        )
        self._template = TEST_SERVICES_DIR / f"mlflow-template-{_mlflow_version()}.db"

    def __getattr__(self, name: str) -> Any:  # the Services API: ensure, up, down, status, create_topics...
        return getattr(self.handle, name)

    def require(self, *names: str) -> None:
        """Start ``names`` (those not yet healthy) together; raise loudly when one cannot run."""
        todo = [n for n in names if not self.handle.healthy(n)]
        if not todo:
            return
        fresh_mlflow = "mlflow" in todo and not (self.handle.service_dir("mlflow") / "mlflow.db").exists()
        if fresh_mlflow and self._template.exists():
            # an already-migrated empty database: skips MLflow's schema migrations (several seconds)
            (self.handle.service_dir("mlflow")).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self._template, self.handle.service_dir("mlflow") / "mlflow.db")
        self.handle.ensure(*todo)
        if fresh_mlflow and not self._template.exists():
            self._save_template()

    def _save_template(self) -> None:
        tmp = self._template.with_suffix(f".{os.getpid()}.tmp")
        with contextlib.suppress(sqlite3.Error, OSError):
            src = sqlite3.connect(self.handle.service_dir("mlflow") / "mlflow.db")
            dst = sqlite3.connect(tmp)
            with dst:
                src.backup(dst)
            src.close()
            dst.close()
            tmp.replace(self._template)
        tmp.unlink(missing_ok=True)


def _mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


@pytest.fixture(scope="session")
def services(request: pytest.FixtureRequest) -> Iterator[TestServices]:
    TEST_SERVICES_DIR.mkdir(parents=True, exist_ok=True)
    _clean_stale_sessions()
    session_dir = TEST_SERVICES_DIR / f"session-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    session_dir.mkdir()
    me = psutil.Process()
    (session_dir / "owner.json").write_text(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    handle = TestServices(session_dir)
    try:
        yield handle
    finally:
        stopped = handle.handle.down()
        left = [p for p in stopped if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        failed = request.session.testsfailed > 0
        if os.environ.get("FRAUDWATCH_TEST_KEEP_SERVICES") != "1" and not failed:
            shutil.rmtree(session_dir, ignore_errors=True)
        assert not left, f"test services left processes behind: {left}"


@pytest.fixture(scope="session")
def kafka_bootstrap(services: TestServices) -> str:
    services.require("kafka")
    return str(services.kafka_bootstrap)


@pytest.fixture(scope="session")
def mlflow_tracking_uri(services: TestServices) -> str:
    services.require("mlflow")
    return str(services.mlflow_tracking_uri)


@pytest.fixture(scope="session")
def redis_url(services: TestServices) -> str:
    services.require("redis")
    return str(services.redis_url)


@pytest.fixture(scope="session")
def prometheus_url(services: TestServices) -> str:
    services.require("prometheus")
    return str(services.prometheus_url)


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-zA-Z0-9-]+", "-", text).strip("-")[:limit].strip("-") or "t"


@pytest.fixture
def make_settings(
    services: TestServices, request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[..., Settings]:
    from fraudwatch.config import Settings

    def factory(
        *, need: tuple[str, ...] = ("kafka", "mlflow"), topics: bool = True, **overrides: Any
    ) -> Settings:
        wanted = list(need)
        if overrides.get("store_backend") == "redis" and "redis" not in wanted:
            wanted.append("redis")
        if topics and "kafka" not in wanted:
            wanted.append("kafka")
        services.require(*wanted)
        suffix = f"{_slug(request.node.name)}-{uuid.uuid4().hex[:6]}"
        defaults = Settings.model_fields
        values: dict[str, Any] = {
            "environment": "test",
            "local_dir": tmp_path,
            "kafka_bootstrap": services.kafka_bootstrap,
            "topic_partitions": services.topic_partitions,
            "mlflow_tracking_uri": services.mlflow_tracking_uri,
            "mlflow_port": services.mlflow_port,
            "redis_url": services.redis_url,
            "redis_port": services.redis_port,
            "prometheus_port": services.prometheus_port,
            "api_port": services.api_port,
            "stream_metrics_port": services.stream_metrics_port,
            "producer_metrics_port": services.producer_metrics_port,
        }
        for field in ("topic_transactions", "topic_labels", "topic_scored", "topic_alerts", "topic_dlq"):
            values[field] = f"{defaults[field].default}.{suffix}"
        values.update(overrides)
        settings = Settings(**values)
        if topics:
            services.create_topics(settings.all_topics, settings.topic_partitions)
        return settings

    return factory


@pytest.fixture
def test_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def spark(services: TestServices) -> Iterator[SparkSession]:
    from fraudwatch.config import Settings
    from fraudwatch_stream.session import build_spark

    settings = Settings(environment="test", local_dir=services.session_dir / "spark-driver")
    session = build_spark("fraudwatch-tests", settings)
    try:
        yield session
    finally:
        session.stop()
