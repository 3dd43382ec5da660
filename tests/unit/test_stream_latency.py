"""Stream latency is measured on the real clock: the input record's Kafka timestamp travels with the row
through both stateful stages to the sink, whatever the transaction's event_time says (a simulated clock may
run days ahead of the wall clock, a replay years behind)."""

from __future__ import annotations

import orjson
import pandas as pd

from fraudwatch_stream import stateful
from fraudwatch_stream.records import ROW_COLUMNS, TRANSACTION, bucket_of
from fraudwatch_stream.stateful import EntityLog, card_stage, terminal_stage
from tests.unit.test_stream_state import _Handle


def _tx(tx_id: str, terminal: str, event_time: str) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": tx_id,
            "event_time": event_time,
            "card_id": "card-1",
            "terminal_id": terminal,
            "amount": 10.0,
        }
    )


def test_kafka_timestamp_travels_through_both_stages_and_event_time_does_not_replace_it() -> None:
    stateful._CACHE.clear()
    buckets = 2
    term = next(f"t{i}" for i in range(100) if bucket_of(f"t{i}", buckets) == 0)
    # event_time far in the future (simulated clock) and far in the past (replay); produced a second apart
    values = [_tx("future", term, "2031-05-01T00:00:00Z"), _tx("past", term, "2019-01-01T00:00:00Z")]
    produced_us = [1_764_000_000_000_000, 1_764_000_001_000_000]
    raw = pd.DataFrame(
        {
            "value": values,
            "topic": "tx",
            "partition": 0,
            "offset": [0, 1],
            "kafka_us": produced_us,
            "tb": 0,
        }
    )
    after_terminal = pd.concat(
        list(
            terminal_stage(
                (0,),
                iter([raw]),
                EntityLog("terminal", _Handle()),
                buckets=buckets,
                topic_transactions="tx",
                max_record_bytes=16_384,
            )
        ),
        ignore_index=True,
    )
    assert "kafka_us" in ROW_COLUMNS
    txs = after_terminal[after_terminal["kind"] == TRANSACTION]
    card_bucket = bucket_of("card-1", buckets)
    after_card = pd.concat(
        list(card_stage((card_bucket,), iter([txs]), EntityLog("card", _Handle()), buckets=buckets)),
        ignore_index=True,
    )
    scored = after_card[after_card["kind"] == TRANSACTION].set_index("transaction_id")
    assert scored.loc["future", "kafka_us"] == produced_us[0]
    assert scored.loc["past", "kafka_us"] == produced_us[1]
    # event_time stays the feature clock: it is not what the latency is measured from
    assert scored.loc["future", "t_us"] != scored.loc["future", "kafka_us"]
    stateful._CACHE.clear()
