"""Scorer API with a real model in a temporary MLflow store (SQLite + local artifacts) and the real SQLite
online store seeded with replayed state. Also home of the helpers the integration tests reuse.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from fraudwatch.config import Settings
from fraudwatch.features import (
    FEATURE_NAMES,
    datetime_seconds,
    feature_vector,
    replay,
)
from fraudwatch.simulator import simulate
from fraudwatch.store import SQLiteStore
from fraudwatch_api import create_app
from fraudwatch_api.app import update_drift

MODEL = "fraud-detector"


# ----------------------------------------------------------------------------- helpers (also used by integration)


@dataclass
class World:
    tracking_uri: str
    artifact_root: Path
    experiment_id: str
    history: Any
    card_states: dict[str, bytes]
    terminal_states: dict[str, bytes]
    X: np.ndarray
    y: np.ndarray
    versions: list[str]
    model_name: str = MODEL


def train_and_log(world: World, seed: int, max_iter: int = 30) -> str:
    """Fit a gradient-boosted model on the replayed features, log and register it; returns the version."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingClassifier

    from fraudwatch.model import FraudModel, Thresholds, compute_reference, log_model

    est = HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed).fit(world.X, world.y)
    model = FraudModel(est, Thresholds(0.3, 0.7))
    scores = model.score_matrix(world.X)
    model.reference = compute_reference(world.X, scores, {n: 1.0 for n in FEATURE_NAMES})
    model._refresh_weights()
    mlflow.set_tracking_uri(world.tracking_uri)
    mlflow.set_registry_uri(world.tracking_uri)
    client = MlflowClient(world.tracking_uri, world.tracking_uri)
    with mlflow.start_run(experiment_id=world.experiment_id):
        mv = log_model(model, client=client, registered_model_name=world.model_name)
    assert mv is not None
    world.versions.append(str(mv.version))
    return str(mv.version)


