"""Event schemas: one pydantic model per Kafka event, the single source of every schema.

The JSON Schemas under docs/schemas/ are generated from these models (``python -m fraudwatch.events``),
the API's request model is :class:`Transaction`, and the stream job derives its Spark schema from
:func:`json_schemas`. Validation is strict: a malformed event raises :class:`~fraudwatch.errors.SchemaError`
naming each bad field and the reason, so it can be answered with a 422 or sent to the dead-letter queue.
"""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from fraudwatch.errors import SchemaError
from fraudwatch.iso import COUNTRIES, CURRENCIES

__all__ = [
    "CHANNELS",
    "DECISIONS",
    "DeadLetter",
    "Label",
    "ScoredTransaction",
    "Transaction",
    "dead_letter_for",
    "epoch_seconds",
    "json_schemas",
    "parse_label",
    "parse_transaction",
    "schema_errors",
    "write_json_schemas",
]

CHANNELS: tuple[str, ...] = ("pos", "ecom", "atm")
DECISIONS: tuple[str, ...] = ("approve", "review", "decline")
MAX_AMOUNT = 1e9  # far above any card limit; rejects overflow-sized numbers early

EntityId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
Channel = Literal["pos", "ecom", "atm"]
Decision = Literal["approve", "review", "decline"]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Event(BaseModel):
    @field_validator("event_time", "reported_at", "scored_at", "failed_at", mode="after", check_fields=False)
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_serializer("event_time", "reported_at", "scored_at", "failed_at", check_fields=False)
    def _serialize_time(self, value: datetime) -> str:
        return _rfc3339(value)


class Transaction(_Event):
    """A card transaction as it arrives on the ``transactions`` topic (key: card_id)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "tx-000001",
                    "event_time": "2026-11-28T14:03:27Z",
                    "card_id": "card-0042",
                    "terminal_id": "term-1337",
                    "amount": 42.5,
                    "currency": "EUR",
                    "merchant_category": "5411",
                    "channel": "pos",
                    "country": "BE",
                }
            ]
        },
    )

    transaction_id: EntityId = Field(description="Unique transaction id.")
    event_time: AwareDatetime = Field(
        description="When the transaction happened (RFC 3339, converted to UTC)."
    )
    card_id: EntityId = Field(description="The card (customer) id.")
    terminal_id: EntityId = Field(description="The merchant terminal id.")
    amount: float = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=True, description="Amount, >= 0.")
    currency: str = Field(default="EUR", description="ISO 4217 currency code.")
    merchant_category: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Merchant category (e.g. an MCC)."
    )
    channel: Channel | None = Field(default=None, description="pos, ecom or atm.")
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 country of the terminal.")

    @field_validator("currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if value not in CURRENCIES:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code (e.g. 'EUR')")
        return value

    @field_validator("country")
    @classmethod
    def _country(cls, value: str | None) -> str | None:
        if value is not None and value not in COUNTRIES:
            raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code (e.g. 'BE')")
        return value


class Label(_Event):
    """Ground truth for one transaction, arriving later on ``labels`` (key: transaction_id)."""

    model_config = ConfigDict(extra="forbid")

    transaction_id: EntityId
    card_id: EntityId
    terminal_id: EntityId
    event_time: AwareDatetime = Field(description="event_time of the labelled transaction.")
    is_fraud: bool = Field(strict=True)
    reported_at: AwareDatetime = Field(description="When the label became known (chargeback, analyst).")

    @model_validator(mode="after")
    def _reported_after_event(self) -> Label:
        if self.reported_at < self.event_time:
            raise ValueError("reported_at is earlier than the transaction's event_time")
        return self


class ScoredTransaction(Transaction):
    """A transaction with its score, on ``transactions.scored`` and (review/decline) ``fraud.alerts``."""

    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    decision: Decision
    model_name: str
    model_version: str
    reasons: list[str] = Field(default_factory=list)
    scored_at: AwareDatetime


class DeadLetter(_Event):
    """A record that could not be processed, on ``transactions.dlq`` (no key)."""

    model_config = ConfigDict(extra="forbid")

    raw: str = Field(description="The raw record: UTF-8 text, or base64 when it was not valid UTF-8.")
    raw_encoding: Literal["text", "base64"]
    error: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    failed_at: AwareDatetime


def schema_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn a pydantic ValidationError into ``[{"field": ..., "reason": ...}]``."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err.get("loc", ())) or "(body)"
        reason = str(err.get("msg", "invalid"))
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        out.append({"field": loc, "reason": reason})
    return out


def _describe(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors)


def parse_transaction(raw: bytes | str) -> Transaction:
    """Validate one JSON transaction, raising SchemaError that names each bad field."""
    try:
        return Transaction.model_validate_json(raw)
    except ValidationError as exc:
        errors = schema_errors(exc)
        raise SchemaError(f"invalid transaction: {_describe(errors)}", errors) from None


def parse_label(raw: bytes | str) -> Label:
    """Validate one JSON label, raising SchemaError that names each bad field."""
    try:
        return Label.model_validate_json(raw)
    except ValidationError as exc:
        errors = schema_errors(exc)
        raise SchemaError(f"invalid label: {_describe(errors)}", errors) from None


def dead_letter_for(
    raw: bytes | None,
    error: str,
    source_topic: str,
    source_partition: int | None = None,
    source_offset: int | None = None,
    failed_at: datetime | None = None,
) -> DeadLetter:
    """Wrap a record that failed into a DeadLetter, keeping its bytes (text if UTF-8, else base64)."""
    data = raw or b""
    try:
        text, encoding = data.decode("utf-8"), "text"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(data).decode("ascii"), "base64"
    return DeadLetter(
        raw=text,
        raw_encoding=encoding,  # type: ignore[arg-type]
        error=error,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        failed_at=failed_at or datetime.now(UTC),
    )


def epoch_seconds(value: datetime) -> float:
    """Seconds since the Unix epoch (UTC) of an aware datetime."""
    ts = value.timestamp()
    if not math.isfinite(ts):  # pragma: no cover - datetime cannot hold non-finite values
        raise SchemaError("event_time is not finite")
    return ts


_MODELS: dict[str, type[BaseModel]] = {
    "transaction": Transaction,
    "label": Label,
    "scored_transaction": ScoredTransaction,
    "dead_letter": DeadLetter,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every event, by name (as committed under docs/schemas/)."""
    return {name: model.model_json_schema(mode="serialization") for name, model in _MODELS.items()}


def write_json_schemas(directory: Path) -> list[Path]:
    """Write docs/schemas/<name>.schema.json for every event; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - CLI
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")
    for p in write_json_schemas(target):
        print(p)
