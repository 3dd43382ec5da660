"""Parity: the offline builder, the stream job and the API give identical features and scores.

Real Kafka, real Spark, a real MLflow model. One event sequence goes three ways:

* **history** through the running stream in waves (each wave waits until the stream has committed the one
  before), so a card's transactions are spread over several micro-batches and fraud labels land between
  transactions of the same terminal, in other batches than those transactions;
* then two **rounds** of new transactions, each scored first by the API (state read from the online store the
  stream's stages wrote) and then by the stream, with fraud labels for round-1 transactions reported between
  the rounds; the rounds hold entities first seen in the stream (cards and terminals of no history event and
  of no warm-start snapshot, and a terminal known only from a label);
* and offline: one ``fraudwatch.features.replay`` of everything, scored with the same model version.

Every vector agrees to 1e-9 and every score too. The stream reads whatever prefix of the topics exists when a
trigger fires, so the test produces each event only after the previous one is acknowledged (:func:`_produce`):
any prefix the stream reads is then a prefix in time order, as the replay sees it, however the micro-batches
fall.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fraudwatch.config import Settings
from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch.simulator import simulate
from tests.integration.test_stream import register_model, set_production, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.slow]

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
HISTORY_WAVES = 3


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


def _label_json(r: Any) -> dict[str, Any]:
    return {
        "transaction_id": r.transaction_id,
        "card_id": r.card_id,
        "terminal_id": r.terminal_id,
        "event_time": _iso(r.event_time),
        "is_fraud": bool(r.is_fraud),
        "reported_at": _iso(r.reported_at),
    }


def _produce(producer: Producer, settings: Settings, tx: pd.DataFrame, labels: pd.DataFrame) -> None:
    """Transactions at their event_time and labels at their reported_at, in (time, kind) order like the
    replay, each sent only once the one before it is acknowledged: a micro-batch that starts while a wave is
    being produced then reads a time-ordered prefix of it, whatever partitions and topics the events are in.
    """
    events = [
        (r.event_time.value, 0, settings.topic_transactions, r.card_id, _tx_json(r)) for r in tx.itertuples()
    ]
    events += [
        (r.reported_at.value, 1, settings.topic_labels, r.transaction_id, _label_json(r))
        for r in labels.itertuples()
    ]
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for _, _, topic, key, value in sorted(events, key=lambda e: (e[0], e[1])):
        producer.produce(topic, key=key, value=orjson.dumps(value), on_delivery=delivered)
        assert producer.flush(30) == 0 and not errors, errors


def _caught_up(settings: Settings, consumer: Consumer) -> bool:
    """The stream's last committed batch reached the end of both input topics (all it was sent is in the
    table, the online store and Spark state)."""
    from fraudwatch_stream.metrics import checkpoint_offsets

    done = checkpoint_offsets(settings.resolved_checkpoint_dir / "scorer")
    for topic in (settings.topic_transactions, settings.topic_labels):
        for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if done.get(topic, {}).get(str(partition), 0) < high:
                return False
    return True


def _rows(settings: Settings, ids: list[str]) -> pd.DataFrame:
    path = settings.local_dir / "stream" / "scored.sqlite"
    with sqlite3.connect(path, timeout=30) as con:
        marks = ",".join("?" * len(ids))
        rows = pd.read_sql(
            f"SELECT transaction_id, card_id, features, score, batch_id FROM scored "
            f"WHERE transaction_id IN ({marks})",
            con,
            params=ids,
        )
    assert len(rows) == len(ids), f"{len(ids) - len(rows)} of {len(ids)} transactions have no row"
    return rows.set_index("transaction_id").loc[ids]


def _features(rows: pd.DataFrame) -> np.ndarray:
    return np.array([json.loads(f) for f in rows["features"]], dtype=np.float64)


def _rounds(tx: pd.DataFrame, end: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(round 1, fraud labels reported after it, round 2). Within a round no card and no terminal appears
    twice: the API only reads state, so two transactions of one entity in a round would differ between the
    API and the stream (which counts the earlier one, rightly)."""
    base = tx.drop_duplicates("card_id").drop_duplicates("terminal_id")
    cards = base["card_id"].tolist()
    terminals = base["terminal_id"].tolist()
    assert len(cards) >= 20, "the history is too small for the rounds"
    template = base.iloc[0]

    def make(prefix: str, pairs: list[tuple[str, str]], start: pd.Timestamp) -> pd.DataFrame:
        assert len({c for c, _ in pairs}) == len(pairs) and len({t for _, t in pairs}) == len(pairs)
        return pd.DataFrame(
            {
                "transaction_id": [f"{prefix}-{i}" for i in range(len(pairs))],
                "event_time": [start + timedelta(minutes=i) for i in range(len(pairs))],
                "card_id": [c for c, _ in pairs],
                "terminal_id": [t for _, t in pairs],
                "amount": [float(template.amount) * (1.5 + i) for i in range(len(pairs))],
                "currency": "EUR",
                "merchant_category": template.merchant_category,
                "channel": template.channel,
                "country": template.country,
            }
        )

    # round 1: history cards at history terminals, and a card and a terminal no history event touched
    first = make(
        "r1",
        [*zip(cards[:10], terminals[:10], strict=True), ("card-fresh-0", "term-fresh-0")],
        end + timedelta(minutes=30),
    )
    # between the rounds: frauds reported on five history terminals and on the fresh one (each of them
    # has a round-1 transaction before the label and gets a round-2 one after it), and a fraud on a
    # terminal the stream has not seen at all, for a transaction it never received
    labelled = first.iloc[[0, 1, 2, 3, 4, 10]]
    unseen = pd.DataFrame(
        {
            "transaction_id": ["unseen-0"],
            "card_id": ["card-unseen"],
            "terminal_id": ["term-label-only"],
            "event_time": [end + timedelta(minutes=50)],
        }
    )
    between = pd.concat([labelled[list(unseen.columns)], unseen], ignore_index=True).assign(
        is_fraud=True, reported_at=end + timedelta(hours=2)
    )
    # round 2, after the labels: other history cards at the labelled terminals; round-1 cards at history
    # terminals not used yet; the fresh card at a fresh terminal; new cards at the fresh terminal of round 1
    # and at the terminal known only from its label
    second = make(
        "r2",
        [
            *zip(cards[10:15], terminals[:5], strict=True),
            *zip(cards[5:10], terminals[10:15], strict=True),
            ("card-fresh-0", "term-fresh-1"),
            ("card-fresh-1", "term-fresh-0"),
            ("card-fresh-2", "term-label-only"),
        ],
        end + timedelta(hours=3),
    )
    return first, between, second


