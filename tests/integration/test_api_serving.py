"""The scorer API's model loading and shadow scoring against a real MLflow tracking server.

- A worker loads a registered version from its serving artifact through the tracking server, without
  sklearn, skops, scipy.special or mlflow.pyfunc (checked in a fresh interpreter), and scores exactly as the
  pyfunc model does.
- A version registered without the artifact (older versions) still loads, through mlflow.pyfunc, logged as such.
- Shadow scoring: with production and a ``challenger`` alias, every answer carries the challenger's score;
  moving the challenger while requests flow is picked up, and the production answer never changes.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest

from fraudwatch.config import Settings
from fraudwatch.serving_model import SERVING_ARRAYS, SERVING_SPEC, load_registered
from fraudwatch.store import SQLiteStore
from fraudwatch_api import create_app
from tests.unit.test_api import (
    LiveServer,
    World,
    build_world,
    known_tx,
    metric_value,
    seed_store,
    train_and_log,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(mlflow_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    # A model name of its own: other tests on the same tracking server move their own aliases.
    name = f"fraud-detector-serving-{uuid.uuid4().hex[:8]}"
    return build_world(
        tmp_path_factory.mktemp("api-serving"), tracking_uri=mlflow_tracking_uri, model_name=name
    )


@pytest.fixture(scope="module")
def store_path(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-serving-store") / "online.sqlite"
    store = SQLiteStore(path)
    seed_store(store, world)
    store.close()
    return path


@pytest.fixture
def settings_for(
    make_settings: Callable[..., Settings], world: World, store_path: Path
) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "need": ("mlflow",),
            "topics": False,
            "store_backend": "sqlite",
            "sqlite_path": store_path,
            "model_name": world.model_name,
            "model_poll_seconds": 3600,
            "event_max_age_days": 0,
            "event_max_future_seconds": 0,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


def _client(world: World) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(world.tracking_uri, world.tracking_uri)


def _pyfunc_scores(world: World, version: str, X: np.ndarray) -> np.ndarray:
    from fraudwatch.model import load_model

    return load_model(f"models:/{world.model_name}/{version}", _client(world)).model.score_matrix(X)


def test_worker_loads_the_serving_artifact_without_sklearn_or_pyfunc(
    settings_for: Callable[..., Settings], world: World, tmp_path: Path
) -> None:
    settings = settings_for()
    version = world.versions[0]
    X = world.X[:300]
    np.save(tmp_path / "X.npy", X)
    script = f"""
