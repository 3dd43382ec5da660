"""Event schemas: one pydantic model per Kafka event, the single source of every schema.

The JSON Schemas under docs/schemas/ are generated from these models (``python -m fraudwatch.events``),
the API's request model is :class:`Transaction`, and the stream job derives its Spark schema from
:func:`json_schemas`. Validation is strict: a malformed event raises :class:`~fraudwatch.errors.SchemaError`
naming each bad field and the reason, so it can be answered with a 422 or sent to the dead-letter queue.

Validation is *total*: whatever JSON comes in, validating it either returns an event every later stage can
process or raises ``ValidationError`` — never another exception. Most bounds are constraints pydantic-core
checks itself (timestamps within :data:`EARLIEST`..:data:`LATEST`, amounts, control characters, string
lengths, the type of every extra field); the bounds that depend on a reference time or on ``Settings``
(:class:`EventBounds`: how far in the future or the past an event may be, the largest amount) are checked
when the caller passes them as validation context (``model_validate_json(raw, context=bounds.context())``).
The API passes the request's receive time, the stream the Kafka record's timestamp, so a replayed record is
judged exactly as the first time.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from fraudwatch.errors import SchemaError
from fraudwatch.iso import COUNTRIES, CURRENCIES

if TYPE_CHECKING:
    from fraudwatch.config import Settings

__all__ = [
    "CHANNELS",
    "DEAD_LETTER_REASONS",
    "DECISIONS",
    "EARLIEST",
    "LATEST",
    "DeadLetter",
    "EventBounds",
    "Label",
    "ScoredTransaction",
    "Transaction",
    "dead_letter_for",
    "epoch_seconds",
    "json_schemas",
    "parse_label",
    "parse_transaction",
    "rejection_reason",
    "schema_errors",
    "write_json_schemas",
]

CHANNELS: tuple[str, ...] = ("pos", "ecom", "atm")
DECISIONS: tuple[str, ...] = ("approve", "review", "decline")
MAX_AMOUNT = 1e9  # far above any card limit; rejects overflow-sized numbers early
#: every timestamp must lie in [EARLIEST, LATEST), checked by pydantic-core before any Python code sees it:
#: converting a datetime at the edge of Python's range (year 1 or 9999 with a UTC offset) to UTC raises
#: OverflowError — not a validation error — and one such record used to stop the stream for good
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
#: no C0/C1 control characters (nor DEL) anywhere in a string; JSON cannot carry lone surrogates (the parser
#: refuses them), so a validated string always encodes to UTF-8
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_EXTRA_FIELDS = 32
MAX_EXTRA_NAME = 64
MAX_EXTRA_CHARS = 256
#: the ``reason`` label of a dead letter, one per class of rejection (docs/metrics.md, docs/runbook.md);
#: the last three are the stream's own: a record that passed validation but failed later, in its stage
DEAD_LETTER_REASONS: tuple[str, ...] = (
    "empty",
    "oversized",
    "not_json",
    "missing_field",
    "time_out_of_range",
    "amount_out_of_range",
    "invalid_string",
    "invalid_value",
    "feature_error",
    "scoring_error",
)

EntityId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=NO_CONTROL)
]
EventTime = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
Channel = Literal["pos", "ecom", "atm"]
Decision = Literal["approve", "review", "decline"]


def _extra_value_schema(_source: Any, _handler: Any) -> core_schema.CoreSchema:
    # one union checked by pydantic-core with one clear error, instead of one error per member
    return core_schema.union_schema(
        [
            core_schema.bool_schema(strict=True),
            core_schema.int_schema(strict=True, ge=-(2**63), le=2**63 - 1),
            core_schema.float_schema(strict=True, allow_inf_nan=False),
            core_schema.str_schema(strict=True, max_length=MAX_EXTRA_CHARS, pattern=NO_CONTROL),
            core_schema.none_schema(),
        ],
        custom_error_type="extra_field_invalid",
        custom_error_message=(
            f"an extra field must be a string of at most {MAX_EXTRA_CHARS} characters without control "
            "characters, a finite number, a 64-bit integer, a boolean or null"
        ),
    )


#: the value of a field a source adds (``extra="allow"``): a scalar; objects and arrays are refused, so an
#: extra field can neither nest deeply nor carry a value the scored JSON could not be written with
ExtraValue = Annotated[bool | int | float | str | None, GetPydanticSchema(_extra_value_schema)]


@dataclass(frozen=True, slots=True)
class EventBounds:
    """What is plausible relative to a reference time, from ``Settings`` (None: that bound is off).

    ``now`` must be deterministic for the stream (the Kafka record's timestamp), so that a re-run batch
    judges every record as the first run did; the API uses the time it received the request.
    """

    now: datetime
    max_future: timedelta | None = None
    max_age: timedelta | None = None
    amount_max: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> EventBounds:
        """The bounds ``settings`` configure (0 disables one), judged against ``now``."""
        return cls(
            now=now,
            max_future=timedelta(seconds=settings.event_max_future_seconds)
            if settings.event_max_future_seconds > 0
            else None,
            max_age=timedelta(days=settings.event_max_age_days) if settings.event_max_age_days > 0 else None,
            amount_max=settings.amount_max if settings.amount_max > 0 else None,
        )

    def at(self, now: datetime) -> EventBounds:
        """The same bounds judged against another reference time."""
        return EventBounds(now, self.max_future, self.max_age, self.amount_max)

    def context(self) -> dict[str, Any]:
        """The validation context carrying these bounds (``model_validate_json(raw, context=...)``)."""
        return {"bounds": self}


def _bounds(info: ValidationInfo) -> EventBounds | None:
    context = info.context
    if isinstance(context, dict):
        bounds = context.get("bounds")
        if isinstance(bounds, EventBounds):
            return bounds
    return None


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _check_window(field: str, value: datetime, bounds: EventBounds) -> None:
    if bounds.max_future is not None and value > bounds.now + bounds.max_future:
        raise PydanticCustomError(
            "time_out_of_range",
            "{field} {value} is {ahead} s after the reference time {now}; at most {limit} s are allowed "
            "(FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS)",
            {
                "field": field,
                "value": _rfc3339(value),
                "ahead": round((value - bounds.now).total_seconds()),
                "now": _rfc3339(bounds.now),
                "limit": round(bounds.max_future.total_seconds()),
            },
        )
    if bounds.max_age is not None and value < bounds.now - bounds.max_age:
        raise PydanticCustomError(
            "time_out_of_range",
            "{field} {value} is older than {limit} days before the reference time {now} "
            "(FRAUDWATCH_EVENT_MAX_AGE_DAYS)",
            {
                "field": field,
                "value": _rfc3339(value),
                "now": _rfc3339(bounds.now),
                "limit": round(bounds.max_age.total_seconds() / 86400, 3),
            },
        )


class _Event(BaseModel):
    @field_validator("event_time", "reported_at", "scored_at", "failed_at", mode="after", check_fields=False)
    @classmethod
    def _to_utc(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = _utc(value)  # safe: pydantic-core has checked EARLIEST <= value < LATEST
        bounds = _bounds(info)
        if bounds is not None and info.field_name in ("event_time", "reported_at"):
            _check_window(info.field_name, value, bounds)
        return value

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

    __pydantic_extra__: dict[str, ExtraValue] = Field(init=False)  # type: ignore[assignment]

    transaction_id: EntityId = Field(description="Unique transaction id.")
    event_time: EventTime = Field(
        description="When the transaction happened (RFC 3339, converted to UTC; 1970-01-01 <= t < 2200-01-01 "
        "and, where the reader configures it, within FRAUDWATCH_EVENT_MAX_AGE_DAYS before and "
        "FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS after the time it is received)."
    )
    card_id: EntityId = Field(description="The card (customer) id.")
    terminal_id: EntityId = Field(description="The merchant terminal id.")
    amount: float = Field(ge=0, le=MAX_AMOUNT, allow_inf_nan=False, strict=True, description="Amount, >= 0.")
    currency: str = Field(default="EUR", description="ISO 4217 currency code.")
    merchant_category: (
        Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROL)] | None
    ) = Field(default=None, description="Merchant category (e.g. an MCC).")
    channel: Channel | None = Field(default=None, description="pos, ecom or atm.")
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 country of the terminal.")

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: float, info: ValidationInfo) -> float:
        bounds = _bounds(info)
        if bounds is not None and bounds.amount_max is not None and value > bounds.amount_max:
            raise PydanticCustomError(
                "amount_out_of_range",
                "amount {value} is larger than {limit} (FRAUDWATCH_AMOUNT_MAX)",
                {"value": value, "limit": bounds.amount_max},
            )
        return value

    @model_validator(mode="after")
    def _extras(self) -> Transaction:
        extra = self.__pydantic_extra__
        if extra:
            if len(extra) > MAX_EXTRA_FIELDS:
                raise PydanticCustomError(
                    "extra_field_invalid",
                    "{count} extra fields; at most {limit} are allowed",
                    {"count": len(extra), "limit": MAX_EXTRA_FIELDS},
                )
            for name in extra:
                if len(name) > MAX_EXTRA_NAME or not name.isprintable():
                    raise PydanticCustomError(
                        "extra_field_invalid",
                        "extra field name {name!r} is longer than {limit} characters or not printable",
                        {"name": name[:80], "limit": MAX_EXTRA_NAME},
                    )
        return self

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
    event_time: EventTime = Field(description="event_time of the labelled transaction.")
    is_fraud: bool = Field(strict=True)
    reported_at: EventTime = Field(description="When the label became known (chargeback, analyst).")
    source: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL)] | None = (
        Field(
            default=None,
            description="Who reported it, e.g. 'analyst:<name>' from the review queue; absent: the simulator or "
            "a chargeback feed. Informational: the stream and training read only the fields above.",
        )
    )

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
    scored_at: EventTime


class DeadLetter(_Event):
    """A record that could not be processed, on ``transactions.dlq`` (no key)."""

    model_config = ConfigDict(extra="forbid")

    raw: str = Field(description="The raw record: UTF-8 text, or base64 when it was not valid UTF-8.")
    raw_encoding: Literal["text", "base64"]
    error: str
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    failed_at: EventTime


_CONTROL_REASON = "contains a control character (U+0000-U+001F, U+007F-U+009F are not allowed)"


def schema_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Turn a pydantic ValidationError into ``[{"field": ..., "reason": ...}]``."""
    out: list[dict[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err.get("loc", ())) or "(body)"
        reason = str(err.get("msg", "invalid"))
        if reason.startswith("Value error, "):
            reason = reason[len("Value error, ") :]
        elif (
            err.get("type") == "string_pattern_mismatch"
            and (err.get("ctx") or {}).get("pattern") == NO_CONTROL
        ):
            reason = _CONTROL_REASON
        out.append({"field": loc, "reason": reason})
    return out


_TIME_FIELDS = frozenset({"event_time", "reported_at", "scored_at", "failed_at"})
_BOUND_TYPES = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}
)
_REASON_ORDER = ("not_json", "missing_field", "time_out_of_range", "amount_out_of_range", "invalid_string")


