"""Event schemas: valid and invalid cases (each invalid case names the field), and committed JSON Schemas."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudwatch.errors import SchemaError
from fraudwatch.events import (
    DeadLetter,
    Label,
    ScoredTransaction,
    dead_letter_for,
    json_schemas,
    parse_label,
    parse_transaction,
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
