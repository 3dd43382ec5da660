"""The stream job warm-started from a bootstrap snapshot: real broker, real MLflow registry, real Spark.

A small simulated history is replayed into a snapshot (fraudwatch.bootstrap); the job starts on a fresh
checkpoint with FRAUDWATCH_STREAM_WARM_START pointing at it, and live traffic continuing the history (the
same cards and terminals, simulated clock) is sent in three parts: before the first batch (the snapshot and
the first live rows meet in batch 0), after it, and after a restart from the checkpoint (where Spark must not
apply the initial state again). Every live row's features must equal an offline replay of history + live
(1e-9), which a cold start cannot do (every card would be new).

One partition per topic: the parts arrive in time order whatever offsets a micro-batch cuts at, so the
comparison with the time-ordered replay tests the warm state, not where a batch splits two partitions.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from fraudwatch.bootstrap import build_snapshot, write_snapshot
from fraudwatch.config import Settings
from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch.simulator import LiveSimulator, simulate
from tests.integration.test_stream import StreamUnderTest, features_of, register_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
COLUMNS = ["transaction_id", "event_time", "card_id", "terminal_id", "amount", "channel", "country"]


def test_a_warm_started_stream_scores_live_traffic_as_a_replay_of_history_and_live(
    services: Any, kafka_bootstrap: str, mlflow_tracking_uri: str, tmp_path: Path
) -> None:
    history = simulate(10, 120, 40, seed=11)
    end = history.spec.end
    snapshot = build_snapshot(history.transactions, history.labels, end)
    path = tmp_path / "bootstrap" / "states.parquet"
    write_snapshot(snapshot, path)

    live = pd.DataFrame(LiveSimulator.continuing(history.spec).next_batch(900).transactions)
    parts = [live.iloc[:300], live.iloc[300:600], live.iloc[600:]]

    version = register_model(mlflow_tracking_uri, seed=5, review=0.3, decline=0.7)
    run = uuid.uuid4().hex[:8]
    values = {
        "environment": "test",
        "local_dir": str(tmp_path),
        "kafka_bootstrap": kafka_bootstrap,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "model_uri": f"models:/fraud-detector/{version}",
        **{f"topic_{t}": f"warm-{run}.{t}" for t in ("transactions", "labels", "scored", "alerts", "dlq")},
        "stream_metrics_port": str(services.stream_metrics_port),
        "stream_trigger_seconds": "1",
        "stream_warm_start": str(path),
        # simulated event times (the history starts in January): the demo runs without the plausibility window
        "event_max_age_days": "0",
        "event_max_future_seconds": "0",
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in settings.all_topics]).values():
        future.result()
    env = {**os.environ, **{f"FRAUDWATCH_{k.upper()}": v for k, v in values.items()}, "PYTHONUNBUFFERED": "1"}
    job = StreamUnderTest(settings, env)
    try:
        job.send_tx(parts[0].to_dict("records"))  # batch 0: the snapshot and the first live rows together
        job.start()
        rows = [job.wait_scored(parts[0]["transaction_id"].tolist(), timeout=300)]
        job.send_tx(parts[1].to_dict("records"))
        rows.append(job.wait_scored(parts[1]["transaction_id"].tolist()))
        job.stop()
        job.start()  # from the checkpoint: the initial state must not be applied again
        job.send_tx(parts[2].to_dict("records"))
        rows.append(job.wait_scored(parts[2]["transaction_id"].tolist(), timeout=300))
    finally:
        job.stop()

    labels = history.labels
    known = labels[pd.to_datetime(labels["reported_at"], utc=True) <= end]
    both = pd.concat(
        [history.transactions[COLUMNS], live[COLUMNS].assign(event_time=pd.to_datetime(live["event_time"]))],
        ignore_index=True,
    )
    expected = replay(both, known).features.iloc[len(history.transactions) :].to_numpy()
    got = np.vstack([features_of(r) for r in rows])
    bad = np.abs(got - expected) > 1e-9
    differing = {FEATURE_NAMES[j]: int(bad[:, j].sum()) for j in np.flatnonzero(bad.any(axis=0))}
    assert not differing, f"live features differing from the replay of history + live (rows): {differing}"

    # what the warm start changes: the history's cards are known from their first live transaction on
    first = ~live["card_id"].duplicated().to_numpy()
    assert (got[first, F["card_is_new"]] == 0).all()
    assert len(set(live["card_id"]) - set(snapshot.cards)) == 0
