"""Record-level logic of the job: Kafka records -> validated event rows or dead letters; the row schema.

Every record of ``transactions`` and ``labels`` is validated with the pydantic models of
:mod:`fraudwatch.events` (the single source of the schemas) inside the terminal stage (:mod:`.stateful`),
against the plausibility bounds of ``Settings`` judged at the record's Kafka timestamp (deterministic: a
re-run batch judges each record exactly as the first run did). A record that is not JSON, misses a field,
has a bad value or is larger than ``Settings.max_record_bytes`` becomes a ``kind = DEAD_LETTER`` row carrying
the :class:`~fraudwatch.events.DeadLetter` JSON with a ``reason`` class. Whatever one record raises while it
is parsed — a validation error or any other exception — turns that record, and only that record, into a
dead letter: the query never fails on bad data and never drops a record silently (docs/stream.md, "Poison
records").

All rows of the job share one schema (:data:`ROW_SCHEMA`) so that transactions, labels, dead letters and
state report rows can flow through the two stateful operators together (see :mod:`.stateful`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from fraudwatch.events import (
    LATEST,
    EventBounds,
    Label,
    Transaction,
    dead_letter_for,
    rejection_reason,
    schema_errors,
)

__all__ = [
    "CARD_STATE",
    "DEAD_LETTER",
    "LABEL",
    "PARSED_COLUMNS",
    "ROW_COLUMNS",
    "ROW_SCHEMA_DDL",
    "SCORE_SCHEMA_DDL",
    "STORE_ERROR",
    "TERMINAL_STATE",
    "TRANSACTION",
    "bucket_of",
    "dead_letter_row",
    "describe_failure",
    "empty_rows",
    "pack_features",
    "parse_frame",
    "parse_records",
    "unpack_features",
]

TRANSACTION = 0
LABEL = 1
DEAD_LETTER = 2
TERMINAL_STATE = 3
CARD_STATE = 4
#: ``reason`` of a state report row whose group could not write its states to the online store
STORE_ERROR = "store_error"

#: the one row schema between the stages (Spark DDL); order = ROW_COLUMNS. Feature blocks travel as
#: packed float64 bytes (:func:`pack_features`: exact, and far cheaper through Arrow than arrays); a state
#: report row (TERMINAL_STATE / CARD_STATE, one per group) carries, in ``entities``, how many entities its
#: bucket holds, in ``src_offset`` how many states the group wrote to the online store and in ``amount`` the
#: seconds that took (the states themselves never travel: the stages write the store, stateful.StoreWriter);
#: when that write failed, ``reason`` is STORE_ERROR and ``payload`` the error, and the driver fails the batch.
#: ``kafka_us`` is the input record's Kafka timestamp (produce time): stream latency is measured from it on
#: the real clock, never from event_time
ROW_SCHEMA_DDL = (
    "kind INT, t_us BIGINT, transaction_id STRING, card_id STRING, terminal_id STRING, amount DOUBLE, "
    "channel STRING, country STRING, payload STRING, reason STRING, src_partition INT, src_offset BIGINT, "
    "cb INT, entities BIGINT, tfeat BINARY, cfeat BINARY, kafka_us BIGINT"
)
ROW_COLUMNS: tuple[str, ...] = tuple(part.strip().split(" ")[0] for part in ROW_SCHEMA_DDL.split(", "))
#: what parsing adds for the terminal stage only (labels, routing check)
PARSED_COLUMNS: tuple[str, ...] = (*ROW_COLUMNS, "is_fraud", "label_event_us", "tb")
#: the scoring UDF's output (value: the ScoredTransaction JSON; error: why this row could not be scored;
#: challenger_*: the shadow model's answer, null without one — scoring.CHALLENGER_COLUMNS)
SCORE_SCHEMA_DDL = (
    "score DOUBLE, decision STRING, model_name STRING, model_version STRING, value STRING, error STRING, "
    "challenger_version STRING, challenger_score DOUBLE, challenger_decision STRING"
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _micros(value: datetime) -> int:
    # integer microseconds: the same value fraudwatch.features.offline.datetime_seconds divides by 1e6
    return (value - _EPOCH) // _US


def bucket_of(entity_id: str, buckets: int) -> int:
    """The state bucket of a card or terminal id (stable across processes, unlike ``hash``)."""
    return zlib.crc32(entity_id.encode("utf-8")) % buckets


_LATEST_US = (LATEST - _EPOCH) // _US


def describe_failure(where: str, exc: BaseException) -> str:
    """The DLQ ``error`` text of an unexpected exception one record raised (type and message, bounded)."""
    return f"{where}: {type(exc).__name__}: {str(exc)[:500]}"


def _reference(bounds: EventBounds | None, kafka_us: Any) -> tuple[EventBounds | None, str]:
    """The bounds judged at a record's Kafka timestamp (microseconds), or an error for an absurd timestamp.

    A record without a timestamp (Kafka's -1, or a frame without the column) is judged by the static bounds
    and the amount limit only; a timestamp at or after fraudwatch.events.LATEST cannot be a real clock.
    """
    if bounds is None:
        return None, ""
    if kafka_us is None or kafka_us != kafka_us or kafka_us < 0:  # None, NaN (null in an int column), -1
        return EventBounds(_EPOCH, amount_max=bounds.amount_max), ""
    if kafka_us >= _LATEST_US:
        return None, f"timestamp: the Kafka record timestamp ({int(kafka_us)} us) is not a plausible time"
    return bounds.at(_EPOCH + timedelta(microseconds=int(kafka_us))), ""


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


def _validate(
    raw: bytes | None,
    topic: str,
    topic_transactions: str,
    max_bytes: int,
    bounds: EventBounds | None = None,
    kafka_us: Any = None,
) -> tuple[Transaction | Label | None, str, str]:
    """(event, reason, error); event is None for a dead letter. Never raises for any input.

    ``kafka_us`` (the record's Kafka timestamp) is the reference time of ``bounds``."""
    if raw is None:
        return None, "empty", "value: the record has no value (null)"
    if len(raw) > max_bytes:
        return (
            None,
            "oversized",
            (
                f"value: the record is {len(raw)} bytes, larger than {max_bytes} bytes "
                f"(the dead letter keeps its first {max_bytes} bytes)"
            ),
        )
    model: type[Transaction] | type[Label] = Transaction if topic == topic_transactions else Label
    what = "transaction" if model is Transaction else "label"
    reference, problem = _reference(bounds, kafka_us)
    if problem:
        return None, "time_out_of_range", f"invalid {what}: {problem}"
    try:
        return model.model_validate_json(raw, context=reference.context() if reference else None), "", ""
    except ValidationError as exc:
        errors = schema_errors(exc)
        text = f"invalid {what}: " + "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        return None, rejection_reason(exc), text
    except Exception as exc:  # validation must be total: anything else is this record's fault too
        return None, "invalid_value", describe_failure(f"invalid {what}", exc)


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
    pdf: pd.DataFrame,
    *,
    topic_transactions: str,
    max_record_bytes: int,
    buckets: int,
    bounds: EventBounds | None = None,
) -> pd.DataFrame:
    """Kafka rows (value, topic, partition, offset[, kafka_us]) -> PARSED_COLUMNS rows (events or dead letters)."""
    return next(
        parse_records(
            iter([pdf]),
            topic_transactions=topic_transactions,
            max_record_bytes=max_record_bytes,
            buckets=buckets,
            bounds=bounds,
        )
    )


_EVENT_COLUMNS = (
    "t_us",
    "transaction_id",
    "card_id",
    "terminal_id",
    "amount",
    "channel",
    "country",
    "payload",
    "is_fraud",
    "label_event_us",
)


def parse_records(
    batches: Iterator[pd.DataFrame],
    *,
    topic_transactions: str,
    max_record_bytes: int,
    buckets: int,
    bounds: EventBounds | None = None,
) -> Iterator[pd.DataFrame]:
    """Kafka rows (value, topic, partition, offset[, kafka_us]) -> PARSED_COLUMNS rows, per batch.

    ``kafka_us`` is the Kafka record timestamp in microseconds, the reference time of ``bounds`` (the
    plausibility window of Settings; its own ``now`` is ignored). Every row comes out either as an event
    or as a dead letter, whatever its bytes: nothing one record holds can raise out of this function.
    """
    for pdf in batches:
        n = len(pdf)
        out = empty_rows(n, PARSED_COLUMNS)
        topics = pdf["topic"].tolist()
        partitions = pdf["partition"].astype("int64").tolist()
        offsets = pdf["offset"].astype("int64").tolist()
        out["src_partition"], out["src_offset"] = partitions, offsets
        stamps: list[Any] = [None] * n
        if "kafka_us" in pdf.columns:  # the Kafka timestamp, carried through for the latency metric
            out["kafka_us"] = stamps = pdf["kafka_us"].tolist()
        now = datetime.now(UTC)
        for i, raw in enumerate(pdf["value"].tolist()):
            raw_bytes = bytes(raw) if raw is not None else None
            event, reason, error = _validate(
                raw_bytes, topics[i], topic_transactions, max_record_bytes, bounds, stamps[i]
            )
            try:
                _fill(out, i, event, buckets)
            except Exception as exc:  # a valid event this stage cannot carry: this record's fault only
                for column in _EVENT_COLUMNS:
                    out[column][i] = None
                event, reason, error = None, "invalid_value", describe_failure("event", exc)
            if event is None:
                out["kind"][i] = DEAD_LETTER
                out["reason"][i] = reason
                # an oversized record is kept truncated: whole, its dead letter could exceed the broker's
                # message size, fail the batch's Kafka write and so every retry (a poison pill of its own)
                kept = raw_bytes[:max_record_bytes] if raw_bytes is not None else None
                out["payload"][i] = dead_letter_for(
                    kept, error, topics[i], partitions[i], offsets[i], failed_at=now
                ).model_dump_json()
                out["tb"][i] = out["cb"][i] = offsets[i] % buckets
        yield pd.DataFrame(out, columns=list(PARSED_COLUMNS))


def _fill(out: dict[str, list[Any]], i: int, event: Transaction | Label | None, buckets: int) -> None:
    """Write one validated event into row ``i`` of the PARSED_COLUMNS lists (nothing for a dead letter)."""
    if isinstance(event, Transaction):
        out["kind"][i] = TRANSACTION
        out["t_us"][i] = _micros(event.event_time)
        out["transaction_id"][i] = event.transaction_id
        out["card_id"][i], out["terminal_id"][i] = event.card_id, event.terminal_id
        out["amount"][i] = float(event.amount)
        out["channel"][i] = event.channel
        out["country"][i] = event.country
        out["payload"][i] = event.model_dump_json()
        out["tb"][i] = bucket_of(event.terminal_id, buckets)
        out["cb"][i] = bucket_of(event.card_id, buckets)
    elif isinstance(event, Label):
        out["kind"][i] = LABEL
        out["t_us"][i] = _micros(event.reported_at)
        out["transaction_id"][i] = event.transaction_id
        out["card_id"][i], out["terminal_id"][i] = event.card_id, event.terminal_id
        out["is_fraud"][i] = event.is_fraud
        out["label_event_us"][i] = _micros(event.event_time)
        out["tb"][i] = bucket_of(event.terminal_id, buckets)
        out["cb"][i] = bucket_of(event.card_id, buckets)
