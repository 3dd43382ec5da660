"""`make compare-models` reads every label on the real ``labels`` topic (to its current end, all partitions),
skipping records that are not labels, and the analyst's verdict there wins over the chargeback's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer

from fraudwatch.config import Settings
from fraudwatch_training.compare import labels_from_topic, merge_labels

pytestmark = pytest.mark.integration


def test_labels_come_from_the_whole_topic(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(need=("kafka",))
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    def label(i: int, fraud: bool, days: int, source: str | None) -> bytes:
        return orjson.dumps(
            {
                "transaction_id": f"tx-{i}",
                "card_id": f"card-{i % 5}",
                "terminal_id": "term-1",
                "event_time": t0.isoformat(),
                "is_fraud": fraud,
                "reported_at": (t0 + timedelta(days=days)).isoformat(),
                **({"source": source} if source else {}),
            }
        )

    for i in range(50):
        producer.produce(settings.topic_labels, key=f"tx-{i}", value=label(i, i % 10 == 0, 3, None))
    producer.produce(settings.topic_labels, key="bad", value=b"not a label")
    # an analyst cleared tx-0 on day 1; a chargeback feed said fraud later, on day 3: the analyst wins
    producer.produce(settings.topic_labels, key="tx-0", value=label(0, False, 1, "analyst:alice"))
    assert producer.flush(30) == 0

    got = labels_from_topic(settings, timeout=30)
    assert len(got) == 51 and set(got["transaction_id"]) == {f"tx-{i}" for i in range(50)}
    merged = merge_labels([got])
    assert len(merged) == 50
    assert not bool(merged.loc["tx-0", "is_fraud"]) and merged.loc["tx-0", "source"] == "analyst:alice"
    assert int(merged["is_fraud"].sum()) == 4