def test_offline_stream_and_api_agree(
    make_settings: Callable[..., Settings], spark: Any, mlflow_tracking_uri: str
) -> None:
    from fastapi.testclient import TestClient

    from fraudwatch.model import load_model
    from fraudwatch_api import create_app
    from fraudwatch_stream.job import JobOptions, StreamJob

    settings = make_settings(
        model_poll_seconds=1.0,
        stream_trigger_seconds=1.0,
        # the simulated history is months old: the plausibility window's age bound is off for this replay
        event_max_age_days=0,
        # a batch reads everything produced so far: a rate limit would take a different share of each
        # partition and topic, and the events of one terminal could then arrive out of time order
        stream_max_offsets_per_trigger=1_000_000,
    )
    version = register_model(mlflow_tracking_uri, seed=5, review=0.3, decline=0.7)
    set_production(mlflow_tracking_uri, version)

    # 10 days: fraud labels reported inside the history (median delay 3 days) and delayed terminal tiles
    history = simulate(10, 150, 50, seed=11)
    tx, labels = history.transactions, history.labels
    end = tx["event_time"].max()
    labels = labels[labels["reported_at"] <= end]  # the labels known when the rounds arrive
    first, between, second = _rounds(tx, end)

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "parity-watermarks"})
    job = StreamJob(spark, settings, JobOptions(state_buckets=8))
    query = job.start()

    def caught_up() -> bool:
        assert query.isActive, query.exception()
        return _caught_up(settings, consumer)

    try:
        cuts = pd.date_range(tx["event_time"].min(), end, periods=HISTORY_WAVES + 1)
        for i, (lo, hi) in enumerate(pairwise(cuts)):
            last = i == HISTORY_WAVES - 1
            _produce(
                producer,
                settings,
                tx[(tx["event_time"] >= lo) & ((tx["event_time"] < hi) | last)],
                labels[(labels["reported_at"] >= lo) & ((labels["reported_at"] < hi) | last)],
            )
            wait_for(caught_up, 300, f"the stream to commit history wave {i + 1}")
        stream_history = _rows(settings, tx["transaction_id"].tolist())

        with TestClient(create_app(settings)) as client:
            # per round: the API's features and scores, the stream's rows
            rounds: list[tuple[np.ndarray, np.ndarray, pd.DataFrame]] = []
            for n, (new, after) in enumerate(((first, between), (second, None)), start=1):
                # the API scores the round from the state the stream wrote to the online store ...
                responses = [
                    client.post("/score?explain=true", content=orjson.dumps(_tx_json(r)))
                    for r in new.itertuples()
                ]
                assert [r.status_code for r in responses] == [200] * len(new), responses[0].text
                api = [r.json() for r in responses]
                # ... then the stream gets the same transactions (and what is reported after them)
                _produce(producer, settings, new, after if after is not None else new.iloc[:0])
                wait_for(caught_up, 180, f"the stream to commit round {n}")
                rounds.append(
                    (
                        np.array([[a["features"][f] for f in FEATURE_NAMES] for a in api]),
                        np.array([a["score"] for a in api]),
                        _rows(settings, new["transaction_id"].tolist()),
                    )
                )
    finally:
        query.stop()
        job.stop()
        consumer.close()

    everything = pd.concat([tx, first, second], ignore_index=True)
    all_labels = pd.concat([labels, between], ignore_index=True)
    offline = replay(everything, all_labels).features.to_numpy()
    model = load_model(f"models:/fraud-detector/{version}").model
    offline_scores = model.score_matrix(offline)
    n_hist, n_first = len(tx), len(first)
    parts = {
        "history": slice(0, n_hist),
        "round 1": slice(n_hist, n_hist + n_first),
        "round 2": slice(n_hist + n_first, len(everything)),
    }

    # what the scenario claims to cover, it covers
    batches = stream_history.groupby("card_id")["batch_id"].nunique()
    assert (batches >= HISTORY_WAVES).sum() > len(batches) // 2, "cards are not spread over micro-batches"
    # a fraud label in a later wave than some of its terminal's transactions and an earlier one than others
    wave = cuts[1:-1].searchsorted(tx["event_time"], side="right")
    label_wave = cuts[1:-1].searchsorted(labels["reported_at"], side="right")
    frauds = labels["is_fraud"].to_numpy(dtype=bool)
    between_waves = [
        (wave[(tx["terminal_id"] == t).to_numpy()] < w).any()
        and (wave[(tx["terminal_id"] == t).to_numpy()] > w).any()
        for t, w in zip(labels["terminal_id"][frauds], label_wave[frauds], strict=True)
    ]
    assert sum(between_waves) >= 1, "no fraud label arrives in a wave between two of its terminal's waves"
    # ... and the labels change features: the history's for later transactions at their terminals, the
    # labels between the rounds those of every round-2 transaction at a labelled terminal
    unlabelled = replay(everything, labels.iloc[:0]).features.to_numpy()
    assert (np.abs(offline - unlabelled)[parts["history"]].max(axis=1) > 0).sum() >= 10
    before_round_2 = replay(everything, labels).features.to_numpy()[parts["round 2"]]
    on_labelled = second["terminal_id"].isin(between["terminal_id"]).to_numpy()
    assert on_labelled.sum() == 7
    assert (np.abs(offline[parts["round 2"]] - before_round_2)[on_labelled].max(axis=1) > 0).all()
    # entities first seen in the stream: round 2 finds their state (written by the stream alone) in the store
    expected = pd.DataFrame(offline[parts["round 2"]], columns=list(FEATURE_NAMES), index=second.index)
    assert expected.loc[second["card_id"].eq("card-fresh-0"), "card_is_new"].tolist() == [0.0]
    assert expected.loc[second["terminal_id"].eq("term-fresh-0"), "terminal_is_new"].tolist() == [0.0]
    for terminal in ("term-fresh-0", "term-label-only"):
        row = expected[second["terminal_id"].eq(terminal)].iloc[0]
        assert row["terminal_fraud_count_utc30d"] == 1.0 and row["terminal_days_since_fraud"] < 1.0

    def agree(got: np.ndarray, want: np.ndarray, what: str) -> None:
        bad = np.abs(got - want) > 1e-9
        differing = {FEATURE_NAMES[j]: int(bad[:, j].sum()) for j in np.flatnonzero(bad.any(axis=0))}
        assert not differing, f"{what}: features differing from the replay (rows per feature): {differing}"

    agree(_features(stream_history), offline[parts["history"]], "stream, history")
    np.testing.assert_allclose(
        stream_history["score"].to_numpy(), offline_scores[parts["history"]], rtol=0, atol=1e-9
    )
    for (api_features, api_scores, stream_rows), name in zip(rounds, ("round 1", "round 2"), strict=True):
        agree(_features(stream_rows), offline[parts[name]], f"stream, {name}")
        agree(api_features, offline[parts[name]], f"API, {name}")
        np.testing.assert_allclose(
            stream_rows["score"].to_numpy(), offline_scores[parts[name]], rtol=0, atol=1e-9
        )
        np.testing.assert_allclose(api_scores, offline_scores[parts[name]], rtol=0, atol=1e-9)
