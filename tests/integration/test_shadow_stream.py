"""Shadow scoring in the real stream job (real broker, MLflow registry and Spark): the ``challenger`` alias is
set and then moved while transactions flow; both models' scores land in the authoritative table, and
production's decisions — the only ones published and alerted — are exactly what production alone decides.

The job runs as a subprocess, as in tests/integration/test_stream.py, whose helpers this module reuses; its
registered model has a name of its own, so the aliases moved here touch no other test.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from fraudwatch.config import Settings
from fraudwatch.features import replay
from tests.integration.test_stream import StreamUnderTest, _metrics, tx, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = (datetime.now(UTC) - timedelta(days=10)).replace(hour=9, minute=0, second=0, microsecond=0)
# production and two challengers with other thresholds, so that decisions differ and the shadow shows it:
# the first challenger reviews or declines everything (a score of exactly 0 aside)
THRESHOLDS = {"production": (0.3, 0.7), "first": (0.0, 1e-9), "second": (0.5, 0.9)}


def _register(tracking_uri: str, name: str) -> dict[str, str]:
    """Three small real models (one simulated history, three seeds), registered under ``name``."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingClassifier

    from fraudwatch.model import FraudModel, Thresholds, compute_reference, log_model
    from fraudwatch.simulator import simulate

    history = simulate(7, 400, 150, seed=7)
    features = replay(history.transactions, history.labels).features.to_numpy()
    target = history.transactions["is_fraud"].to_numpy()
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri, tracking_uri)
    versions = {}
    for seed, (role, (review, decline)) in enumerate(THRESHOLDS.items()):
        estimator = HistGradientBoostingClassifier(max_iter=10 + 5 * seed, random_state=seed).fit(
            features, target
        )
        reference = compute_reference(features, estimator.predict_proba(features)[:, 1])
        with mlflow.start_run():
            mv = log_model(
                FraudModel(estimator, Thresholds(review, decline), reference),
                registered_model_name=name,
                client=client,
            )
        assert mv is not None
        versions[role] = str(mv.version)
    client.set_registered_model_alias(name, "production", versions["production"])
    return versions


@pytest.fixture(scope="module")
def shadow_job(
    services: Any, kafka_bootstrap: str, mlflow_tracking_uri: str, tmp_path_factory: Any
) -> Iterator[tuple[StreamUnderTest, dict[str, str]]]:
    run = uuid.uuid4().hex[:8]
    name = f"shadow-{run}"
    versions = _register(mlflow_tracking_uri, name)
    values = {
        "environment": "test",
        "local_dir": str(tmp_path_factory.mktemp("shadow")),
        "kafka_bootstrap": kafka_bootstrap,
        "mlflow_tracking_uri": mlflow_tracking_uri,
        "model_name": name,
        "topic_transactions": f"sh-{run}.transactions",
        "topic_labels": f"sh-{run}.labels",
        "topic_scored": f"sh-{run}.scored",
        "topic_alerts": f"sh-{run}.alerts",
        "topic_dlq": f"sh-{run}.dlq",
        "stream_metrics_port": str(services.stream_metrics_port),
        "stream_trigger_seconds": "1",
        "model_poll_seconds": "1",
    }
    settings = Settings(**values)  # type: ignore[arg-type]
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.create_topics([NewTopic(t, 2, 1) for t in settings.all_topics]).values():
        future.result()
    env = {**os.environ, **{f"FRAUDWATCH_{k.upper()}": v for k, v in values.items()}, "PYTHONUNBUFFERED": "1"}
    job = StreamUnderTest(settings, env)
    job.start()
    yield job, versions
    job.stop()


def _table(job: StreamUnderTest) -> pd.DataFrame:
    with sqlite3.connect(job.table, timeout=30) as con:
        return pd.read_sql(
            "SELECT transaction_id, features, score, decision, model_version, challenger_version, "
            "challenger_score, challenger_decision FROM scored",
            con,
        ).set_index("transaction_id")


