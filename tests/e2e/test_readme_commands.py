"""Every command in the README's command table, tried from a fresh clone of the repository.

The clone gets its own `make setup` (its own .venv and jars, from the package and Maven caches) and runs
the README's commands against this session's services (FRAUDWATCH_* point at tests/conftest.py's Kafka,
MLflow, Redis and Prometheus; topics and the model name are unique to this test). Long-running commands
(`make serve`, `make stream`) are started, checked for health and effect, then stopped. The path a newcomer
takes right after `make train`, before any stream ever ran, must work: `make serve` becomes ready and
scores every card as new. Commands too long for CI are checked with `make -n` (what they would run) and
the reason is written next to them; the README table is parsed, so a new command must be handled here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from fraudwatch.config import Settings

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

#: every make target of the README table -> how this test covers it
COVERED = {
    "setup": "run",
    "up": "run (the session's services are healthy: nothing new starts)",
    "down": "run (stops only what this clone started)",
    "status": "run",
    "data": "run (DAYS=14)",
    "bootstrap": "run after `make serve` / `make stream` (snapshot written; the store keeps the newer states)",
    "train": "run (a 14-day history needs 2-day validation/test/gap windows: TRAIN_ARGS)",
    "serve": "started, /readyz and POST /score checked, stopped",
    "stream": "started, scores `make produce` traffic, stopped",
    "produce": "run (RATE=200 DURATION=5)",
    "review": "started after the stream, /readyz checked, every alert the stream published consumed, stopped",
    "compare-models": "run on the stream's table and labels (no challenger here: nothing to compare, said so; "
    "tests/integration/test_compare_models.py compares real shadow scores)",
    "demo": "make -n: tests/e2e/test_demo.py runs scripts/demo.py itself (several minutes)",
    "test": "make -n: this test is part of it",
    "test-unit": "make -n: CI runs the unit tests in the same job",
    "lint": "run",
    "bench": "make -n: benchmarks are minutes of full CPU, not a test",
    "help": "run",
}


def _readme_targets() -> list[str]:
    """The make targets named in the README's command table."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    targets: list[str] = []
    for line in table.splitlines():
        if not line.startswith("| `make"):
            continue
        first_cell = line.split("|")[1]
        for command in re.findall(r"`make ([^`]+)`", first_cell):
            targets += [w for w in command.split() if "=" not in w]
    return targets


