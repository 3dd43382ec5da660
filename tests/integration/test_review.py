"""Review queue against the real broker: an alert published on fraud.alerts shows up in the queue, a
decision lands on the real labels topic (keyed by transaction_id, a valid Label naming the analyst), a
redelivered alert is queued once, and with the broker unreachable a decision is refused and nothing is lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Message, Producer
from fastapi.testclient import TestClient

from fraudwatch.config import Settings
from fraudwatch.events import parse_label
from fraudwatch_review.app import create_app

pytestmark = pytest.mark.integration
TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def scored_alert(tx: str, minutes_ago: float = 1.0, decision: str = "review", **over: Any) -> dict[str, Any]:
    """A ScoredTransaction as the stream publishes it on fraud.alerts."""
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "transaction_id": tx,
        "event_time": (now - timedelta(minutes=minutes_ago, seconds=5)).isoformat(),
        "card_id": f"card-{tx}",
        "terminal_id": "term-77",
        "amount": 1240.0,
        "currency": "EUR",
        "country": "NL",
        "channel": "ecom",
        "score": 0.93 if decision == "decline" else 0.51,
        "decision": decision,
        "model_name": "fraud-detector",
        "model_version": "7",
        "reasons": ["5 transactions at this terminal in the last hour, 3 of them declined before"],
        "scored_at": (now - timedelta(minutes=minutes_ago)).isoformat(),
    }
    record.update(over)
    return record


def publish_alerts(settings: Settings, *records: dict[str, Any]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for record in records:
        producer.produce(settings.topic_alerts, key=record["card_id"], value=orjson.dumps(record))
    assert producer.flush(30) == 0


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something truthy (the services' pace is not what is tested)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def labels_on(
    settings: Settings, until: Callable[[list[Message]], bool], timeout: float = 60.0
) -> list[Message]:
    """Every record on the labels topic, read from the start until ``until`` holds."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic_labels])
    out: list[Message] = []
    try:
        wait_for(
            lambda: (
                out.extend(m for m in consumer.consume(100, timeout=0.5) if m.error() is None) or until(out)
            ),
            f"labels on {settings.topic_labels}",
            timeout,
        )
    finally:
        consumer.close()
    return out


def open_ids(client: TestClient) -> list[str]:
    return [a["transaction_id"] for a in client.get("/api/alerts", headers=AUTH).json()["alerts"]]


def test_alert_to_queue_to_label_on_the_real_broker(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(need=("kafka",), api_token=TOKEN)
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the alert consumer")
        first = scored_alert(tx, 3)
        publish_alerts(settings, first, scored_alert(f"{tx}-b", 1, "decline"), first)  # first: redelivered
        wait_for(lambda: len(open_ids(client)) == 2, "both alerts in the queue")
        assert open_ids(client) == [f"{tx}-b", tx]  # newest first, the redelivery queued once

        r = client.post(
            "/api/decisions",
            json={"transaction_id": tx, "outcome": "fraud", "note": "confirmed by phone", "analyst": "ana"},
            headers=AUTH,
        )
        assert r.status_code == 200, r.text
        assert open_ids(client) == [f"{tx}-b"]
        again = client.post(
            "/api/decisions",
            json={"transaction_id": tx, "outcome": "genuine", "analyst": "bob"},
            headers=AUTH,
        )
        assert again.status_code == 409

    messages = labels_on(settings, lambda out: len(out) >= 1)
    assert len(messages) == 1  # the 409 published nothing
    [msg] = messages
    assert msg.key() == tx.encode()
    label = parse_label(msg.value())
    assert (label.transaction_id, label.card_id, label.terminal_id, label.is_fraud) == (
        tx,
        f"card-{tx}",
        "term-77",
        True,
    )
    assert label.event_time == datetime.fromisoformat(first["event_time"])
    assert label.source == "analyst:ana"
    assert label.reported_at >= label.event_time


def test_the_queue_survives_a_restart_without_requeueing(make_settings: Callable[..., Settings]) -> None:
    """Offsets are committed after the table write: a restarted service neither loses nor reopens alerts."""
    settings = make_settings(need=("kafka",), api_token=TOKEN)
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the alert consumer")
        publish_alerts(settings, scored_alert(tx))
        wait_for(lambda: open_ids(client) == [tx], "the alert in the queue")
        body = {"transaction_id": tx, "outcome": "genuine", "analyst": "ana"}
        assert client.post("/api/decisions", json=body, headers=AUTH).status_code == 200
    publish_alerts(settings, scored_alert(tx))  # redelivered after the decision
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the alert consumer")
        wait_for(
            lambda: (
                'fraudwatch_review_alerts_consumed_total{result="duplicate"} 1.0'
                in client.get("/metrics").text
            ),
            "the redelivered alert",
        )
        assert open_ids(client) == []
        decided = client.get("/api/decided", headers=AUTH).json()["decided"]
        assert [(d["transaction_id"], d["status"], d["decided_by"]) for d in decided] == [
            (tx, "genuine", "ana")
        ]


def test_an_unreachable_broker_refuses_the_decision_and_keeps_the_alert(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(need=("kafka",), api_token=TOKEN)
    tx = f"tx-{uuid.uuid4().hex[:8]}"
    with TestClient(create_app(settings)) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "the alert consumer")
        publish_alerts(settings, scored_alert(tx))
        wait_for(lambda: open_ids(client) == [tx], "the alert in the queue")
    # the same queue, its label producer pointed at a port where no broker listens
    offline = settings.model_copy(
        update={"kafka_bootstrap": "localhost:9", "topic_labels": settings.topic_labels}
    )
    with TestClient(create_app(offline, consume=False)) as client:
        client.app.state.ctx.publisher.timeout_seconds = 3.0  # type: ignore[attr-defined]
        body = {"transaction_id": tx, "outcome": "fraud", "analyst": "ana"}
        r = client.post("/api/decisions", json=body, headers=AUTH)
        assert r.status_code == 503
        assert open_ids(client) == [tx]