def rejection_reason(exc: ValidationError) -> str:
    """The dead-letter ``reason`` of a validation failure: one low-cardinality class per kind of problem.

    When a record has several problems, the first class in this order wins: not_json, missing_field,
    time_out_of_range, amount_out_of_range, invalid_string, invalid_value. The dead letter itself carries
    every error in full.
    """
    found: set[str] = set()
    for err in exc.errors(include_url=False):
        kind = str(err.get("type", ""))
        loc = err.get("loc", ())
        head = str(loc[0]) if loc else ""
        if kind in ("json_invalid", "json_type", "model_type", "model_attributes_type"):
            found.add("not_json")
        elif kind == "missing":
            found.add("missing_field")
        elif kind == "time_out_of_range" or (head in _TIME_FIELDS and kind in _BOUND_TYPES):
            found.add("time_out_of_range")
        elif kind == "amount_out_of_range" or (head == "amount" and kind in _BOUND_TYPES):
            found.add("amount_out_of_range")
        elif kind.startswith("string_") and kind != "string_type":
            found.add("invalid_string")
        else:
            found.add("invalid_value")
    return next((reason for reason in _REASON_ORDER if reason in found), "invalid_value")


def _describe(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['field']}: {e['reason']}" for e in errors)


def parse_transaction(raw: bytes | str, bounds: EventBounds | None = None) -> Transaction:
    """Validate one JSON transaction, raising SchemaError that names each bad field."""
    try:
        return Transaction.model_validate_json(raw, context=bounds.context() if bounds else None)
    except ValidationError as exc:
        errors = schema_errors(exc)
        raise SchemaError(f"invalid transaction: {_describe(errors)}", errors) from None


def parse_label(raw: bytes | str, bounds: EventBounds | None = None) -> Label:
    """Validate one JSON label, raising SchemaError that names each bad field."""
    try:
        return Label.model_validate_json(raw, context=bounds.context() if bounds else None)
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