def _poll(
    check: Callable[[], Any], timeout: float, what: str, log: Callable[[], str] = str, interval: float = 1.0
) -> Any:
    """Poll ``check`` until it returns something truthy; on timeout fail with ``log()`` (a service's log)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{log()}")
        time.sleep(interval)


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """(status, JSON body) of a GET (or a POST with ``body``); (0, {}) while nothing listens."""
    try:
        resp = httpx.post(url, json=body, timeout=5) if body is not None else httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return 0, {}
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, {}


def _text(url: str) -> str:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return ""


def _sample(text: str, series: str) -> float:
    """The value of one exposition-format series (0 when absent)."""
    match = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Clone:
    """A fresh clone and the environment its `make` commands run in."""

    def __init__(self, path: Path, env: dict[str, str], settings: Settings) -> None:
        self.path = path
        self.env = env
        self.settings = settings
        self.logs = path / "test-logs"
        self.logs.mkdir()
        self.started: list[subprocess.Popen[bytes]] = []

    def make(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["make", *args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, (
            f"make {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
        return proc

    def start(self, target: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{target}.log").open("wb")
        proc = subprocess.Popen(
            ["make", target], cwd=self.path, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.started.append(proc)
        return proc

    def log(self, target: str) -> str:
        """The errors a command logged (first lines of each: Spark's query plans are long) and its tail."""
        path = self.logs / f"{target}.log"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        errors = [line[:400] for line in lines if re.search(r"Error|Exception|Traceback", line)][:30]
        return "\n".join([*errors, "--- tail", *(line[:400] for line in lines[-30:])])

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the process group this test started (make and what it runs), then wait for all of it."""
        try:
            members = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            members = []
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=60)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[Clone]:
    services.require("kafka", "mlflow", "redis", "prometheus")
    path = tmp_path_factory.mktemp("fresh") / "fraudwatch"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(path)], check=True)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        f: f"{Settings.model_fields[f].default}.readme-{suffix}"
        for f in Settings.model_fields
        if f.startswith("topic_") and f != "topic_partitions"
    }
    settings = Settings(
        local_dir=path / ".local",
        kafka_bootstrap=services.kafka_bootstrap,
        topic_partitions=services.topic_partitions,
        mlflow_tracking_uri=services.mlflow_tracking_uri,
        mlflow_port=services.mlflow_port,
        redis_url=services.redis_url,
        redis_port=services.redis_port,
        prometheus_port=services.prometheus_port,
        api_port=services.api_port,
        stream_metrics_port=services.stream_metrics_port,
        producer_metrics_port=services.producer_metrics_port,
        review_port=_free_port(),
        model_name=f"fraud-detector-readme-{suffix}",
        **topics,
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FRAUDWATCH_", "VIRTUAL_ENV", "PYSPARK_", "PYTHONPATH"))
    }
    values = settings.model_dump(exclude={"local_dir"})
    for name in (
        "kafka_bootstrap", "topic_partitions", "mlflow_tracking_uri", "mlflow_port", "redis_url", "redis_port",
        "prometheus_port", "api_port", "stream_metrics_port", "producer_metrics_port", "review_port",
        "model_name", *topics,
    ):  # fmt: skip
        env[f"FRAUDWATCH_{name.upper()}"] = str(values[name])
    env["FRAUDWATCH_API_WORKERS"] = "1"
    # `make produce` sends simulated event_time (continuing `make data`'s history, months in the past and
    # running ahead of the wall clock): as the README says, the stream and the API then run without the
    # event-time plausibility window
    env["FRAUDWATCH_EVENT_MAX_AGE_DAYS"] = "0"
    env["FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"] = "0"
    env["UV_OFFLINE"] = "1"  # the package cache holds every locked wheel: no registry traffic from a test
    handle = Clone(path, env, settings)
    try:
        yield handle
    finally:
        for proc in handle.started:
            if proc.poll() is None:
                handle.stop(proc)


def test_the_readme_table_names_only_commands_this_test_covers() -> None:
    targets = _readme_targets()
    assert {"setup", "up", "train", "serve", "stream", "produce", "demo"} <= set(targets), targets
    assert not set(targets) - COVERED.keys(), (
        f"README commands this test does not try: {set(targets) - COVERED.keys()}"
    )


def test_readme_commands_from_a_fresh_clone(clone: Clone) -> None:
    s = clone.settings
    clone.make("setup", timeout=900)
    assert (clone.path / ".venv" / "bin" / "python").exists()
    assert any((clone.path / ".local" / "jars" / "spark").glob("spark-sql-kafka*.jar"))
    help_text = re.sub(r"\x1b\[[0-9;]*m", "", clone.make("help").stdout)  # without its colours
    for target in COVERED:
        assert re.search(rf"\b{re.escape(target)}\b", help_text), f"`make help` does not list {target}"

    up = clone.make("up").stdout
    assert "already healthy" in up and "kafka" in up
    status = clone.make("status").stdout
    assert re.search(r"^kafka\s+.*\byes\b", status, re.MULTILINE), status
    assert re.search(r"^mlflow\s+.*\byes\b", status, re.MULTILINE), status

    clone.make("data", "DAYS=14")
    assert (clone.path / ".local" / "data" / "transactions.parquet").exists()
    window = "--validation-days 2 --test-days 2 --gap-days 2 --kinds logistic_regression"
    train = clone.make("train", f"TRAIN_ARGS={window}", timeout=900).stdout
    assert "production" in train, train[-2000:]

    # `make serve` right after `make train`: no stream ever ran, the online store does not exist yet
    api = f"http://{s.api_host}:{s.api_port}"
    serve = clone.start("serve")
    ready = _poll(
        lambda: (r := _http(f"{api}/readyz"))[0] == 200 and r[1], 180, "/readyz", lambda: clone.log("serve")
    )
    assert "empty" in ready["store"], ready
    card = "card-000042"
    tx = {"transaction_id": "readme-1", "event_time": "2026-11-28T03:12:00Z", "card_id": card,
          "terminal_id": "term-001337", "amount": 812.40, "channel": "ecom", "country": "FR"}  # fmt: skip
    status_code, scored = _http(f"{api}/score", tx)
    assert status_code == 200, scored
    assert scored["decision"] in {"approve", "review", "decline"}
    assert scored["state_age_seconds"] == {"card": None, "terminal": None}

    stream = clone.start("stream")
    metrics = f"http://127.0.0.1:{s.stream_metrics_port}/metrics"

    def stream_up() -> bool:
        assert stream.poll() is None, f"make stream exited:\n{clone.log('stream')}"
        return "fraudwatch_stream_rows_total" in _text(metrics)

    _poll(stream_up, 300, "the stream's metrics endpoint", lambda: clone.log("stream"))
    clone.make("produce", "RATE=200", "DURATION=5", timeout=300)

    def scored_count() -> float:
        assert stream.poll() is None, f"make stream exited:\n{clone.log('stream')}"
        text = _text(metrics)
        match = re.search(r'^fraudwatch_stream_rows_total\{output="scored"\} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    _poll(
        lambda: scored_count() >= 500,
        300,
        "the stream to score the produced traffic",
        lambda: clone.log("stream"),
    )
    # the API now reads the state the stream wrote (same store, no restart)
    store = lambda: str(_http(f"{api}/readyz")[1].get("store", "empty"))  # noqa: E731
    _poll(lambda: "empty" not in store(), 60, "the API to see the store", lambda: clone.log("serve"))
    alerts_published = _sample(_text(metrics), 'fraudwatch_stream_rows_total{output="alerts"}')
    clone.stop(stream)
    clone.stop(serve)

    # `make bootstrap` after the stream ran: the snapshot of `make data`'s end state is written, and the
    # store keeps every entity the stream already wrote (newer than the snapshot) instead of moving it back
    boot = clone.make("bootstrap", timeout=300).stdout
    assert (clone.path / ".local" / "bootstrap" / "states.parquet").exists(), boot
    loaded = re.search(
        r"([\d,]+) cards and [\d,]+ terminals loaded .*\(([\d,]+) / [\d,]+ already there", boot
    )
    assert loaded, boot
    assert int(loaded.group(2).replace(",", "")) > 0, boot  # the cards the stream wrote, kept

    # `make review`: ready once its consumer is connected; it reads every alert the stream published on
    # fraud.alerts (a re-published one counts as a duplicate), and all of them are open
    review = clone.start("review")
    queue = f"http://127.0.0.1:{s.review_port}"

    def review_ready() -> bool:
        assert review.poll() is None, f"make review exited:\n{clone.log('review')}"
        return _http(f"{queue}/readyz")[0] == 200

    _poll(review_ready, 120, "the review queue's /readyz", lambda: clone.log("review"))

    def consumed() -> dict[str, float] | None:
        text = _text(f"{queue}/metrics")
        counts = {
            r: _sample(text, f'fraudwatch_review_alerts_consumed_total{{result="{r}"}}')
            for r in ("queued", "duplicate", "invalid")
        }
        counts["open"] = _sample(text, "fraudwatch_review_open_alerts")
        return counts if counts["queued"] + counts["duplicate"] >= alerts_published else None

    counts = _poll(consumed, 120, "the review queue to read the stream's alerts", lambda: clone.log("review"))
    assert counts["queued"] + counts["duplicate"] == alerts_published, counts
    assert counts["invalid"] == 0 and counts["open"] == counts["queued"], counts
    status_code, listed = _http(f"{queue}/api/alerts?limit=1000")
    assert status_code == 200 and listed["open"] == counts["open"], listed
    assert {a["decision"] for a in listed["alerts"]} <= {"review", "decline"}, listed
    clone.stop(review)

    # `make compare-models` on the stream's table, the labels topic and the queue's decisions: this clone
    # has no challenger alias, so no transaction was shadow-scored and it says so
    compared = clone.path / "compare.json"
    out = clone.make("compare-models", f"JSON={compared}", timeout=300).stdout
    assert "no labelled shadow-scored transactions yet" in out, out
    assert json.loads(compared.read_text()) == [], out

    for target in ("demo", "test", "test-unit", "bench"):
        dry = clone.make("-n", target).stdout
        assert dry.strip(), f"make -n {target} prints nothing"
    assert "scripts/demo.py --duration 60" in clone.make("-n", "demo").stdout

    clone.make("lint", timeout=600)
    clone.make("down")
    # `make down` in the clone stopped what the clone started, not the services it found running
    status = clone.make("status").stdout
    assert re.search(r"^kafka\s+.*\byes\b", status, re.MULTILINE), status
