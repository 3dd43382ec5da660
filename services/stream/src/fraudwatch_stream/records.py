"""Record-level logic of the job: Kafka records -> validated event rows or dead letters; the row schema.

Every record of ``transactions`` and ``labels`` is validated with the pydantic models of
:mod:`fraudwatch.events` (the single source of the schemas) inside the terminal stage (:mod:`.stateful`).
A record that is not JSON, misses a field, has a bad value or is larger than ``Settings.max_record_bytes`` becomes a
``kind = DEAD_LETTER`` row carrying the :class:`~fraudwatch.events.DeadLetter` JSON: the query never fails
on bad data and never drops a record silently.

All rows of the job share one schema (:data:`ROW_SCHEMA`) so that transactions, labels, dead letters and
entity-state rows can flow through the two stateful operators together (see :mod:`.stateful`).
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fraudwatch.events import Label, Transaction, dead_letter_for, schema_errors

__all__ = [
    "CARD_STATE",
    "DEAD_LETTER",
    "LABEL",
    "PARSED_COLUMNS",
    "ROW_COLUMNS",
    "ROW_SCHEMA_DDL",
    "SCORE_SCHEMA_DDL",
    "TERMINAL_STATE",
    "TRANSACTION",
    "bucket_of",
    "dead_letter_row",
    "empty_rows",
    "pack_features",
    "pack_states",
    "parse_frame",
    "parse_records",
    "unpack_features",
    "unpack_states",
]

TRANSACTION = 0
LABEL = 1
DEAD_LETTER = 2
TERMINAL_STATE = 3
CARD_STATE = 4

#: the one row schema between the stages (Spark DDL); order = ROW_COLUMNS. Feature blocks travel as
#: packed float64 bytes (:func:`pack_features`: exact, and far cheaper through Arrow than arrays); a state
#: row carries the pickled ``{entity_id: state bytes}`` of every entity one group changed (:func:`pack_states`)
#: and, in ``entities``, how many entities its bucket holds. ``kafka_us`` is the input record's Kafka
#: timestamp (produce time): stream latency is measured from it on the real clock, never from event_time
ROW_SCHEMA_DDL = (
    "kind INT, t_us BIGINT, transaction_id STRING, card_id STRING, terminal_id STRING, amount DOUBLE, "
    "channel STRING, country STRING, payload STRING, reason STRING, src_partition INT, src_offset BIGINT, "
    "cb INT, state BINARY, entities BIGINT, tfeat BINARY, cfeat BINARY, kafka_us BIGINT"
)
ROW_COLUMNS: tuple[str, ...] = tuple(part.strip().split(" ")[0] for part in ROW_SCHEMA_DDL.split(", "))
#: what parsing adds for the terminal stage only (labels, routing check)
PARSED_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "is_fraud", "label_event_us", "tb")
#: the scoring UDF's output (value: the ScoredTransaction JSON)
SCORE_SCHEMA_DDL = "score DOUBLE, decision STRING, model_name STRING, model_version STRING, value STRING"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    # integer microseconds: the same value fraudwatch.features.offline.datetime_seconds divides by 1e6
    return (value - _EPOCH) // _US


def bucket_of(entity_id: str, buckets: int) -> int:
    """The state bucket of a card or terminal id (stable across processes, unlike ``hash``)."""
    return zlib.crc32(entity_id.encode("utf-8")) % buckets


def _reason(exc: ValidationError) -> str:
    """A low-cardinality reason for the dead-letter metric (the DLQ record carries the full error)."""
    types = {str(err.get("type", "")) for err in exc.errors(include_url=False)}
    if "json_invalid" in types or "json_type" in types or "model_type" in types:
        return "not_json"
    if "missing" in types:
        return "missing_field"
    return "invalid_value"


def empty_rows(n: int, columns: tuple[str, ...] = ROW_COLUMNS) -> dict[str, list[Any]]:
    return {c: [None] * n for c in columns}


def pack_features(rows: list[list[float]]) -> list[bytes]:
    """Feature blocks -> one bytes value per row (little-endian float64, exact)."""
    matrix = np.asarray(rows, dtype="<f8")
    return [row.tobytes() for row in matrix]


def unpack_features(values: Any, width: int | None = None) -> np.ndarray:
    """Packed feature blocks (a sequence of bytes) -> an (n, width) float64 matrix."""
    items = list(values)
    flat = np.frombuffer(b"".join(items), dtype="<f8")
    if width is None:
        width = len(items[0]) // 8 if items else 0
    return flat.reshape(len(items), width) if items else np.empty((0, width or 0))


def pack_states(encoded: dict[str, bytes]) -> bytes:
    """The changed entity states of one group, as one value (written and read only by this job)."""
    return pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_states(value: bytes) -> dict[str, bytes]:
    loaded: dict[str, bytes] = pickle.loads(value)  # noqa: S301 - bytes this job's stages wrote
    return loaded


def _validate(
    raw: bytes | None, topic: str, topic_transactions: str, max_bytes: int
) -> tuple[Transaction | Label | None, str, str]:
    """(event, reason, error); event is None for a dead letter."""
    if raw is None:
        return None, "empty", "value: the record has no value (null)"
    if len(raw) > max_bytes:
        return None, "oversized", f"value: the record is {len(raw)} bytes, larger than {max_bytes} bytes"
    model: type[Transaction] | type[Label] = Transaction if topic == topic_transactions else Label
    try:
        return model.model_validate_json(raw), "", ""
    except ValidationError as exc:
        errors = schema_errors(exc)
        what = "transaction" if model is Transaction else "label"
        text = f"invalid {what}: " + "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return None, _reason(exc), text


def dead_letter_row(raw: Any, reason: str, error: str) -> dict[str, Any]:
    """The dead-letter columns for one raw Kafka row (value, topic, partition, offset)."""
    value = raw["value"]
    return {
        "kind": DEAD_LETTER,
        "reason": reason,
        "payload": dead_letter_for(
            bytes(value) if value is not None else None,
            error,
            str(raw["topic"]),
            int(raw["partition"]),
            int(raw["offset"]),
            failed_at=datetime.now(UTC),
        ).model_dump_json(),
    }


def parse_frame(
    pdf: pd.DataFrame, *, topic_transactions: str, max_record_bytes: int, buckets: int
) -> pd.DataFrame:
    """Kafka rows (value, topic, partition, offset) -> PARSED_COLUMNS rows (events or dead letters)."""
    return next(
        parse_records(
            iter([pdf]),
            topic_transactions=topic_transactions,
            max_record_bytes=max_record_bytes,
            buckets=buckets,
        )
    )


def parse_records(
    batches: Iterator[pd.DataFrame],
    *,
    topic_transactions: str,
    max_record_bytes: int,
    buckets: int,
) -> Iterator[pd.DataFrame]:
    """Kafka rows (value, topic, partition, offset) -> PARSED_COLUMNS rows, per batch."""
    for pdf in batches:
        n = len(pdf)
        out = empty_rows(n, PARSED_COLUMNS)
        kinds, t_us, txid, card, term = (
            out["kind"],
            out["t_us"],
            out["transaction_id"],
            out["card_id"],
            out["terminal_id"],
        )
        topics = pdf["topic"].tolist()
        partitions = pdf["partition"].astype("int64").tolist()
        offsets = pdf["offset"].astype("int64").tolist()
        out["src_partition"], out["src_offset"] = partitions, offsets
        if "kafka_us" in pdf.columns:  # the Kafka timestamp, carried through for the latency metric
            out["kafka_us"] = pdf["kafka_us"].tolist()
        now = datetime.now(UTC)
        for i, raw in enumerate(pdf["value"].tolist()):
            raw_bytes = bytes(raw) if raw is not None else None
            event, reason, error = _validate(raw_bytes, topics[i], topic_transactions, max_record_bytes)
            if isinstance(event, Transaction):
                kinds[i] = TRANSACTION
                t_us[i] = _micros(event.event_time)
                txid[i], card[i], term[i] = event.transaction_id, event.card_id, event.terminal_id
                out["amount"][i] = float(event.amount)
                out["channel"][i] = event.channel
                out["country"][i] = event.country
                out["payload"][i] = event.model_dump_json()
                out["tb"][i] = bucket_of(event.terminal_id, buckets)
                out["cb"][i] = bucket_of(event.card_id, buckets)
            elif isinstance(event, Label):
                kinds[i] = LABEL
                t_us[i] = _micros(event.reported_at)
                txid[i], card[i], term[i] = event.transaction_id, event.card_id, event.terminal_id
                out["is_fraud"][i] = event.is_fraud
                out["label_event_us"][i] = _micros(event.event_time)
                out["tb"][i] = bucket_of(event.terminal_id, buckets)
                out["cb"][i] = bucket_of(event.card_id, buckets)
            else:
                kinds[i] = DEAD_LETTER
                out["reason"][i] = reason
                out["payload"][i] = dead_letter_for(
                    raw_bytes, error, topics[i], partitions[i], offsets[i], failed_at=now
                ).model_dump_json()
                out["tb"][i] = out["cb"][i] = offsets[i] % buckets
        yield pd.DataFrame(out, columns=list(PARSED_COLUMNS))
