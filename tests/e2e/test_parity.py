"""Parity: the offline builder, the stream job and the API give identical features and scores.

The same history goes through ``fraudwatch.features.replay`` and through the stream (real Kafka, real Spark,
real MLflow model); the stream writes entity state to the online store; new transactions are then scored
by the API (state from the store), by the stream, and offline (replay of history + them).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from fraudwatch.config import Settings
from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch.simulator import simulate
from tests.integration.test_stream import register_model, set_production, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]


def _iso(ts: pd.Timestamp) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _tx_json(r: Any) -> dict[str, Any]:
    return {
        "transaction_id": r.transaction_id,
        "event_time": _iso(r.event_time),
        "card_id": r.card_id,
        "terminal_id": r.terminal_id,
        "amount": float(r.amount),
        "currency": r.currency,
        "merchant_category": r.merchant_category,
        "channel": r.channel,
        "country": r.country,
    }


def _rows(settings: Settings, ids: list[str]) -> pd.DataFrame | None:
    path = settings.local_dir / "stream" / "scored.sqlite"
    if not path.exists():
        return None
    with sqlite3.connect(path, timeout=30) as con:
        marks = ",".join("?" * len(ids))
        rows = pd.read_sql(
            f"SELECT transaction_id, features, score FROM scored WHERE transaction_id IN ({marks})",
            con,
            params=ids,
        )
    return rows.set_index("transaction_id").loc[ids] if len(rows) == len(ids) else None


def test_offline_stream_and_api_agree(
    make_settings: Callable[..., Settings], spark: Any, mlflow_tracking_uri: str
) -> None:
    from fastapi.testclient import TestClient

    from fraudwatch.model import load_model
    from fraudwatch_api import create_app
    from fraudwatch_stream.job import JobOptions, StreamJob

    # the simulated history is months old: the plausibility window's age bound is off for this replay
    settings = make_settings(model_poll_seconds=1.0, stream_trigger_seconds=1.0, event_max_age_days=0)
    version = register_model(mlflow_tracking_uri, seed=5, review=0.3, decline=0.7)
    set_production(mlflow_tracking_uri, version)

    history = simulate(4, 150, 50, seed=11)
    tx, labels = history.transactions, history.labels
    end = tx["event_time"].max()
    labels = labels[labels["reported_at"] <= end]  # the labels known when the new transactions arrive
    # one per card AND per terminal: the API only reads state, so a new transaction must not share an
    # entity with another new one (the stream and the replay would count the earlier one, rightly)
    new = tx.drop_duplicates("card_id").drop_duplicates("terminal_id").head(25).copy()
    new["transaction_id"] = [f"new-{i}" for i in range(len(new))]
    new["event_time"] = [end + timedelta(minutes=30 + i) for i in range(len(new))]
    new["amount"] = new["amount"] * 3.0
    # and entities first seen in the stream: a card and a terminal no history event touched
    fresh = new.head(2).assign(
        transaction_id=["fresh-0", "fresh-1"],
        card_id=["card-fresh-0", "card-fresh-1"],
        terminal_id=["term-fresh-0", "term-fresh-1"],
        event_time=[end + timedelta(minutes=90 + i) for i in range(2)],
    )
    new = pd.concat([new, fresh], ignore_index=True)

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})
    events = [
        (r.event_time.value, 0, settings.topic_transactions, r.card_id, _tx_json(r)) for r in tx.itertuples()
    ]
    events += [
        (
            r.reported_at.value,
            1,
            settings.topic_labels,
            r.transaction_id,
            {
                "transaction_id": r.transaction_id,
                "card_id": r.card_id,
                "terminal_id": r.terminal_id,
                "event_time": _iso(r.event_time),
                "is_fraud": bool(r.is_fraud),
                "reported_at": _iso(r.reported_at),
            },
        )
        for r in labels.itertuples()
    ]
    for _, _, topic, key, value in sorted(events, key=lambda e: (e[0], e[1])):
        producer.produce(topic, key=key, value=orjson.dumps(value))
    producer.flush(30)

    job = StreamJob(spark, settings, JobOptions(state_buckets=8))
    query = job.start()
    try:
        ids = tx["transaction_id"].tolist()

        def history_scored() -> pd.DataFrame | None:
            assert query.isActive, query.exception()
            return _rows(settings, ids)

        stream_hist = wait_for(history_scored, 300, "the history scored by the stream")
        offline = replay(tx, labels).features
        got = np.array([json.loads(f) for f in stream_hist["features"]])
        np.testing.assert_allclose(got, offline.to_numpy(), rtol=0, atol=1e-9)

        # the API, on the state the stream pushed to the online store
        with TestClient(create_app(settings)) as client:
            api = [
                client.post("/score?explain=true", content=orjson.dumps(_tx_json(r))).json()
                for r in new.itertuples()
            ]
        api_features = np.array([[a["features"][n] for n in FEATURE_NAMES] for a in api])
        api_scores = np.array([a["score"] for a in api])

        new_ids = new["transaction_id"].tolist()
        for r in new.itertuples():
            producer.produce(settings.topic_transactions, key=r.card_id, value=orjson.dumps(_tx_json(r)))
        producer.flush(30)
        stream_new = wait_for(
            lambda: _rows(settings, new_ids), 180, "the new transactions scored by the stream"
        )
        stream_features = np.array([json.loads(f) for f in stream_new["features"]])

        both = pd.concat([tx, new], ignore_index=True)
        offline_new = replay(both, labels).features.iloc[len(tx) :].to_numpy()
        model = load_model(f"models:/fraud-detector/{version}").model
        offline_scores = model.score_matrix(offline_new)
    finally:
        query.stop()
        job.stop()

    np.testing.assert_allclose(stream_features, offline_new, rtol=0, atol=1e-9)
    np.testing.assert_allclose(api_features, offline_new, rtol=0, atol=1e-9)
    np.testing.assert_allclose(stream_new["score"].to_numpy(), offline_scores, rtol=0, atol=1e-9)
    np.testing.assert_allclose(api_scores, offline_scores, rtol=0, atol=1e-9)
