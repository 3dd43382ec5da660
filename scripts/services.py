"""Start, stop and inspect the local fraudwatch services without Docker.

    python scripts/services.py up [kafka mlflow redis prometheus]
    python scripts/services.py down
    python scripts/services.py status

Kafka (KRaft, one combined broker+controller) runs from the jars `make setup` resolved into
<local_dir>/jars/kafka; MLflow is the tracking server from the virtualenv (SQLite + proxied local
artifacts); Redis and Prometheus run when their binaries are installed ("not installed" otherwise, unless
required). Every service lives in <local_dir>/<name>/ (config, data, log); PID files go to <local_dir>/run/.
Each process runs in its own session, so `down` can stop the whole process group and verify by PID that
nothing is left.

Tests use the same machinery through :class:`Services` (see tests/conftest.py), on other ports and in another
directory, so they never collide with a developer's `make up`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
ALL_SERVICES = ("kafka", "mlflow", "redis", "prometheus")
#: services that must come up; the others are skipped when their binary is missing
ALWAYS_REQUIRED = frozenset({"kafka", "mlflow"})
LOG_TAIL_LINES = 40


class ServiceError(RuntimeError):
    """A service could not be started, stopped or configured."""


@dataclass(frozen=True)
class StatusRow:
    service: str
    installed: bool
    pid: int | None
    port: int
    healthy: bool

    @property
    def state(self) -> str:
        if not self.installed:
            return "not installed"
        if self.healthy:
            return "healthy"
        return "running, unhealthy" if self.pid else "stopped"


def _wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """Poll ``check`` until it returns True or ``timeout`` seconds pass (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local http only)
            return bool(200 <= response.status < 300)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.exists():
        return f"(no log at {path})"
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64_000))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _kafka_cluster_id() -> str:
    # Kafka's Uuid: 16 random bytes, URL-safe base64 without padding, never starting with "-".
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class Services:
    """The local services rooted at ``local_dir``; every port can be overridden (tests use other ports).

    Defaults come from :class:`fraudwatch.config.Settings` (FRAUDWATCH_* environment variables).
    """

    def __init__(
        self,
        local_dir: Path | str | None = None,
        *,
        kafka_port: int | None = None,
        kafka_controller_port: int | None = None,
        mlflow_port: int | None = None,
        redis_port: int | None = None,
        prometheus_port: int | None = None,
        jars_dir: Path | str | None = None,
        topics: Sequence[str] | None = None,
        topic_partitions: int | None = None,
        scrape_targets: Mapping[str, Sequence[str]] | None = None,
        prometheus_config: Path | str | None = None,
        scrape_interval: str = "5s",
        required: Iterable[str] = ALWAYS_REQUIRED,
        start_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        quiet: bool = False,
    ) -> None:
        from fraudwatch.config import Settings

        settings = Settings()
        self.local_dir = Path(local_dir if local_dir is not None else settings.local_dir).resolve()
        _, _, default_kafka_port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
        self.kafka_port = kafka_port or int(default_kafka_port)
        self.kafka_controller_port = kafka_controller_port or self.kafka_port + 1
        self.mlflow_port = mlflow_port or settings.mlflow_port
        self.redis_port = redis_port or settings.redis_port
        self.prometheus_port = prometheus_port or settings.prometheus_port
        self.topics = tuple(topics if topics is not None else settings.all_topics)
        self.topic_partitions = topic_partitions or settings.topic_partitions
        if jars_dir is None:
            candidates = [self.local_dir / "jars", ROOT / ".local" / "jars"]
            jars_dir = next((c for c in candidates if (c / "kafka").is_dir()), candidates[0])
        self.jars_dir = Path(jars_dir).resolve()
        self._explicit_targets = scrape_targets is not None
        self.scrape_targets: dict[str, list[str]] = (
            {job: list(t) for job, t in scrape_targets.items()}
            if scrape_targets is not None
            else {
                # the job names of monitoring/prometheus/prometheus.yml (dashboards and rules use them)
                "fraudwatch-scorer-api": [f"localhost:{settings.api_port}"],
                "fraudwatch-stream": [f"localhost:{settings.stream_metrics_port}"],
                "fraudwatch-producer": [f"localhost:{settings.producer_metrics_port}"],
                "fraudwatch-review": [f"localhost:{settings.review_port}"],
            }
        )
        self.prometheus_config = Path(prometheus_config) if prometheus_config else None
        self.scrape_interval = scrape_interval
        self.required = frozenset(required)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.quiet = quiet
        self.run_dir = self.local_dir / "run"
        unknown = self.required - set(ALL_SERVICES)
        if unknown:
            raise ServiceError(f"unknown services {sorted(unknown)}; known: {', '.join(ALL_SERVICES)}")

    # ------------------------------------------------------------------ addresses
    @property
    def kafka_bootstrap(self) -> str:
        return f"localhost:{self.kafka_port}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"http://localhost:{self.mlflow_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://localhost:{self.redis_port}/0"

    @property
    def prometheus_url(self) -> str:
        return f"http://localhost:{self.prometheus_port}"

    def port(self, name: str) -> int:
        return {
            "kafka": self.kafka_port,
            "mlflow": self.mlflow_port,
            "redis": self.redis_port,
            "prometheus": self.prometheus_port,
        }[name]

    def service_dir(self, name: str) -> Path:
        return self.local_dir / name

    def log_path(self, name: str) -> Path:
        return self.service_dir(name) / f"{name}.log"

    def _pid_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    # ------------------------------------------------------------------ installed / health
    def _mlflow_cmd(self) -> list[str]:
        exe = Path(sys.executable).parent / "mlflow"
        return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]

    def missing(self, name: str) -> str | None:
        """Why ``name`` cannot run here (None when it can)."""
        if name == "kafka":
            if shutil.which("java") is None:
                return "java is not on PATH"
            if not any((self.jars_dir / "kafka").glob("kafka_2.13-*.jar")):
                return f"no Kafka jars in {self.jars_dir / 'kafka'} (run `make setup`)"
            return None
        if name == "mlflow":
            try:
                import mlflow  # noqa: F401
            except ImportError:
                return "mlflow is not installed in this environment (run `make setup`)"
            return None
        if name == "redis":
            return None if shutil.which("redis-server") else "redis-server is not on PATH"
        if name == "prometheus":
            return None if shutil.which("prometheus") else "prometheus is not on PATH"
        raise ServiceError(f"unknown service {name!r}")

    def healthy(self, name: str) -> bool:
        if name == "kafka":
            return self._kafka_healthy()
        if name == "mlflow":
            return _http_ok(f"http://127.0.0.1:{self.mlflow_port}/health")
        if name == "redis":
            return self._redis_ping()
        if name == "prometheus":
            return _http_ok(f"http://127.0.0.1:{self.prometheus_port}/-/ready")
        raise ServiceError(f"unknown service {name!r}")

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(
            {
                "bootstrap.servers": self.kafka_bootstrap,
                "broker.address.family": "v4",
                "socket.connection.setup.timeout.ms": 2000,
                "log_level": 0,
            }
        )

    def _kafka_healthy(self) -> bool:
        if not _port_open(self.kafka_port):
            return False
        try:
            metadata = self._admin().list_topics(timeout=3)
        except Exception:
            return False
        return bool(metadata.brokers)

    def _redis_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    # ------------------------------------------------------------------ PID files
    def _read_pid(self, name: str) -> dict[str, Any] | None:
        path = self._pid_path(name)
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return record

    def _live_process(self, name: str) -> psutil.Process | None:
        """The recorded process when it is still the one we started (guards against PID reuse)."""
        record = self._read_pid(name)
        if not record:
            return None
        try:
            proc = psutil.Process(int(record["pid"]))
            if abs(proc.create_time() - float(record["create_time"])) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.Error, KeyError, ValueError):
            return None

    def recorded_pids(self) -> dict[str, int]:
        """Services with a PID file and the PID it records (whether or not the process lives)."""
        out = {}
        for name in ALL_SERVICES:
            record = self._read_pid(name)
            if record and "pid" in record:
                out[name] = int(record["pid"])
        return out

    # ------------------------------------------------------------------ up
    def up(self, names: Iterable[str] | None = None, *, required: Iterable[str] | None = None) -> list[str]:
        """Start ``names`` (default: all); returns the services that are healthy afterwards."""
        wanted = list(names) if names else list(ALL_SERVICES)
        for name in wanted:
            if name not in ALL_SERVICES:
                raise ServiceError(f"unknown service {name!r}; known: {', '.join(ALL_SERVICES)}")
        must = self.required | set(required or ())
        if names:
            must |= set(wanted)  # asked for by name: it must come up
        runnable = []
        for name in wanted:
            reason = self.missing(name)
            if reason:
                if name in must:
                    raise ServiceError(f"{name} is required but cannot run: {reason}")
                self._say(f"{name:<11} not installed ({reason}), skipped")
                continue
            runnable.append(name)
        self.ensure(*runnable)
        return runnable

    def ensure(self, *names: str) -> None:
        """Start every service in ``names`` that is not already healthy (all at once), wait until each is
        healthy (Kafka: and its topics exist). A service that fails is stopped and raises with its log tail;
        services that already came up keep running, those still starting are stopped."""
        pending: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        try:
            # MLflow is the slowest to boot (heavy imports): start it first, the others meanwhile
            for name in sorted(names, key=lambda n: n != "mlflow"):
                proc = self._begin(name)
                if proc is not None:
                    pending[name] = (proc, time.monotonic())
            waiting = pending  # healthy ones leave it; what is left is stopped on failure
            if "kafka" in names and "kafka" not in pending:
                self.create_topics(self.topics, self.topic_partitions)
            while waiting:  # poll every pending service; each is reported as soon as it is healthy
                for name, (proc, started) in list(waiting.items()):
                    if self._check_started(name, proc, started):
                        del waiting[name]
                        if name == "kafka":
                            self.create_topics(self.topics, self.topic_partitions)
                if waiting:
                    time.sleep(0.2)
        except BaseException:
            for name in pending:
                with contextlib.suppress(Exception):
                    self._stop(name)
            raise

    def _begin(self, name: str) -> subprocess.Popen[bytes] | None:
        reason = self.missing(name)
        if reason:
            raise ServiceError(f"{name} cannot run: {reason}")
        if self.healthy(name):
            proc = self._live_process(name)
            where = f" (pid {proc.pid})" if proc else " (not started here)"
            self._say(f"{name:<11} already healthy on port {self.port(name)}{where}")
            return None
        if self._live_process(name) is not None:  # ours but unhealthy (e.g. stuck): restart it
            self._stop(name)
        elif _port_open(self.port(name)):
            raise ServiceError(
                f"port {self.port(name)} for {name} is taken by another process that is not a healthy {name}"
            )
        return self._spawn(name)

    def _check_started(self, name: str, proc: subprocess.Popen[bytes], started: float) -> bool:
        """True once ``name`` is healthy; raises (with the log tail) when it died or timed out."""
        code = proc.poll()
        if code is None and self.healthy(name):
            took = time.monotonic() - started
            self._say(f"{name:<11} started on port {self.port(name)} (pid {proc.pid}) in {took:.1f}s")
            return True
        elapsed = time.monotonic() - started
        if code is None and elapsed < self.start_timeout:
            return False
        log = self._tail_logs(name)
        self._stop(name)
        state = f"exited with code {code}" if code is not None else "not healthy"
        raise ServiceError(
            f"{name} failed to start ({state} after {elapsed:.0f}s); last {LOG_TAIL_LINES} log lines:\n{log}"
        )

    def _tail_logs(self, name: str) -> str:
        parts = []
        sdir = self.service_dir(name)
        for path in sorted(sdir.glob("*.log")) + sorted(sdir.glob("*.out")):
            parts.append(f"--- {path}\n{_tail(path)}")
        return "\n".join(parts) or "(no logs)"

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        sdir = self.service_dir(name)
        sdir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd, env, out_path = {
            "kafka": self._prepare_kafka,
            "mlflow": self._prepare_mlflow,
            "redis": self._prepare_redis,
            "prometheus": self._prepare_prometheus,
        }[name]()
        full_env = {**os.environ, **env}
        with out_path.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                cwd=sdir,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        record = {
            "pid": proc.pid,
            "pgid": proc.pid,
            "port": self.port(name),
            "create_time": psutil.Process(proc.pid).create_time(),
            "cmd": cmd,
        }
        self._pid_path(name).write_text(json.dumps(record))
        return proc

    # ------------------------------------------------------------------ service definitions
    def _prepare_kafka(self) -> tuple[list[str], dict[str, str], Path]:
        sdir = self.service_dir("kafka")
        data = sdir / "data"
        props = sdir / "server.properties"
        port, cport = self.kafka_port, self.kafka_controller_port
        # Static quorum (controller.quorum.voters): ports may change between runs without reformatting.
        props.write_text(
            "\n".join(
                [
                    "# generated by scripts/services.py; edits are overwritten on the next start",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@localhost:{cport}",
                    f"listeners=PLAINTEXT://localhost:{port},CONTROLLER://localhost:{cport}",
                    f"advertised.listeners=PLAINTEXT://localhost:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data}",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    f"num.partitions={self.topic_partitions}",
                    "default.replication.factor=1",
                    "min.insync.replicas=1",
                    # single node: internal topics with one replica and few partitions (fast first use)
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=4",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "share.coordinator.state.topic.num.partitions=1",
                    "group.initial.rebalance.delay.ms=0",
                    # a 2-core development box
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "background.threads=2",
                    "num.recovery.threads.per.data.dir=1",
                    "log.cleaner.threads=1",
                    "log.cleaner.dedupe.buffer.size=16777216",
                    "log.retention.hours=24",
                    "log.segment.bytes=134217728",
                    "message.max.bytes=2097152",
                    "",
                ]
            )
        )
        log4j = sdir / "log4j2.yaml"
        log4j.write_text(
            "\n".join(
                [
                    "Configuration:",
                    "  name: fraudwatch-kafka",
                    "  Appenders:",
                    "    RollingFile:",
                    "      name: FILE",
                    f'      fileName: "{sdir / "kafka.log"}"',
                    f'      filePattern: "{sdir / "kafka.log"}.%i"',
                    "      PatternLayout:",
                    '        pattern: "[%d] %p %m (%c)%n"',
                    "      SizeBasedTriggeringPolicy:",
                    "        size: 50MB",
                    "      DefaultRolloverStrategy:",
                    "        max: 3",
                    "  Loggers:",
                    "    Root:",
                    "      level: INFO",
                    "      AppenderRef:",
                    "        - ref: FILE",
                    "    Logger:",
                    "      - name: kafka.request.logger",
                    "        level: WARN",
                    "      - name: org.apache.kafka.controller",
                    "        level: INFO",
                    "",
                ]
            )
        )
        classpath = str(self.jars_dir / "kafka" / "*")
        jvm = [
            "java",
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={sdir}",
            "-cp",
            classpath,
        ]
        if not (data / "meta.properties").exists():
            data.mkdir(parents=True, exist_ok=True)
            fmt = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(), "-c", str(props)],
                cwd=sdir,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if fmt.returncode != 0:
                raise ServiceError(f"formatting Kafka storage in {data} failed:\n{fmt.stdout}\n{fmt.stderr}")
        return [*jvm, "kafka.Kafka", str(props)], {}, sdir / "kafka.out"

    def _prepare_mlflow(self) -> tuple[list[str], dict[str, str], Path]:
        sdir = self.service_dir("mlflow")
        (sdir / "artifacts").mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._mlflow_cmd(),
            "server",
            "--backend-store-uri",
            f"sqlite:///{sdir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(sdir / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.mlflow_port),
            "--workers",
            "1",
            # clients reach it as localhost:<port> or 127.0.0.1:<port>; nothing else may (DNS rebinding)
            "--allowed-hosts",
            f"localhost:{self.mlflow_port},127.0.0.1:{self.mlflow_port},localhost,127.0.0.1",
        ]
        env = {
            # no Huey job runner / periodic-task consumer processes next to the server
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false",
            "PYTHONUNBUFFERED": "1",
        }
        return cmd, env, sdir / "mlflow.log"

    def _prepare_redis(self) -> tuple[list[str], dict[str, str], Path]:
        sdir = self.service_dir("redis")
        cmd = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(sdir),
            "--daemonize",
            "no",
            "--logfile",
            str(sdir / "redis.log"),
        ]
        return cmd, {}, sdir / "redis.out"

    def prometheus_config_text(self) -> str:
        """The generated scrape config: Prometheus itself plus every scrape target."""
        lines = [
            "# generated by scripts/services.py",
            "global:",
            f"  scrape_interval: {self.scrape_interval}",
            f"  evaluation_interval: {self.scrape_interval}",
            # the one rules copy, so recording rules (used by dashboards) and alerts load here too
            "rule_files:",
            f'  - "{ROOT / "monitoring" / "prometheus" / "rules"}/*.yml"',
            "scrape_configs:",
            "  - job_name: prometheus",
            "    static_configs:",
            f'      - targets: ["localhost:{self.prometheus_port}"]',
        ]
        for job, targets in self.scrape_targets.items():
            quoted = ", ".join(f'"{t}"' for t in targets)
            lines += [f"  - job_name: {job}", "    static_configs:", f"      - targets: [{quoted}]"]
        return "\n".join(lines) + "\n"

    def _prepare_prometheus(self) -> tuple[list[str], dict[str, str], Path]:
        sdir = self.service_dir("prometheus")
        config = self.prometheus_config
        # the monitoring config scrapes the default local ports; other ports get a generated config
        if config is None and not self._explicit_targets and self.prometheus_port == 9090:
            for candidate in ("prometheus.local.yml", "prometheus.yml"):
                path = ROOT / "monitoring" / "prometheus" / candidate
                if path.exists():
                    config = path
                    break
        if config is None:
            config = sdir / "prometheus.yml"
            config.write_text(self.prometheus_config_text())
        config = Path(config).resolve()
        if shutil.which("promtool"):
            check = subprocess.run(
                ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
            )
            if check.returncode != 0:
                raise ServiceError(f"promtool rejects {config}:\n{check.stdout}\n{check.stderr}")
        cmd = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={sdir / 'data'}",
            "--storage.tsdb.retention.time=3d",
            f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            "--web.enable-lifecycle",
        ]
        return cmd, {}, sdir / "prometheus.log"

    # ------------------------------------------------------------------ topics
    def create_topics(
        self, names: Iterable[str], partitions: int | None = None, timeout: float = 30.0
    ) -> None:
        """Create ``names`` with ``partitions`` partitions (replication 1); existing topics are kept, and
        grown when they have fewer partitions. Returns once every topic has a leader for each partition."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewPartitions, NewTopic

        names = list(dict.fromkeys(names))
        if not names:
            return
        partitions = partitions or self.topic_partitions
        admin = self._admin()
        existing = admin.list_topics(timeout=10).topics
        new = [
            NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names if n not in existing
        ]
        for topic, future in (admin.create_topics(new, request_timeout=timeout) if new else {}).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise ServiceError(f"cannot create topic {topic!r}: {exc}") from exc
        grow = [
            NewPartitions(n, partitions)
            for n in names
            if n in existing and len(existing[n].partitions) < partitions
        ]
        for topic, future in (admin.create_partitions(grow) if grow else {}).items():
            future.result()
            self._say(f"kafka       topic {topic} grown to {partitions} partitions")

        def ready() -> bool:
            topics = admin.list_topics(timeout=5).topics
            for n in names:
                meta = topics.get(n)
                if meta is None or meta.error is not None or len(meta.partitions) < partitions:
                    return False
                if any(p.leader < 0 for p in meta.partitions.values()):
                    return False
            return True

        if not _wait_until(ready, timeout):
            raise ServiceError(f"topics {names} have no leaders after {timeout:.0f}s")

    # ------------------------------------------------------------------ down
    def down(self, names: Iterable[str] | None = None) -> list[int]:
        """Stop ``names`` (default: all with a PID file); returns every PID that was stopped."""
        stopped: list[int] = []
        for name in reversed(list(names) if names else list(ALL_SERVICES)):
            stopped += self._stop(name)
        return stopped

    def _group_members(self, pgid: int) -> list[psutil.Process]:
        members = []
        for proc in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                    members.append(proc)
        return members

    def _stop(self, name: str) -> list[int]:
        record = self._read_pid(name)
        if record is None:
            return []
        leader = self._live_process(name)
        pgid = int(record.get("pgid", record["pid"]))
        procs: dict[int, psutil.Process] = {}
        if leader is not None:
            procs[leader.pid] = leader
            with contextlib.suppress(psutil.Error):
                for child in leader.children(recursive=True):
                    procs[child.pid] = child
        if leader is not None or _pgid_alive(pgid):
            for proc in self._group_members(pgid):
                procs[proc.pid] = proc
        if not procs:
            self._pid_path(name).unlink(missing_ok=True)
            return []
        self._signal(pgid, procs.values(), signal.SIGTERM)
        _, alive = psutil.wait_procs(list(procs.values()), timeout=self.stop_timeout)
        if alive:
            self._say(
                f"{name:<11} did not stop within {self.stop_timeout:.0f}s, killing {[p.pid for p in alive]}"
            )
            self._signal(pgid, alive, signal.SIGKILL)
            _, alive = psutil.wait_procs(alive, timeout=10)
        if alive:
            raise ServiceError(f"{name}: processes {[p.pid for p in alive]} survive SIGKILL")
        self._pid_path(name).unlink(missing_ok=True)
        self._say(f"{name:<11} stopped (pids {sorted(procs)})")
        return sorted(procs)

    @staticmethod
    def _signal(pgid: int, procs: Iterable[psutil.Process], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        for proc in procs:  # children that left the group, if any
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    # ------------------------------------------------------------------ status
    def status(self) -> list[StatusRow]:
        rows = []
        for name in ALL_SERVICES:
            installed = self.missing(name) is None
            proc = self._live_process(name)
            rows.append(
                StatusRow(
                    service=name,
                    installed=installed,
                    pid=proc.pid if proc else None,
                    port=self.port(name),
                    healthy=installed and self.healthy(name),
                )
            )
        return rows

    def format_status(self) -> str:
        lines = [f"{'service':<11} {'pid':>8} {'port':>6}  {'healthy':<8} state", "-" * 52]
        for row in self.status():
            healthy = "yes" if row.healthy else "no"
            lines.append(f"{row.service:<11} {row.pid or '-':>8} {row.port:>6}  {healthy:<8} {row.state}")
        lines.append(f"(local dir: {self.local_dir})")
        return "\n".join(lines)

    def _say(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--local-dir", type=Path, default=None, help="default: FRAUDWATCH_LOCAL_DIR or .local"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start services (default: all installed) and wait until healthy")
    up.add_argument("names", nargs="*", metavar="name", help=", ".join(ALL_SERVICES))
    up.add_argument("--require", action="append", default=[], help="fail if this service cannot run")
    down = sub.add_parser("down", help="stop every service started here")
    down.add_argument("names", nargs="*", metavar="name")
    sub.add_parser("status", help="show the services")
    args = parser.parse_args(argv)

    try:
        services = Services(args.local_dir)
        if args.command == "up":
            services.up(args.names or None, required=args.require)
            print(services.format_status())
        elif args.command == "down":
            names = args.names or list(ALL_SERVICES)
            stopped = services.down(names)
            left = [p for p in stopped if psutil.pid_exists(p)]
            left += [p for n, p in services.recorded_pids().items() if n in names and psutil.pid_exists(p)]
            if left:
                print(f"still running: {left}", file=sys.stderr)
                return 1
        else:
            print(services.format_status())
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
