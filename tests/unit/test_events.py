"""Event schemas: valid and invalid cases (each invalid case names the field), and committed JSON Schemas."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from fraudwatch.config import Settings
from fraudwatch.errors import SchemaError
from fraudwatch.events import (
    DeadLetter,
    EventBounds,
    Label,
    ScoredTransaction,
    Transaction,
    dead_letter_for,
    json_schemas,
    parse_label,
    parse_transaction,
    rejection_reason,
    schema_errors,
)

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "transaction_id": "tx-1",
    "event_time": "2026-11-28T14:03:27+01:00",
    "card_id": "card-1",
    "terminal_id": "term-1",
    "amount": 42.5,
}


def _tx(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_valid_transaction_is_normalised_to_utc_with_defaults() -> None:
    tx = parse_transaction(_tx(channel="ecom", country="BE", source_system="pos-gw-3"))
    assert tx.event_time.isoformat() == "2026-11-28T13:03:27+00:00"
    assert tx.currency == "EUR"
    assert tx.model_extra == {"source_system": "pos-gw-3"}
    assert json.loads(tx.model_dump_json())["event_time"] == "2026-11-28T13:03:27Z"


def test_integer_amount_and_zero_are_valid() -> None:
    assert parse_transaction(_tx(amount=0)).amount == 0.0
    assert parse_transaction(_tx(amount=7)).amount == 7.0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": -1}, "amount"),
        ({"amount": "12.5"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": 1e12}, "amount"),
        ({"amount": ...}, "amount"),
        ({"event_time": "2026-11-28T14:03:27"}, "event_time"),
        ({"event_time": "yesterday"}, "event_time"),
        ({"transaction_id": ""}, "transaction_id"),
        ({"card_id": "   "}, "card_id"),
        ({"terminal_id": None}, "terminal_id"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({"country": "XX"}, "country"),
        ({"channel": "web"}, "channel"),
    ],
)
def test_invalid_transaction_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_transaction(_tx(**changes))
    fields = [e["field"] for e in err.value.errors]
    assert field in fields
    assert all(e["reason"] for e in err.value.errors)
    assert field in str(err.value)


def test_non_finite_amount_is_rejected() -> None:
    with pytest.raises(SchemaError) as err:
        parse_transaction(
            b'{"transaction_id":"a","event_time":"2026-01-01T00:00:00Z","card_id":"c",'
            b'"terminal_id":"t","amount":NaN}'
        )
    assert err.value.errors


def test_not_json_is_a_schema_error() -> None:
    with pytest.raises(SchemaError) as err:
        parse_transaction(b"\xff\xfe garbage")
    assert err.value.errors[0]["field"] == "(body)"


def test_label_must_not_be_reported_before_its_transaction() -> None:
    good = {
        "transaction_id": "tx-1",
        "card_id": "c",
        "terminal_id": "t",
        "event_time": "2026-11-28T10:00:00Z",
        "is_fraud": True,
        "reported_at": "2026-11-30T10:00:00Z",
    }
    assert parse_label(json.dumps(good)).is_fraud is True
    with pytest.raises(SchemaError, match="reported_at"):
        parse_label(json.dumps({**good, "reported_at": "2026-11-27T10:00:00Z"}))
    with pytest.raises(SchemaError) as err:
        parse_label(json.dumps({**good, "is_fraud": "yes"}))
    assert err.value.errors[0]["field"] == "is_fraud"
    assert Label.model_fields.keys() >= {"transaction_id", "reported_at"}


def test_scored_transaction_bounds_score_and_decision() -> None:
    base = {**GOOD, "model_name": "fraud-detector", "model_version": "3", "scored_at": "2026-11-28T13:03:28Z"}
    ok = ScoredTransaction.model_validate({**base, "score": 0.97, "decision": "decline", "reasons": ["x"]})
    assert ok.decision == "decline"
    with pytest.raises(ValueError, match="score"):
        ScoredTransaction.model_validate({**base, "score": 1.5, "decision": "decline"})
    with pytest.raises(ValueError, match="decision"):
        ScoredTransaction.model_validate({**base, "score": 0.5, "decision": "maybe"})


def test_dead_letter_keeps_bytes_as_text_or_base64() -> None:
    text = dead_letter_for(b'{"oops": 1}', "amount: Field required", "transactions", 1, 42)
    assert (text.raw, text.raw_encoding, text.source_offset) == ('{"oops": 1}', "text", 42)
    binary = dead_letter_for(b"\xff\x00\x01", "not JSON", "transactions", 0, 7)
    assert binary.raw_encoding == "base64"
    assert DeadLetter.model_validate_json(binary.model_dump_json()) == binary


def test_committed_json_schemas_are_current() -> None:
    for name, schema in json_schemas().items():
        path = ROOT / "docs" / "schemas" / f"{name}.schema.json"
        assert path.exists(), f"{path} missing: run `make schemas`"
        assert json.loads(path.read_text()) == schema, f"{path} is stale: run `make schemas`"


# ------------------------------------------------------------------------------------- total validation
NOW = datetime(2026, 11, 28, 13, 5, tzinfo=UTC)  # GOOD happened at 13:03:27Z
BOUNDS = EventBounds(NOW, timedelta(seconds=300), timedelta(days=45), 1_000_000.0)


def _reject(raw: bytes, bounds: EventBounds | None = BOUNDS) -> tuple[str, list[dict[str, str]]]:
    """(dead-letter reason, errors) of a record that must be refused with a ValidationError."""
    with pytest.raises(ValidationError) as err:
        Transaction.model_validate_json(raw, context=bounds.context() if bounds else None)
    return rejection_reason(err.value), schema_errors(err.value)


@pytest.mark.parametrize(
    "when",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ],
)
def test_timestamps_at_the_edge_of_the_datetime_range_are_refused_not_raised(when: str) -> None:
    # the original poison pill: these passed the schema, then raised OverflowError converting to UTC
    for bounds in (BOUNDS, None):
        reason, errors = _reject(_tx(event_time=when), bounds)
        assert reason == "time_out_of_range"
        assert [e["field"] for e in errors] == ["event_time"]


@pytest.mark.parametrize(
    ("when", "words"),
    [
        ("2026-11-28T13:10:01Z", "FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"),
        ("2026-11-28T14:00:00+00:30", "FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"),
        ("2026-10-14T13:04:59Z", "FRAUDWATCH_EVENT_MAX_AGE_DAYS"),
        ("2199-12-31T23:59:59Z", "FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"),
    ],
)
def test_implausible_times_are_refused_relative_to_the_reference_time(when: str, words: str) -> None:
    reason, errors = _reject(_tx(event_time=when))
    assert reason == "time_out_of_range"
    assert errors[0]["field"] == "event_time" and words in errors[0]["reason"]


def test_the_window_is_inclusive_configurable_and_off_without_a_reference() -> None:
    for when in ("2026-11-28T13:10:00Z", "2026-10-14T13:05:00Z", "2026-11-28T13:05:00Z"):
        Transaction.model_validate_json(_tx(event_time=when), context=BOUNDS.context())
    old = _tx(event_time="2020-01-01T00:00:00Z")
    assert Transaction.model_validate_json(old).event_time.year == 2020  # no context: static bounds only
    off = EventBounds.from_settings(Settings(event_max_age_days=0, event_max_future_seconds=0), NOW)
    assert off.max_age is None and off.max_future is None
    Transaction.model_validate_json(old, context=off.context())
    Transaction.model_validate_json(_tx(event_time="2150-01-01T00:00:00Z"), context=off.context())
    assert EventBounds.from_settings(Settings(), NOW) == BOUNDS  # the documented defaults


def test_label_times_are_bounded_too() -> None:
    good = {
        "transaction_id": "tx-1",
        "card_id": "c",
        "terminal_id": "t",
        "event_time": "2026-11-20T10:00:00Z",
        "is_fraud": True,
        "reported_at": "2026-11-28T11:00:00Z",
    }
    ctx = BOUNDS.context()
    assert Label.model_validate_json(json.dumps(good), context=ctx).is_fraud
    for changes, field in (
        ({"reported_at": "2026-11-29T11:00:00Z"}, "reported_at"),
        ({"event_time": "2025-01-01T00:00:00Z"}, "event_time"),
        ({"reported_at": "9999-12-31T23:59:59-01:00"}, "reported_at"),
    ):
        with pytest.raises(ValidationError) as err:
            Label.model_validate_json(json.dumps({**good, **changes}), context=ctx)
        assert rejection_reason(err.value) == "time_out_of_range"
        assert field in [e["field"] for e in schema_errors(err.value)]


def test_leap_seconds_are_refused_with_the_field_named() -> None:
    reason, errors = _reject(_tx(event_time="2016-12-31T23:59:60Z"), None)
    assert errors[0]["field"] == "event_time" and reason == "invalid_value"


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("1000000.01", "amount_out_of_range"),
        ("1e300", "amount_out_of_range"),
        ("-0.01", "amount_out_of_range"),
        ("1e400", "amount_out_of_range"),
        ("Infinity", "amount_out_of_range"),
        ("NaN", "amount_out_of_range"),
        ('"12"', "invalid_value"),
    ],
)
def test_amounts_outside_the_configured_range_are_refused(amount: str, reason: str) -> None:
    raw = _tx().replace(b'"amount": 42.5', b'"amount": ' + amount.encode())
    got, errors = _reject(raw)
    assert got == reason, errors
    assert errors[0]["field"] == "amount"


def test_amount_max_is_configurable() -> None:
    assert Transaction.model_validate_json(_tx(amount=5e6)).amount == 5e6  # schema ceiling only
    loose = EventBounds.from_settings(Settings(amount_max=0), NOW)
    assert Transaction.model_validate_json(_tx(amount=5e6), context=loose.context()).amount == 5e6
    tight = EventBounds.from_settings(Settings(amount_max=100), NOW)
    with pytest.raises(ValidationError, match="FRAUDWATCH_AMOUNT_MAX"):
        Transaction.model_validate_json(_tx(amount=100.5), context=tight.context())


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"card_id": "card\u00001"}, "card_id"),
        ({"terminal_id": "t\x07"}, "terminal_id"),
        ({"transaction_id": "tx\u009b1"}, "transaction_id"),
        ({"transaction_id": "tx\u007f"}, "transaction_id"),
        ({"merchant_category": "54\n11"}, "merchant_category"),
        ({"card_id": "c" * 129}, "card_id"),
        ({"merchant_category": "m" * 65}, "merchant_category"),
        ({"note": "n\u0000"}, "note"),
        ({"note": "n" * 257}, "note"),
    ],
)
def test_control_characters_and_oversized_strings_are_invalid_strings(
    changes: dict[str, object], field: str
) -> None:
    reason, errors = _reject(_tx(**changes))
    assert field in [e["field"] for e in errors]
    assert reason in ("invalid_string", "invalid_value")
    if field != "note":
        assert reason == "invalid_string"
    if "\u0000" in str(changes) or "\x07" in str(changes):
        assert "control character" in errors[0]["reason"]


def test_lone_surrogates_are_not_json_and_pairs_are_fine() -> None:
    reason, errors = _reject(_tx().replace(b'"card-1"', b'"card-\\ud800"'))
    assert reason == "not_json" and errors[0]["field"] == "(body)"
    ok = Transaction.model_validate_json(_tx().replace(b'"card-1"', b'"card-\\ud83d\\ude00"'))
    assert ok.card_id == "card-\U0001f600"
    assert ok.card_id.encode("utf-8")  # a validated string always encodes


@pytest.mark.parametrize(
    "extra",
    [
        {"nested": {"a": 1}},
        {"listed": [1, 2]},
        {f"f{i}": i for i in range(33)},
        {"n" * 65: 1},
        {"bad\u0001name": 1},
    ],
)
def test_extra_fields_are_bounded(extra: dict[str, object]) -> None:
    reason, errors = _reject(json.dumps({**GOOD, **extra}).encode())
    assert reason == "invalid_value" and errors


def test_scalar_extra_fields_survive_a_round_trip() -> None:
    extra = {"source": "pos-gw", "n": 3, "big": 2**62, "f": 1.5, "flag": False, "none": None}
    tx = Transaction.model_validate_json(json.dumps({**GOOD, **extra}))
    assert tx.model_extra == extra
    assert json.loads(tx.model_dump_json())["big"] == 2**62
    # an integer beyond 64 bits (which orjson, writing the scored JSON, refuses) is kept as a float
    huge = Transaction.model_validate_json(json.dumps({**GOOD, "huge": 2**70}))
    assert huge.model_extra == {"huge": float(2**70)}


def test_deep_nesting_and_duplicate_keys() -> None:
    deep = b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert _reject(deep)[0] == "not_json"
    # duplicate keys: the last one wins, the same way in the API and the stream (pydantic-core's parser)
    dup = _tx().replace(b'"card_id": "card-1"', b'"card_id": "card-0", "card_id": "card-1"')
    assert Transaction.model_validate_json(dup).card_id == "card-1"
