"""Scorer API against the real services: the MLflow tracking server (registry over HTTP) and Redis."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fraudwatch.config import Settings
from fraudwatch.features import FEATURE_NAMES, datetime_seconds, feature_vector
from fraudwatch.store import RedisStore
from fraudwatch_api import create_app
from tests.unit.test_api import (
    LiveServer,
    World,
    build_world,
    free_port,
    known_tx,
    metric_value,
    seed_store,
    set_production,
    train_and_log,
    tx,
)

pytestmark = pytest.mark.integration
REDIS_DB = 7  # a database of its own on the session's Redis, flushed by this module


@pytest.fixture(scope="module")
def world(mlflow_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    # A model name of its own: other tests on the same tracking server move their own aliases.
    name = f"fraud-detector-api-{uuid.uuid4().hex[:8]}"
    return build_world(tmp_path_factory.mktemp("api-int"), tracking_uri=mlflow_tracking_uri, model_name=name)


@pytest.fixture(scope="module")
def redis_db_url(redis_url: str, world: World) -> Iterator[str]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    store = RedisStore(url)
    store._client.flushdb()
    seed_store(store, world)
    store.close()
    yield url
    store = RedisStore(url)
    store._client.flushdb()
    store.close()


@pytest.fixture
def settings_for(
    make_settings: Callable[..., Settings], world: World, redis_db_url: str
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "need": ("mlflow", "redis"),
            "topics": False,
            "store_backend": "redis",
            "redis_url": redis_db_url,
            "model_name": world.model_name,
            "model_poll_seconds": 3600,
            # simulated history at fixed dates: the plausibility window is off (tests/unit/test_api.py tests it)
            "event_max_age_days": 0,
            "event_max_future_seconds": 0,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


def test_scores_with_state_from_redis_and_the_registry_model(
    settings_for: Callable[..., Settings], world: World
) -> None:
    with TestClient(create_app(settings_for())) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["store"] == "redis: reachable"
        body = known_tx(world)
        r = c.post("/score?explain=true", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["model"] == {"name": world.model_name, "version": world.versions[0], "alias": "production"}
        expected = feature_vector(
            world.card_states[body["card_id"]],
            world.terminal_states[body["terminal_id"]],
            datetime_seconds(datetime.fromisoformat(body["event_time"])),
            body["amount"],
            body["terminal_id"],
            body["country"],
            body["channel"],
        )
        assert list(out["features"].values()) == expected
        assert list(out["features"]) == list(FEATURE_NAMES)
        assert out["state_age_seconds"]["card"] is not None

        batch = [known_tx(world, i, transaction_id=f"rb-{i}") for i in range(-100, 0)] + [tx()]
        rb = c.post("/score/batch", json=batch)
        assert rb.status_code == 200
        results = rb.json()["results"]
        assert len(results) == 101 and results[-1]["state_age_seconds"] == {"card": None, "terminal": None}
        assert results[-2]["score"] == pytest.approx(out["score"], abs=1e-12)

        text = c.get("/metrics").text
        assert (
            metric_value(text, "fraudwatch_store_duration_seconds_count", {"backend": "redis", "op": "get"})
            == 1
        )
        assert (
            metric_value(
                text, "fraudwatch_store_duration_seconds_count", {"backend": "redis", "op": "get_many"}
            )
            == 1
        )


def test_redis_down_is_503_and_unready(settings_for: Callable[..., Settings]) -> None:
    closed = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with TestClient(create_app(settings_for(redis_url=closed))) as c:
        r = c.post("/score", json=tx(), headers={"X-Request-ID": "redis-down-1"})
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("online store unavailable")
        assert r.json()["request_id"] == "redis-down-1"
        assert "Traceback" not in r.text
        assert c.post("/score/batch", json=[tx(), tx(transaction_id="b")]).status_code == 503
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["missing"] == ["store"]
        text = c.get("/metrics").text
        assert (
            metric_value(text, "fraudwatch_store_errors_total", {"backend": "redis", "op": "get"}) or 0
        ) >= 1
        assert metric_value(text, "fraudwatch_api_requests_total", {"route": "/score", "status": "503"}) == 1


def test_poller_follows_the_alias_under_load(
    settings_for: Callable[..., Settings], world: World, tmp_path: Path
) -> None:
    """The background poller (not a direct call) swaps the model while clients hammer /score."""
    app = create_app(settings_for(model_poll_seconds=0.3))
    with LiveServer(app) as live:
        first = world.versions[0]
        seen: dict[str, int] = {}
        failures: list[str] = []
        stop = threading.Event()

        def hammer(k: int) -> None:
            n = 0
            with httpx.Client(base_url=live.url, timeout=10) as http:
                while not stop.is_set():
                    r = http.post("/score", json=known_tx(world, -1 - (n % 50), transaction_id=f"p{k}-{n}"))
                    n += 1
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                    else:
                        version = r.json()["model"]["version"]
                        seen[version] = seen.get(version, 0) + 1

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(hammer, k) for k in range(4)]
            try:
                deadline = time.monotonic() + 30
                while first not in seen and not failures and time.monotonic() < deadline:
                    time.sleep(0.01)
                v2 = train_and_log(world, seed=5, max_iter=15)
                set_production(world, v2)
                deadline = time.monotonic() + 60
                while seen.get(v2, 0) < 20 and not failures and time.monotonic() < deadline:
                    time.sleep(0.02)
            finally:
                stop.set()
                for f in futures:
                    f.result()
        assert failures == []
        assert seen.get(first, 0) > 0 and seen.get(v2, 0) >= 20, seen
        text = httpx.get(f"{live.url}/metrics").text
        assert metric_value(text, "fraudwatch_api_model_reloads_total") == 1
        assert metric_value(text, "fraudwatch_model_info", {"name": world.model_name, "version": v2}) == 1
    set_production(world, first)


#: examples per operation in the fuzzing phase (after the examples and coverage phases, ~130 requests).
#: Measured before the fix of issue 10, schemathesis 4.32 against this API reached the 500 (event_time
#: "0001-01-01T00:00:00+03:00") at request 61, 73, 141, 171, 452, 557, 632, 729, 943 and 1075 to /score in
#: 10 of 12 runs (different seeds; the other two: none in 1000 and 1615). 1000 covers 10 of those 12 and
#: takes ~1130 requests, about 100 s here.
SCHEMATHESIS_EXAMPLES = 1000


def test_schemathesis_coverage_and_fuzzing_phases_find_no_server_error(
    settings_for: Callable[..., Settings], tmp_path: Path
) -> None:
    """schemathesis, as a user runs it (its CLI: examples, coverage and fuzzing phases), against the live API
    on the real registry and Redis with the default plausibility window: no generated request gets a 5xx."""
    defaults = {
        name: Settings.model_fields[name].default
        for name in ("event_max_age_days", "event_max_future_seconds", "amount_max")
    }
    app = create_app(settings_for(api_max_batch=20, **defaults))
    with LiveServer(app) as live:
        junit = tmp_path / "schemathesis.xml"
        proc = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{live.url}/openapi.json",
                "--phases", "examples,coverage,fuzzing",
                "--checks", "not_a_server_error",
                "--include-path", "/score",
                "--include-method", "POST",
                "-n", str(SCHEMATHESIS_EXAMPLES),
                "--generation-database", "none",
                "--report", "junit", "--report-junit-path", str(junit),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert junit.exists() and "<testcase" in junit.read_text()