import json, sys
import numpy as np
from fraudwatch.config import Settings
from fraudwatch_api.serving import load_serving_model
settings = Settings(mlflow_tracking_uri={settings.mlflow_tracking_uri!r}, model_name={world.model_name!r})
served = load_serving_model(settings)
scores = served.score(np.load({str(tmp_path / "X.npy")!r}))
heavy = ["sklearn", "skops", "mlflow.pyfunc", "scipy.special", "scipy.stats", "sqlalchemy"]
print(json.dumps({{"version": served.version, "class": type(served.model).__name__,
                  "scores": scores.tolist(), "loaded": [m for m in heavy if m in sys.modules]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["class"] == "CompiledFraudModel"
    assert result["version"] == version
    np.testing.assert_allclose(result["scores"], _pyfunc_scores(world, version, X), rtol=0, atol=1e-12)


def test_version_without_serving_artifact_loads_through_pyfunc(
    settings_for: Callable[..., Settings], world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """An older version (registered before the artifact existed): same scores, through mlflow.pyfunc."""
    from fraudwatch_api.serving import load_serving_model

    version = train_and_log(world, seed=11, max_iter=10)
    source = _client(world).get_model_version_download_uri(world.model_name, version)
    artifacts = Path(urlparse(source).path) / "artifacts"
    for name in (SERVING_ARRAYS, SERVING_SPEC):
        (artifacts / name).unlink()
    assert load_registered(_client(world), world.model_name, version) is None
    with caplog.at_level(logging.WARNING, logger="fraudwatch_api.model"):
        served = load_serving_model(settings_for(model_uri=f"models:/{world.model_name}/{version}"), version)
    assert type(served.model).__name__ == "FraudModel"
    assert any("no serving artifact" in r.getMessage() for r in caplog.records)
    X = world.X[:200]
    np.testing.assert_allclose(served.score(X), _pyfunc_scores(world, version, X), rtol=0, atol=1e-12)


def test_shadow_scores_follow_the_challenger_and_never_change_production(
    settings_for: Callable[..., Settings], world: World
) -> None:
    client = _client(world)
    production = world.versions[0]
    client.set_registered_model_alias(world.model_name, "production", production)
    first = train_and_log(world, seed=21, max_iter=12)
    second = train_and_log(world, seed=22, max_iter=25)
    client.set_registered_model_alias(world.model_name, "challenger", first)
    compiled = {v: load_registered(client, world.model_name, v) for v in (production, first, second)}
    payloads = [known_tx(world, -1 - k, transaction_id=f"shadow-{k}") for k in range(40)]

    app = create_app(settings_for(model_poll_seconds=0.3))
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        n = 0
        with httpx.Client(base_url=live.url, timeout=10) as http:
            while not stop.is_set():
                k = (n * 7 + worker) % len(payloads)
                r = http.post("/score", params={"explain": "true"}, json=payloads[k])
                n += 1
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text}")
                    continue
                with lock:
                    answers.append({"k": k, **r.json()})

    def shadow_count(version: str | None) -> int:
        with lock:
            return sum(
                1
                for a in answers
                if (a["shadow"] or {}).get("model_version") == version
                or (version is None and a["shadow"] is None)
            )

    def wait_for(version: str | None, n: int) -> None:
        deadline = time.monotonic() + 60
        while shadow_count(version) < n and not failures and time.monotonic() < deadline:
            time.sleep(0.02)

    with LiveServer(app) as live:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(hammer, w) for w in range(3)]
            try:
                wait_for(first, 20)
                client.set_registered_model_alias(world.model_name, "challenger", second)
                wait_for(second, 20)
                client.delete_registered_model_alias(world.model_name, "challenger")
                wait_for(None, 20)
            finally:
                stop.set()
                for f in futures:
                    f.result()
        metrics_text = httpx.get(f"{live.url}/metrics").text

    assert failures == []
    assert shadow_count(first) >= 20 and shadow_count(second) >= 20 and shadow_count(None) >= 20
    prod_answers: dict[int, set[tuple[float, str]]] = {}
    disagreements = 0
    for a in answers:
        assert a["model"]["version"] == production
        prod_answers.setdefault(a["k"], set()).add((a["score"], a["decision"]))
        features = np.array([list(a["features"].values())])
        expected = compiled[production]
        assert expected is not None
        assert a["score"] == pytest.approx(float(expected.score_matrix(features)[0]), abs=1e-12)
        shadow = a["shadow"]
        if shadow is None:
            continue
        model = compiled[shadow["model_version"]]
        assert model is not None
        shadow_score = float(model.score_matrix(features)[0])
        assert shadow["score"] == pytest.approx(shadow_score, abs=1e-12)
        assert shadow["decision"] == model.decide([shadow_score])[0]
        disagreements += shadow["decision"] != a["decision"]
    # the production answer to each transaction is the same whatever the challenger was at the time
    assert all(len(v) == 1 for v in prod_answers.values()), prod_answers
    shadowed = sum(1 for a in answers if a["shadow"] is not None)
    counted = sum(
        metric_value(metrics_text, "fraudwatch_api_shadow_decisions_total", {"decision": d}) or 0.0
        for d in ("approve", "review", "decline")
    )
    assert counted == shadowed
    counted_disagreements = sum(
        metric_value(
            metrics_text, "fraudwatch_api_shadow_disagreements_total", {"production": p, "challenger": s}
        )
        or 0.0
        for p in ("approve", "review", "decline")
        for s in ("approve", "review", "decline")
        if p != s
    )
    assert counted_disagreements == disagreements