def set_production(world: World, version: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(world.tracking_uri, world.tracking_uri)
    client.set_registered_model_alias(world.model_name, "production", version)


def break_version_artifacts(world: World, version: str) -> None:
    """Delete the stored artifacts of a registered version (its registry entry stays)."""
    from mlflow import MlflowClient

    client = MlflowClient(world.tracking_uri, world.tracking_uri)
    path = Path(urlparse(client.get_model_version_download_uri(world.model_name, version)).path)
    assert path.is_dir() and str(path).startswith(str(world.artifact_root)), path
    shutil.rmtree(path)


def build_world(root: Path, tracking_uri: str | None = None, model_name: str = MODEL) -> World:
    """Simulated history replayed through the feature code, and one registered model at @production."""
    from mlflow import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifact_root = root / "artifacts"
    client = MlflowClient(tracking_uri, tracking_uri)
    experiment_id = client.create_experiment(
        f"api-tests-{time.time_ns()}", artifact_location=artifact_root.as_uri()
    )
    history = simulate(15, n_cards=300, n_terminals=120, seed=3)
    result = replay(history.transactions, history.labels)
    world = World(
        tracking_uri=tracking_uri,
        artifact_root=artifact_root,
        experiment_id=experiment_id,
        history=history,
        card_states=result.card_states,
        terminal_states=result.terminal_states,
        X=result.features.to_numpy(dtype=np.float64),
        y=history.transactions["is_fraud"].to_numpy(dtype=np.int64),
        versions=[],
        model_name=model_name,
    )
    set_production(world, train_and_log(world, seed=0))
    return world


def seed_store(store: Any, world: World) -> None:
    store.put(
        world.card_states,
        world.terminal_states,
    )


def tx(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": "tx-api-1",
        "event_time": "2026-12-20T03:12:00Z",
        "card_id": "card-unknown",
        "terminal_id": "term-unknown",
        "amount": 420.0,
        "currency": "EUR",
        "merchant_category": "5411",
        "channel": "ecom",
        "country": "BE",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def known_tx(world: World, i: int = -1, **overrides: Any) -> dict[str, Any]:
    """A new transaction for a card and terminal of the history (they have state), after the history."""
    row = world.history.transactions.iloc[i]
    event_time = world.history.transactions["event_time"].max() + np.timedelta64(30, "m")
    values: dict[str, Any] = {
        "transaction_id": f"tx-known-{i}",
        "event_time": event_time.isoformat().replace("+00:00", "Z"),
        "card_id": row.card_id,
        "terminal_id": row.terminal_id,
        "amount": float(row.amount) * 3,
        "country": row.country,
        "channel": row.channel,
    }
    return tx(**{**values, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The app on a real uvicorn server in a thread (startup awaited by polling, no fixed sleeps)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.app = app
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("api-world"))


@pytest.fixture(scope="module")
def store_path(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-store") / "online.sqlite"
    store = SQLiteStore(path)
    seed_store(store, world)
    store.close()
    return path


@pytest.fixture
def settings_for(world: World, store_path: Path, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "local_dir": tmp_path,
            "mlflow_tracking_uri": world.tracking_uri,
            "store_backend": "sqlite",
            "sqlite_path": store_path,
            "model_poll_seconds": 3600,
            # the world is simulated history at fixed dates: the plausibility window is off unless a test
            # turns it on (tests/unit/test_events.py and the window tests below)
            "event_max_age_days": 0,
            "event_max_future_seconds": 0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for())) as c:
        yield c


# ----------------------------------------------------------------------------- happy paths


def test_score_one_transaction(client: TestClient, world: World) -> None:
    r = client.post("/score", json=known_tx(world), headers={"X-Request-ID": "req-42"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["x-request-id"] == "req-42"
    assert r.headers["content-type"] == "application/json"
    assert body["transaction_id"] == "tx-known--1"
    assert 0.0 <= body["score"] <= 1.0
    assert body["thresholds"] == {"review": 0.3, "decline": 0.7}
    expected = "approve" if body["score"] < 0.3 else ("review" if body["score"] < 0.7 else "decline")
    assert body["decision"] == expected
    assert body["model"] == {"name": MODEL, "version": world.versions[0], "alias": "production"}
    assert isinstance(body["reasons"], list) and len(body["reasons"]) <= 3
    assert body["state_age_seconds"]["card"] >= 0 and body["state_age_seconds"]["terminal"] >= 0
    assert "features" not in body


def test_request_id_generated_when_absent_or_unsafe(client: TestClient) -> None:
    r = client.post("/score", json=tx())
    assert len(r.headers["x-request-id"]) == 32
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"


def test_state_from_store_drives_the_features(client: TestClient, world: World) -> None:
    body = known_tx(world)
    r = client.post("/score?explain=true", json=body)
    assert r.status_code == 200, r.text
    features = r.json()["features"]
    assert list(features) == list(FEATURE_NAMES)
    from datetime import datetime

    expected = feature_vector(
        world.card_states[body["card_id"]],
        world.terminal_states[body["terminal_id"]],
        datetime_seconds(datetime.fromisoformat(body["event_time"])),
        body["amount"],
        body["terminal_id"],
        body["country"],
        body["channel"],
    )
    assert list(features.values()) == pytest.approx(expected, rel=0, abs=0)
    assert features["card_is_new"] == 0.0 and features["card_count_30d"] > 0

    # The same transaction on a never-seen card and terminal: cold-start features, a different vector.
    cold = client.post("/score?explain=true", json={**body, "card_id": "card-new", "terminal_id": "term-new"})
    assert cold.status_code == 200
    cold_features = cold.json()["features"]
    assert cold_features["card_is_new"] == 1.0 and cold_features["terminal_is_new"] == 1.0
    assert cold_features != features


def test_cold_start_is_not_an_error(client: TestClient) -> None:
    r = client.post("/score", json=tx(card_id="card-never-seen", terminal_id="term-never-seen"))
    assert r.status_code == 200, r.text
    assert r.json()["state_age_seconds"] == {"card": None, "terminal": None}


def test_batch_matches_single_scoring(client: TestClient, world: World) -> None:
    batch = [known_tx(world, i, transaction_id=f"b-{i}") for i in range(-40, 0)]
    batch.append(tx(transaction_id="b-cold"))
    r = client.post("/score/batch", json=batch)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["transaction_id"] for x in results] == [b["transaction_id"] for b in batch]
    for item, one in zip(results[:5] + results[-1:], batch[:5] + batch[-1:], strict=True):
        single = client.post("/score", json=one).json()
        assert item["score"] == pytest.approx(single["score"], abs=1e-12)
        assert item["decision"] == single["decision"]
        assert item["reasons"] == single["reasons"]
    assert r.json()["model"]["version"] == world.versions[0]
    assert client.post("/score/batch", json=[]).json()["results"] == []


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        (tx(amount=...), "amount", "required"),
        (tx(card_id=...), "card_id", "required"),
        (tx(amount=-5.0), "amount", "greater than or equal to 0"),
        (tx(amount="12.5"), "amount", "number"),
        (tx(amount="lots"), "amount", "number"),
        (tx(amount=1e12), "amount", "less than or equal"),
        (tx(event_time="yesterday"), "event_time", "datetime"),
        (tx(event_time="2026-12-20T03:12:00"), "event_time", "timezone"),
        (tx(currency="XYZ"), "currency", "ISO 4217"),
        (tx(country="Belgium"), "country", "ISO 3166-1"),
        (tx(channel="fax"), "channel", "'pos', 'ecom' or 'atm'"),
        (tx(terminal_id=""), "terminal_id", "at least 1 character"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, reason_part: str
) -> None:
    r = client.post("/score", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert {"field": field, "reason": detail[0]["reason"]} in detail
    assert any(d["field"] == field and reason_part in d["reason"] for d in detail), detail
    assert "Traceback" not in r.text


POISON_TIMES = ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2016-12-31T23:59:60Z")


@pytest.mark.parametrize("when", POISON_TIMES)
def test_timestamps_at_the_edge_of_the_datetime_range_are_422_not_500(client: TestClient, when: str) -> None:
    # issue 10: these passed the schema and raised OverflowError converting to UTC -> 500
    r = client.post("/score", json=tx(event_time=when))
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] == ["event_time"]
    rb = client.post("/score/batch", json=[tx(), tx(event_time=when)])
    assert rb.status_code == 422, rb.text
    assert rb.json()["detail"][0]["field"] == "1.event_time"


@pytest.fixture
def window_client(settings_for: Callable[..., Settings]) -> Iterator[TestClient]:
    """The app with the default plausibility bounds (judged at each request's receive time)."""
    defaults = {
        name: Settings.model_fields[name].default
        for name in ("event_max_age_days", "event_max_future_seconds")
    }
    with TestClient(create_app(settings_for(**defaults))) as c:
        yield c


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def test_implausible_times_and_amounts_are_422_naming_the_field(window_client: TestClient) -> None:
    now = datetime.now(UTC)
    assert window_client.post("/score", json=tx(event_time=_iso(now))).status_code == 200
    assert window_client.post("/score", json=tx(event_time=_iso(now - timedelta(days=30)))).status_code == 200
    for when, setting in (
        (now + timedelta(days=1), "FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"),
        (now.replace(year=9999), "2200-01-01"),
        (now - timedelta(days=60), "FRAUDWATCH_EVENT_MAX_AGE_DAYS"),
    ):
        r = window_client.post("/score", json=tx(event_time=_iso(when)))
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert detail[0]["field"] == "event_time" and setting in detail[0]["reason"], detail
    r = window_client.post("/score", json=tx(event_time=_iso(now), amount=2e6))
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "amount"
    assert "FRAUDWATCH_AMOUNT_MAX" in r.json()["detail"][0]["reason"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"transaction_id": "a\u0000", "event_time": "2026-01-01T00:00:00Z", "card_id": "c", '
         b'"terminal_id": "t", "amount": 1}', "transaction_id"),
        (b'{"transaction_id": "a", "event_time": "2026-01-01T00:00:00Z", "card_id": "c", '
         b'"terminal_id": "t", "amount": 1, "note": {"deep": [1]}}', "note"),
        (b'{"transaction_id": "a", "event_time": "2026-01-01T00:00:00Z", "card_id": "c\ud800", '
         b'"terminal_id": "t", "amount": 1}', "(body)"),
        (b'{"transaction_id": "a", "event_time": "2026-01-01T00:00:00Z", "card_id": "c", '
         b'"terminal_id": "t", "amount": NaN}', "amount"),
        (b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "(body)"),
    ],
)  # fmt: skip
def test_hostile_bodies_are_422_naming_the_field(client: TestClient, body: bytes, field: str) -> None:
    r = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["detail"]]
    rb = client.post("/score/batch", content=b"[" + body + b"]", headers={"content-type": "application/json"})
    assert rb.status_code == 422, rb.text


def test_malformed_json_is_422(client: TestClient) -> None:
    for payload in (b"{not json", b"", b"[1, 2]", b'"a string"'):
        r = client.post("/score", content=payload, headers={"content-type": "application/json"})
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["detail"][0]["field"] == "(body)"
    r = client.post("/score/batch", content=b"[{", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "(body)"
    r = client.post("/score/batch", json={"not": "a list"})
    assert r.status_code == 422 and "array" in r.json()["detail"][0]["reason"]


def test_batch_item_errors_name_the_index(client: TestClient) -> None:
    r = client.post("/score/batch", json=[tx(), tx(amount=-1)])
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "1.amount"


def test_bad_query_parameter_is_422(client: TestClient) -> None:
    r = client.post("/score?explain=maybe", json=tx())
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "explain"


def test_score_checks_inline_as_the_batch_route_does_with_dependencies(
    settings_for: Callable[..., Settings],
) -> None:
    """/score checks token and `explain` itself (no FastAPI dependencies); /score/batch keeps the dependencies:
    the same headers and flags get the same status and error body from both."""
    token = "s3cret-token-of-some-length"
    with TestClient(create_app(settings_for(api_token=token))) as c:
        for auth in (
            None,
            "",
            "Bearer",
            "Bearer ",
            f"Basic {token}",
            f"bearer {token}",
            f"Bearer  {token} ",
            "x",
        ):
            headers = {} if auth is None else {"Authorization": auth}
            one = c.post("/score", json=tx(), headers=headers)
            batch = c.post("/score/batch", json=[tx()], headers=headers)
            assert one.status_code == batch.status_code, auth
            if one.status_code == 401:
                assert one.json()["detail"] == batch.json()["detail"]
                assert one.headers["www-authenticate"] == batch.headers["www-authenticate"] == "Bearer"
        assert c.post("/score", json=tx(), headers={"Authorization": f"bearer {token}"}).status_code == 200
        headers = {"Authorization": f"Bearer {token}"}
        for flag in ("true", "1", "yes", "on", "false", "0", "off", "maybe", "2", ""):
            one = c.post(f"/score?explain={flag}", json=tx(), headers=headers)
            batch = c.post(f"/score/batch?explain={flag}", json=[tx()], headers=headers)
            assert one.status_code == batch.status_code, flag
            if one.status_code == 422:
                assert one.json() == batch.json()
            else:
                assert ("features" in one.json()) == ("features" in batch.json()["results"][0]), flag


def test_batch_over_the_limit_is_413(settings_for: Callable[..., Settings]) -> None:
    with TestClient(create_app(settings_for(api_max_batch=5))) as c:
        assert c.post("/score/batch", json=[tx(transaction_id=f"t{i}") for i in range(5)]).status_code == 200
        r = c.post("/score/batch", json=[tx(transaction_id=f"t{i}") for i in range(6)])
        assert r.status_code == 413
        assert "6 transactions exceeds the limit of 5" in r.json()["detail"]


def test_body_over_the_limit_is_413(settings_for: Callable[..., Settings]) -> None:
    with TestClient(create_app(settings_for(api_max_body_bytes=2048))) as c:
        big = [tx(transaction_id=f"t{i}") for i in range(30)]
        r = c.post("/score/batch", json=big)  # Content-Length says too large
        assert r.status_code == 413 and "2048 bytes" in r.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed body is counted
            yield b"["
            for i in range(30):
                yield (b"," if i else b"") + httpx.Request("POST", "/", json=tx()).content

            yield b"]"

        r = c.post("/score/batch", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/score", json=tx()).status_code == 200


def test_bearer_token(settings_for: Callable[..., Settings]) -> None:
    token = "s3cret-token-of-some-length"
    with TestClient(create_app(settings_for(api_token=token))) as c:
        r = c.post("/score", json=tx())
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = c.post("/score", json=tx(), headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert c.post("/score/batch", json=[tx()]).status_code == 401
        ok = c.post("/score", json=tx(), headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        ok = c.post("/score/batch", json=[tx()], headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert c.get(path).status_code == 200


def test_store_not_written_yet_is_an_empty_store(
    settings_for: Callable[..., Settings], tmp_path: Path, world: World
) -> None:
    # `make serve` right after `make train`: the stream never ran, so the SQLite file does not exist
    path = tmp_path / "not-yet" / "online.sqlite"
    with TestClient(create_app(settings_for(sqlite_path=path))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert "empty" in ready.json()["store"]
        card = str(world.history.transactions["card_id"].iloc[-1])
        r = c.post("/score", json=tx(card_id=card))
        assert r.status_code == 200, r.text
        assert r.json()["state_age_seconds"] == {"card": None, "terminal": None}
        assert not path.exists(), "the API must not create the stream's store"
        writer = SQLiteStore(path)  # the stream writes its first batch: the API reads it from then on
        seed_store(writer, world)
        writer.close()
        r = c.post("/score", json=tx(card_id=card))
        assert r.status_code == 200 and r.json()["state_age_seconds"]["card"] is not None
        assert c.get("/readyz").json()["store"] == "sqlite: reachable"


def test_store_unreadable_gives_503_not_500(settings_for: Callable[..., Settings], tmp_path: Path) -> None:
    broken = tmp_path / "online.sqlite"
    broken.mkdir()  # SQLite cannot open a directory: the store is there but unusable
    with TestClient(create_app(settings_for(sqlite_path=broken))) as c:
        r = c.post("/score", json=tx())
        assert r.status_code == 503
        assert r.json()["detail"].startswith("online store unavailable")
        assert r.json()["request_id"] == r.headers["x-request-id"]
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["missing"] == ["store"]
        assert c.get("/healthz").status_code == 200


def test_model_missing_gives_503_and_unready(settings_for: Callable[..., Settings]) -> None:
    with TestClient(create_app(settings_for(model_alias="no-such-alias"))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["missing"] == ["model"]
        r = c.post("/score", json=tx())
        assert r.status_code == 503 and "model not loaded" in r.json()["detail"]


def test_unexpected_error_is_json_500_with_request_id_only(settings_for: Callable[..., Settings]) -> None:
    app = create_app(settings_for())
    with TestClient(app, raise_server_exceptions=False) as c:

        class Exploding:
            backend = "sqlite"

            def get(self, *_: object) -> None:
                raise RuntimeError("secret internal detail")

        app.state.ctx.scorer.store = Exploding()
        r = c.post("/score", json=tx(), headers={"X-Request-ID": "boom-1"})
        assert r.status_code == 500
        assert r.json() == {"detail": "internal error", "request_id": "boom-1"}
        assert "secret" not in r.text


# ----------------------------------------------------------------------------- metrics and docs


def test_metrics_have_the_contract_names_and_labels(client: TestClient, world: World) -> None:
    client.post("/score", json=known_tx(world))
    client.post("/score", json=tx(amount=-1))
    text = client.get("/metrics").text
    assert (
        metric_value(
            text, "fraudwatch_api_requests_total", {"route": "/score", "method": "POST", "status": "200"}
        )
        == 1
    )
    assert metric_value(text, "fraudwatch_api_requests_total", {"route": "/score", "status": "422"}) == 1
    assert metric_value(text, "fraudwatch_api_request_duration_seconds_count", {"route": "/score"}) == 2
    assert metric_value(text, "fraudwatch_api_score_count") == 1
    assert (
        sum(
            metric_value(text, "fraudwatch_api_decisions_total", {"decision": d}) or 0
            for d in ("approve", "review", "decline")
        )
        == 1
    )
    info = {"component": "api", "name": MODEL, "version": world.versions[0], "alias": "production"}
    assert metric_value(text, "fraudwatch_model_info", info) == 1
    assert metric_value(text, "fraudwatch_api_state_age_seconds_count", {"entity": "card"}) == 1
    assert (
        metric_value(text, "fraudwatch_store_duration_seconds_count", {"backend": "sqlite", "op": "get"}) == 1
    )
    assert metric_value(text, "fraudwatch_api_model_reloads_total") == 0
    assert metric_value(text, "fraudwatch_api_model_reload_failures_total") == 0


def test_drift_gauges_from_the_live_window(client: TestClient, world: World) -> None:
    batch = [known_tx(world, i, transaction_id=f"d-{i}") for i in range(-300, 0)]
    assert client.post("/score/batch", json=batch).status_code == 200
    values = update_drift(client.app.state.ctx)  # type: ignore[attr-defined]
    assert "score" in values and "amount" in values
    text = client.get("/metrics").text
    assert metric_value(text, "fraudwatch_score_psi", {"component": "api"}) == pytest.approx(values["score"])
    assert metric_value(text, "fraudwatch_feature_psi", {"component": "api", "feature": "amount"}) is not None
    # amounts were tripled: the amount distribution moved away from training
    assert values["amount"] > 0.1


def test_openapi_documents_the_routes_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/score", "/score/batch", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"]
    body = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Transaction"}
    assert spec["components"]["schemas"]["Transaction"]["examples"]
    assert "422" in spec["paths"]["/score"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


# ----------------------------------------------------------------------------- model reload


def test_reload_under_load_has_zero_failed_requests(
    world: World, settings_for: Callable[..., Settings]
) -> None:
    app = create_app(settings_for())
    with LiveServer(app) as live:
        reloader = app.state.ctx.reloader
        first = app.state.ctx.holder.current.version
        v2 = train_and_log(world, seed=1, max_iter=20)
        stop = threading.Event()
        seen: set[str] = set()
        failures: list[str] = []

        def hammer(k: int) -> int:
            n = 0
            with httpx.Client(base_url=live.url, timeout=10) as http:
                while not stop.is_set() or n < 20:
                    r = http.post("/score", json=known_tx(world, -1 - (n % 50), transaction_id=f"h{k}-{n}"))
                    n += 1
                    if r.status_code != 200:
                        failures.append(f"{r.status_code} {r.text}")
                    else:
                        seen.add(r.json()["model"]["version"])
            return n

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(hammer, k) for k in range(4)]
            try:
                deadline = time.monotonic() + 30
                while first not in seen and not failures and time.monotonic() < deadline:
                    time.sleep(0.01)
                set_production(world, v2)
                assert reloader.check_sync() is True
                assert app.state.ctx.holder.current.version == v2
                # keep hammering until requests are answered by the new model
                deadline = time.monotonic() + 30
                while v2 not in seen and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                stop.set()
            total = sum(f.result() for f in futures)
        assert failures == []
        assert {first, v2} <= seen and total >= 80
        text = httpx.get(f"{live.url}/metrics").text
        assert metric_value(text, "fraudwatch_api_model_reloads_total") == 1
        assert metric_value(text, "fraudwatch_model_info", {"version": v2}) == 1
        assert metric_value(text, "fraudwatch_model_info", {"version": first}) is None
        assert reloader.check_sync() is False  # alias did not move again
    set_production(world, world.versions[0])


def test_failed_reload_keeps_serving(world: World, settings_for: Callable[..., Settings]) -> None:
    with TestClient(create_app(settings_for())) as c:
        ctx = c.app.state.ctx  # type: ignore[attr-defined]
        serving = ctx.holder.current.version
        broken = train_and_log(world, seed=2, max_iter=10)
        break_version_artifacts(world, broken)
        set_production(world, broken)
        try:
            assert ctx.reloader.check_sync() is False
            assert ctx.holder.current.version == serving
            r = c.post("/score", json=tx())
            assert r.status_code == 200 and r.json()["model"]["version"] == serving
            text = c.get("/metrics").text
            assert metric_value(text, "fraudwatch_api_model_reload_failures_total") == 1
            assert metric_value(text, "fraudwatch_api_model_reloads_total") == 0
            assert c.get("/readyz").status_code == 200
        finally:
            set_production(world, world.versions[0])


# ----------------------------------------------------------------------------- fuzzing


def test_any_request_body_is_scored_or_422_never_5xx(window_client: TestClient) -> None:
    """Property: bodies aimed at the edges (the stream's hostile records: times across the whole datetime
    range with offsets, leap seconds, huge/NaN numbers, control characters, surrogates, duplicate keys,
    deep nesting, arbitrary bytes) get a score or a 422 naming fields — never a 5xx or a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from tests.unit.test_fuzz_stream import hostile_records

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=hostile_records().map(lambda b: b or b""), batch=st.booleans())
    def post(body: bytes, batch: bool) -> None:
        path, content = ("/score/batch", b"[" + body + b"]") if batch else ("/score", body)
        r = window_client.post(path, content=content, headers={"content-type": "application/json"})
        assert r.status_code in (200, 422), (body, r.status_code, r.text)
        if r.status_code == 422:
            assert all(d["field"] and d["reason"] for d in r.json()["detail"]), r.text
        else:  # a score (or, for "[]", an empty batch)
            assert ("results" if batch else "decision") in r.json()

    post()


def test_schema_fuzzing_finds_no_server_errors(settings_for: Callable[..., Settings]) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.generation.modes import GenerationMode

    app = create_app(settings_for(api_max_batch=20))
    with LiveServer(app) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        problems: list[str] = []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(case=schema.as_strategy(generation_mode=mode))
            def fuzz(case: Any) -> None:
                response = case.call(base_url=live.url)
                if response.status_code >= 500:
                    problems.append(
                        f"{case.method} {case.path} {case.body!r} -> {response.status_code} {response.text}"
                    )
                assert "Traceback" not in response.text

            fuzz()
        assert problems == []


# ----------------------------------------------------------------------------- shadow scoring


def test_no_challenger_means_shadow_null_and_a_failing_shadow_never_fails_the_request(
    settings_for: Callable[..., Settings], world: World
) -> None:
    """A shadow whose predict raises (here: a model object that cannot score; a real registry version cannot
    be made to fail on demand) leaves the production answer intact, answers ``shadow: null`` and is counted."""
    import dataclasses

    app = create_app(settings_for())
    with TestClient(app) as c:
        ctx = app.state.ctx
        first = c.post("/score", json=known_tx(world))
        assert first.status_code == 200, first.text
        assert first.json()["shadow"] is None  # this registry has no challenger alias
        assert ctx.holder.shadow is None

        class CannotScore:
            def score_matrix(self, X: Any) -> Any:
                raise RuntimeError("shadow model broke")

        assert ctx.holder.current is not None
        ctx.holder.shadow = dataclasses.replace(ctx.holder.current, model=CannotScore(), alias="challenger")
        second = c.post("/score", json=known_tx(world))
        assert second.status_code == 200, second.text
        body = second.json()
        assert body["shadow"] is None
        assert (body["score"], body["decision"]) == (first.json()["score"], first.json()["decision"])
        text = c.get("/metrics").text
        assert metric_value(text, "fraudwatch_api_shadow_failures_total", {"stage": "score"}) == 1
        assert metric_value(text, "fraudwatch_api_shadow_decisions_total", {"decision": "approve"}) == 0
