"""The scorer API warm-started from a bootstrap snapshot, against the real services: the snapshot is loaded
into a real Redis online store by the CLI (`python -m fraudwatch.bootstrap load-store`), the model comes from
the MLflow tracking server, and the API runs on a real uvicorn server. Its features of a live transaction of
a history card equal a replay of history + live (1e-9); a back-dated request is flagged (as_of) and counted."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fraudwatch.bootstrap import build_snapshot, write_snapshot
from fraudwatch.config import Settings
from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch.simulator import LiveSimulator
from fraudwatch.store import RedisStore
from fraudwatch_api import create_app
from tests.unit.test_api import LiveServer, World, build_world, metric_value

pytestmark = pytest.mark.integration
REDIS_DB = 9  # a database of its own on the session's Redis, flushed by this module
ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["transaction_id", "event_time", "card_id", "terminal_id", "amount", "channel", "country"]


@pytest.fixture(scope="module")
def world(mlflow_tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    name = f"fraud-detector-warm-{uuid.uuid4().hex[:8]}"
    return build_world(tmp_path_factory.mktemp("warm-api"), tracking_uri=mlflow_tracking_uri, model_name=name)


@pytest.fixture
def redis_db_url(redis_url: str) -> Iterator[str]:
    url = f"{redis_url.rsplit('/', 1)[0]}/{REDIS_DB}"
    store = RedisStore(url)
    store._client.flushdb()
    store.close()
    yield url
    store = RedisStore(url)
    store._client.flushdb()
    store.close()


def test_api_on_a_store_loaded_from_the_snapshot_scores_like_a_replay_and_flags_back_dated_requests(
    make_settings: Callable[..., Settings], world: World, redis_db_url: str, tmp_path: Path
) -> None:
    history = world.history
    end = history.spec.end
    snapshot = build_snapshot(history.transactions, history.labels, end)
    path = tmp_path / "states.parquet"
    write_snapshot(snapshot, path)
    env = {
        **os.environ,
        "FRAUDWATCH_STORE_BACKEND": "redis",
        "FRAUDWATCH_REDIS_URL": redis_db_url,
        "FRAUDWATCH_LOCAL_DIR": str(tmp_path),
    }
    load = [sys.executable, "-m", "fraudwatch.bootstrap", "load-store", "--snapshot", str(path)]
    done = subprocess.run(load, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    assert f"{len(snapshot.cards):,} cards and {len(snapshot.terminals):,} terminals loaded" in done.stdout

    live = pd.DataFrame(LiveSimulator.continuing(history.spec).next_batch(300).transactions)
    live["event_time"] = pd.to_datetime(live["event_time"], utc=True)
    # the first live transaction of both its card and its terminal: the API reads the store the snapshot
    # filled (nothing live was written to it)
    pick = live[~live["card_id"].duplicated() & ~live["terminal_id"].duplicated()].iloc[:5]
    known = history.labels[pd.to_datetime(history.labels["reported_at"], utc=True) <= end]
    both = pd.concat([history.transactions[COLUMNS], live[COLUMNS]], ignore_index=True)
    expected = replay(both, known).features.iloc[len(history.transactions) :]
    expected.index = live["transaction_id"]

    settings = make_settings(
        need=("mlflow", "redis"),
        topics=False,
        store_backend="redis",
        redis_url=redis_db_url,
        model_name=world.model_name,
        model_poll_seconds=3600,
        event_max_age_days=0,
        event_max_future_seconds=0,
    )

    def body(row: Any, **overrides: Any) -> dict[str, Any]:
        values = {c: row[c] for c in COLUMNS}
        values["event_time"] = row["event_time"].isoformat().replace("+00:00", "Z")
        return {**values, "currency": "EUR", **overrides}

    with LiveServer(create_app(settings)) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        for _, row in pick.iterrows():
            r = client.post("/score", params={"explain": "true"}, json=body(row))
            assert r.status_code == 200, r.text
            got = r.json()
            features = np.array([got["features"][n] for n in FEATURE_NAMES])
            np.testing.assert_allclose(
                features, expected.loc[row["transaction_id"]].to_numpy(), rtol=0, atol=1e-9
            )
            assert got["features"]["card_is_new"] == 0.0
            assert got["as_of"]["state_newer_than_event"] is False

        row = pick.iloc[0]
        card_rows = history.transactions[history.transactions["card_id"] == row["card_id"]]
        back_dated = card_rows["event_time"].min() + pd.Timedelta(seconds=1)
        r = client.post(
            "/score", json=body(row, transaction_id="back-dated", event_time=back_dated.isoformat())
        )
        assert r.status_code == 200, r.text
        assert r.json()["as_of"]["card_newer"] is True
        text = client.get("/metrics").text
    assert metric_value(text, "fraudwatch_api_state_newer_than_event_total", {"entity": "card"}) == 1.0