def _scores(tracking_uri: str, name: str, version: str, features: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """What registered version ``version`` alone scores and decides for these feature rows."""
    from mlflow import MlflowClient

    from fraudwatch.model import load_model

    model = load_model(f"models:/{name}/{version}", MlflowClient(tracking_uri, tracking_uri)).model
    scores = np.asarray(model.score_matrix(features), dtype=np.float64)
    return scores, list(model.decide(scores))


def test_challenger_moved_while_traffic_flows(
    shadow_job: tuple[StreamUnderTest, dict[str, str]], mlflow_tracking_uri: str
) -> None:
    from mlflow import MlflowClient

    job, versions = shadow_job
    name = job.settings.model_name
    client = MlflowClient(mlflow_tracking_uri, mlflow_tracking_uri)
    sent: list[str] = []

    def send(n: int = 2) -> None:
        batch = [
            tx(
                f"sh-{len(sent) + i}",
                T0 + timedelta(minutes=len(sent) + i),
                f"card-{(len(sent) + i) % 7}",
                f"term-{(len(sent) + i) % 3}",
                amount=5.0 + 37.0 * ((len(sent) + i) % 11),
            )
            for i in range(n)
        ]
        job.send_tx(batch)
        sent.extend(t["transaction_id"] for t in batch)

    # no challenger alias: production only, shadow columns null
    send(4)
    job.wait_scored(list(sent), timeout=300)
    assert _table(job)["challenger_version"].isna().all()

    # set the challenger, then move it, while transactions keep arriving
    for role in ("first", "second"):
        client.set_registered_model_alias(name, "challenger", versions[role])

        def shadowed_by(version: str = versions[role]) -> bool:
            job.alive()
            send()
            return bool((_table(job)["challenger_version"] == version).any())

        wait_for(shadowed_by, 180, f"a transaction shadow-scored by the {role} challenger", interval=1.0)
    send(6)
    job.wait_scored(list(sent), timeout=300)
    table = _table(job).loc[sent]
    assert len(table) == len(sent)

    # production: every row, score and decision exactly what production alone gives for these features
    assert (table["model_version"] == versions["production"]).all()
    features = np.array([json.loads(f) for f in table["features"]], dtype=np.float64)
    prod_scores, prod_decisions = _scores(mlflow_tracking_uri, name, versions["production"], features)
    np.testing.assert_allclose(table["score"].to_numpy(), prod_scores, rtol=0, atol=1e-12)
    assert table["decision"].tolist() == prod_decisions

    # the challengers: each shadow-scored row carries its version's own score and decision
    shadowed = table[table["challenger_version"].notna()]
    assert set(shadowed["challenger_version"]) == {versions["first"], versions["second"]}
    for version, rows in shadowed.groupby("challenger_version"):
        mask = table.index.isin(rows.index)
        scores, decisions = _scores(mlflow_tracking_uri, name, str(version), features[mask])
        np.testing.assert_allclose(rows["challenger_score"].to_numpy(), scores, rtol=0, atol=1e-12)
        assert rows["challenger_decision"].tolist() == decisions
    unshadowed = table[table["challenger_version"].isna()]
    assert unshadowed["challenger_score"].isna().all() and unshadowed["challenger_decision"].isna().all()
    disagreements = int((shadowed["challenger_decision"] != shadowed["decision"]).sum())
    # the thresholds differ on purpose: otherwise nothing here could show a mix-up of the two models
    assert disagreements > 0, shadowed[["decision", "challenger_decision", "challenger_version"]]

    # what is published is production's: the scored records and the alerts
    published = job.consume(job.settings.topic_scored, lambda got: _ids(got) >= set(sent))
    by_id = {v["transaction_id"]: v for v in (orjson.loads(m.value()) for m in published)}
    for tx_id in sent:
        record = by_id[tx_id]
        assert record["decision"] == table.loc[tx_id, "decision"]
        assert record["model_version"] == versions["production"]
        assert not any("challenger" in key for key in record)
    alerted = {tx_id for tx_id, d in table["decision"].items() if d in ("review", "decline")}
    if alerted:
        alerts = job.consume(job.settings.topic_alerts, lambda got: _ids(got) >= alerted)
        assert _ids(alerts) & set(sent) == alerted

    # the shadow metrics count exactly the rows the table shows
    def shadow_counts() -> tuple[float, float] | None:
        from prometheus_client.parser import text_string_to_metric_families

        decided = disagreed = 0.0
        for family in text_string_to_metric_families(_metrics(job)):
            for sample in family.samples:
                if sample.name == "fraudwatch_stream_shadow_decisions_total":
                    decided += sample.value
                elif sample.name == "fraudwatch_stream_shadow_disagreements_total":
                    disagreed += sample.value
        return (decided, disagreed) if decided >= len(_table(job)["challenger_decision"].dropna()) else None

    everything = _table(job)
    decided, disagreed = wait_for(shadow_counts, 60, "the shadow metrics")
    assert decided == everything["challenger_decision"].notna().sum()
    shadow_all = everything[everything["challenger_decision"].notna()]
    assert disagreed == (shadow_all["challenger_decision"] != shadow_all["decision"]).sum()


def _ids(messages: list[Any]) -> set[str]:
    return {orjson.loads(m.value())["transaction_id"] for m in messages}
