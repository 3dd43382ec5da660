"""No poison pills in the stream: whatever one Kafka record holds, the stream's per-record work (parsing and
validation, terminal and card features, scoring, the scored JSON) turns it into a scored transaction or a
dead letter — never an exception that would fail the micro-batch (and, replayed, every retry after it).

Runs the stage functions the Spark operators run, against the in-memory state handle of
tests/unit/test_stream_state.py; the real operators run in tests/integration/test_stream.py.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudwatch.config import Settings
from fraudwatch.events import DEAD_LETTER_REASONS, DeadLetter, EventBounds, ScoredTransaction
from fraudwatch_stream import scoring, stateful
from fraudwatch_stream.job import StreamJob
from fraudwatch_stream.records import (
    DEAD_LETTER,
    LABEL,
    TRANSACTION,
    parse_frame,
    unpack_features,
)
from fraudwatch_stream.scoring import LoadedModel, ModelConfig, score_transactions
from fraudwatch_stream.stateful import EntityLog, card_stage, terminal_stage
from tests.unit.test_stream_state import _Handle

TOPIC = "tx"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
NOW_US = int((NOW - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
BOUNDS = EventBounds.from_settings(Settings(), NOW)  # the defaults; each record is judged at its kafka_us


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    stateful._CACHE.clear()
    yield
    stateful._CACHE.clear()


def _tx(tx_id: str, minute: int, card: str = "card-1", terminal: str = "term-1", **extra: Any) -> bytes:
    body = {
        "transaction_id": tx_id,
        "event_time": (NOW - timedelta(hours=1) + timedelta(minutes=minute)).isoformat(),
        "card_id": card,
        "terminal_id": terminal,
        "amount": 12.5 + minute,
        "currency": "EUR",
        "channel": "pos",
        "country": "BE",
    }
    return orjson.dumps({**body, **extra})


def _raw(
    values: list[bytes | None], stamps: list[int | None] | None = None, topic: str = TOPIC
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "value": values,
            "topic": topic,
            "partition": 0,
            "offset": range(len(values)),
            "kafka_us": stamps if stamps is not None else [NOW_US] * len(values),
            "tb": 0,
        }
    )


def _parse(raw: pd.DataFrame) -> pd.DataFrame:
    return parse_frame(raw, topic_transactions=TOPIC, max_record_bytes=4096, buckets=1, bounds=BOUNDS)


def _terminal(raw: pd.DataFrame, handle: _Handle | None = None) -> pd.DataFrame:
    frames = terminal_stage(
        (0,),
        iter([raw]),
        EntityLog("terminal", handle or _Handle()),
        buckets=1,
        topic_transactions=TOPIC,
        max_record_bytes=4096,
        bounds=BOUNDS,
    )
    return pd.concat(list(frames), ignore_index=True)


def _card(rows: pd.DataFrame, handle: _Handle | None = None) -> pd.DataFrame:
    frames = list(
        card_stage(
            (0,), iter([rows]), EntityLog("card", handle or _Handle()), buckets=1, topic_transactions=TOPIC
        )
    )
    return pd.concat(frames, ignore_index=True) if frames else rows.iloc[0:0]


def _letters(out: pd.DataFrame) -> dict[int, tuple[str, DeadLetter]]:
    dead = out[out["kind"] == DEAD_LETTER]
    return {
        int(DeadLetter.model_validate_json(p).source_offset or 0): (r, DeadLetter.model_validate_json(p))
        for r, p in zip(dead["reason"], dead["payload"], strict=True)
    }


# ------------------------------------------------------------------------------------ the original poison
def test_the_edge_of_the_datetime_range_is_a_dead_letter_and_the_batch_goes_on() -> None:
    poison = [
        _tx("p1", 0, event_time="0001-01-01T00:00:00+01:00"),
        _tx("p2", 0, event_time="9999-12-31T23:59:59-01:00"),
        _tx("p3", 0, event_time="2999-01-01T00:00:00Z"),
    ]
    raw = _raw([_tx("a", 1), *poison, _tx("b", 2)])
    out = _terminal(raw)
    letters = _letters(out)
    assert sorted(letters) == [1, 2, 3]
    for offset, (reason, letter) in letters.items():
        assert reason == "time_out_of_range" and "event_time" in letter.error
        assert letter.raw == poison[offset - 1].decode() and letter.source_topic == TOPIC
    assert out.loc[out["kind"] == TRANSACTION, "transaction_id"].tolist() == ["a", "b"]


def test_the_window_is_judged_at_the_kafka_timestamp_so_a_replay_judges_alike() -> None:
    record = _tx("late", 0)  # event_time: NOW - 1 h
    stamps = [NOW_US, NOW_US + 60 * 86_400 * 10**6, -1, None, 2**62]
    out = _parse(_raw([record] * len(stamps), stamps))
    assert out["kind"].tolist() == [TRANSACTION, DEAD_LETTER, TRANSACTION, TRANSACTION, DEAD_LETTER]
    # 60 days later the record is too old; without a timestamp only the static bounds apply; a Kafka
    # timestamp beyond 2200 is no clock at all
    assert out["reason"].tolist()[1] == out["reason"].tolist()[4] == "time_out_of_range"
    again = _parse(_raw([record] * len(stamps), stamps))  # a re-run batch: identical decisions
    assert again["kind"].tolist() == out["kind"].tolist()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_tx("x", 0, amount=5e6), "amount_out_of_range"),
        (_tx("x", 0, card_id="card\u0000"), "invalid_string"),
        (_tx("x", 0, note={"deep": [1]}), "invalid_value"),
        (_tx("x", 0, event_time="2026-11-28T23:59:60Z"), "invalid_value"),
        (b'{"transaction_id": "x\\ud800"}', "not_json"),
        (b"\xff\xfe", "not_json"),
        (b"[" * 3000 + b"]" * 3000, "oversized"),
        (b"[" * 1000 + b"]" * 1000, "not_json"),
        (None, "empty"),
    ],
)
def test_each_class_of_bad_record_has_its_reason(record: bytes | None, reason: str) -> None:
    out = _parse(_raw([record, _tx("ok", 1)]))
    assert out["kind"].tolist() == [DEAD_LETTER, TRANSACTION]
    assert out["reason"].iloc[0] == reason
    assert reason in DEAD_LETTER_REASONS


# ------------------------------------------------------------------------ isolation in the feature stages
def test_a_record_whose_terminal_features_are_not_finite_is_dead_lettered_and_the_rest_see_the_state_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the compiled kernels raise nothing per record; what a record can do is push its features (or the
    # state) out of range: such a record is dead-lettered and the group runs again without it
    records = [_tx(f"t{i}", i) for i in range(5)]
    clean = _terminal(_raw([r for i, r in enumerate(records) if i != 2]))
    real = stateful.terminal_features

    def kernel(states: Any, rows: Any, kinds: Any, ts: Any, *rest: Any, **kw: Any) -> Any:
        out = real(
            states, rows, kinds, ts, *rest, **kw
        )  # the table is updated first: a re-run must not see it
        out[ts[kinds == 0] == _ts(records[2])] = math.inf
        return out

    monkeypatch.setattr(stateful, "terminal_features", kernel)
    handle = _Handle()
    out = _terminal(_raw(records), handle)
    letters = _letters(out)
    assert list(letters) == [2]
    reason, letter = letters[2]
    assert reason == "feature_error" and "not finite" in letter.error
    assert letter.raw == records[2].decode() and letter.source_offset == 2
    txs = out[out["kind"] == TRANSACTION]
    assert txs["transaction_id"].tolist() == ["t0", "t1", "t3", "t4"]
    expected = clean[clean["kind"] == TRANSACTION]
    np.testing.assert_array_equal(unpack_features(txs["tfeat"]), unpack_features(expected["tfeat"]))


def test_records_whose_card_features_go_non_finite_are_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    records = [_tx(f"c{i}", i) for i in range(4)]
    rows = _terminal(_raw(records))
    rows = rows[rows["kind"] == TRANSACTION]
    real = stateful.card_features

    def kernel(states: Any, rows: Any, ts: Any, *rest: Any, **kw: Any) -> Any:
        out = real(states, rows, ts, *rest, **kw)
        out[ts == _ts(records[1]), 0] = math.nan
        out[ts == _ts(records[3]), -1] = math.inf
        return out

    monkeypatch.setattr(stateful, "card_features", kernel)
    out = _card(rows)
    letters = _letters(out)
    assert sorted(letters) == [1, 3]
    assert all(
        reason == "feature_error" and "not finite" in letter.error for reason, letter in letters.values()
    )
    assert json.loads(letters[1][1].raw)["transaction_id"] == "c1"  # the validated transaction
    assert out.loc[out["kind"] == TRANSACTION, "transaction_id"].tolist() == ["c0", "c2"]


def test_undecodable_state_is_not_a_record_fault_and_fails_the_batch() -> None:
    handle = _Handle()
    _terminal(_raw([_tx("s0", 0)]), handle)
    entities, meta = EntityLog("terminal", handle).open(0)
    stateful._CACHE.clear()
    EntityLog("terminal", handle).commit(0, entities, meta, {"term-1": b"\x00corrupt"})
    stateful._CACHE.clear()
    with pytest.raises(Exception, match="decode"):
        _terminal(_raw([_tx("s1", 1)]), handle)


def _ts(record: bytes) -> float:
    return datetime.fromisoformat(json.loads(record)["event_time"]).timestamp()


# ------------------------------------------------------------------------------------- scoring isolation
class _Model:
    """A stand-in for FraudModel (score_matrix, decide, explain): the stage logic, not the model, is tested."""

    def __init__(self, fail_explain_for: str | None = None) -> None:
        self.fail_explain_for = fail_explain_for

    def score_matrix(self, x: np.ndarray) -> np.ndarray:
        return np.where(x[:, 0] > 1e6, np.nan, 1.0 / (1.0 + np.exp(-np.clip(x.sum(axis=1) / 1e3, -50, 50))))

    def decide(self, scores: np.ndarray) -> list[str]:
        return ["decline" if s >= 0.5 else "approve" for s in scores]

    def explain(self, row: np.ndarray, k: int, country: str | None) -> list[str]:
        if country == self.fail_explain_for:
            raise KeyError(country)
        return ["a reason"]


def _loaded(model: _Model) -> LoadedModel:
    return LoadedModel(name="fraud-detector", version="1", model=model, columns=None)


CONFIG = ModelConfig("unused", "models:/fraud-detector@production", "fraud-detector", "production", 60.0)


def _features_for(records: list[bytes]) -> pd.DataFrame:
    rows = _terminal(_raw(records))
    rows = _card(rows[rows["kind"] == TRANSACTION])
    return rows[rows["kind"] == TRANSACTION].reset_index(drop=True)


def test_a_row_that_cannot_be_scored_or_serialised_gets_an_error_and_the_rest_are_scored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = _features_for([_tx("s0", 0), _tx("s1", 1, country="NL"), _tx("s2", 2), _tx("s3", 3)])
    cfeat = unpack_features(rows["cfeat"]).copy()
    cfeat[2, 0] = math.inf  # a non-finite feature row
    rows["cfeat"] = [row.tobytes() for row in cfeat.astype("<f8")]
    monkeypatch.setattr(scoring, "current_model", lambda _config: _loaded(_Model(fail_explain_for="NL")))
    out = score_transactions(rows, CONFIG)
    assert out["error"].notna().tolist() == [False, True, True, False]
    assert "KeyError" in out["error"].iloc[1] and "not finite" in out["error"].iloc[2]
    for value in out.loc[out["error"].isna(), "value"]:
        ScoredTransaction.model_validate_json(value)


def test_the_sink_turns_unscored_transactions_into_dead_letters() -> None:
    payload = orjson.dumps({"transaction_id": "u1"}).decode()
    pdf = pd.DataFrame(
        {
            "kind": [TRANSACTION, TRANSACTION, DEAD_LETTER],
            "error": [None, "scoring: boom", None],
            "payload": [payload, payload, "{}"],
            "reason": [None, None, "not_json"],
            "src_partition": [0, 1, 0],
            "src_offset": [5, 6, 7],
        }
    )
    job = SimpleNamespace(settings=Settings(topic_transactions=TOPIC))
    StreamJob._dead_letter_unscored(job, pdf)  # type: ignore[arg-type]
    assert pdf["kind"].tolist() == [TRANSACTION, DEAD_LETTER, DEAD_LETTER]
    assert pdf["reason"].tolist()[1] == "scoring_error"
    letter = DeadLetter.model_validate_json(pdf["payload"].iloc[1])
    assert (letter.source_topic, letter.source_partition, letter.source_offset) == (TOPIC, 1, 6)
    assert letter.error == "scoring: boom" and json.loads(letter.raw) == {"transaction_id": "u1"}


# ---------------------------------------------------------------------------------------- property tests
_OFFSET = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
    lambda m: ("+" if m >= 0 else "-") + f"{abs(m) // 60:02d}:{abs(m) % 60:02d}"
)
_TIMES = st.one_of(
    st.builds(lambda d, o: d.isoformat() + o, st.datetimes(), _OFFSET),  # the whole datetime range
    st.builds(lambda d: d.isoformat() + "Z", st.datetimes()),
    st.builds(lambda d: d.replace(second=59).isoformat(timespec="seconds")[:-2] + "60Z", st.datetimes()),
    st.builds(
        lambda s: (NOW + timedelta(seconds=s)).isoformat(), st.integers(-90 * 86_400, 90 * 86_400)
    ),  # around the window's edges
    st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "1970-01-01T00:00:00Z"]),
    st.text(max_size=30),
)
_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0.0", "1e-400", "0", "999999.99", "1000000"]),
)
_SURROGATE = st.integers(0xD800, 0xDFFF).map(lambda c: f'"x\\u{c:04x}"')
_STRINGS = st.one_of(
    st.text(max_size=140).map(lambda s: json.dumps(s)),  # ensure_ascii: control characters escaped
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=10).map(lambda s: json.dumps(s)),
    st.text(alphabet=string.ascii_letters, min_size=120, max_size=300).map(lambda s: json.dumps(s)),
    _SURROGATE,
)
_NESTED = st.integers(1, 400).map(lambda n: "[" * n + "]" * n)
_JSON_VALUES = st.one_of(
    _STRINGS, _NUMBERS, _NESTED, st.sampled_from(["true", "false", "null", "{}", '{"a": {"b": 1}}'])
)
_FIELD_VALUES = {
    "transaction_id": _STRINGS,
    "card_id": st.one_of(st.sampled_from(['"card-1"', '"card-2"']), _STRINGS),
    "terminal_id": st.one_of(st.sampled_from(['"term-1"', '"term-2"']), _STRINGS),
    "event_time": _TIMES.map(json.dumps),
    "reported_at": _TIMES.map(json.dumps),
    "amount": _NUMBERS,
    "currency": st.sampled_from(['"EUR"', '"eur"', "null", '"XXX"']),
    "channel": st.sampled_from(['"pos"', '"web"', "null"]),
    "country": st.sampled_from(['"BE"', '"XX"', "null", '"B\\u0000"']),
    "is_fraud": st.sampled_from(["true", "false", '"yes"', "1"]),
}


@st.composite
def hostile_records(draw: st.DrawFn) -> bytes | None:
    """A Kafka value aimed at the edges: valid-looking JSON with hostile fields, or arbitrary bytes."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.one_of(st.none(), st.binary(max_size=200)))
    pairs: list[str] = []
    for name, values in _FIELD_VALUES.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # a missing field now and then
        pairs.append(f'"{name}": {draw(values)}')
        if draw(st.integers(0, 19)) == 0:
            pairs.append(f'"{name}": {draw(values)}')  # a duplicate key
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.one_of(st.text(max_size=70), st.sampled_from(["note", "amount", "card_id"])))
        pairs.append(f"{json.dumps(key)}: {draw(_JSON_VALUES)}")
    return ("{" + ", ".join(pairs) + "}").encode("utf-8", "surrogatepass")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(hostile_records(), min_size=1, max_size=12),
    stamps=st.lists(
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(NOW_US - 10**14, NOW_US + 10**14)),
        min_size=12,
        max_size=12,
    ),
    topics=st.lists(st.sampled_from([TOPIC, "labels"]), min_size=12, max_size=12),
)
def test_every_record_is_processed_or_dead_lettered_never_an_exception(
    records: list[bytes | None], stamps: list[int | None], topics: list[str]
) -> None:
    n = len(records)
    raw = _raw(records, stamps[:n])
    raw["topic"] = topics[:n]
    stateful._CACHE.clear()
    out = _terminal(raw)  # parse + validate + terminal features: must not raise
    kinds = out["kind"].tolist()
    dead = out[out["kind"] == DEAD_LETTER]
    assert set(dead["reason"]) <= set(DEAD_LETTER_REASONS)
    for payload in dead["payload"]:
        DeadLetter.model_validate_json(payload)
    events = out[out["kind"].isin([TRANSACTION, LABEL])]
    # every input record comes out exactly once (labels are consumed by the terminal stage, not emitted)
    n_labels = sum(1 for r, t in zip(records, topics, strict=False) if t == "labels" and r is not None)
    assert len(dead) + len(events) <= n and len(dead) + len(events) >= n - n_labels
    assert kinds.count(TRANSACTION) == len(events)
    txs = out[out["kind"] == TRANSACTION]
    if len(txs):
        card = _card(txs)  # card features: must not raise either
        scored_rows = card[card["kind"] == TRANSACTION]
        if len(scored_rows):
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(scoring, "current_model", lambda _config: _loaded(_Model()))
                scored = score_transactions(scored_rows, CONFIG)
            for value, error in zip(scored["value"], scored["error"], strict=True):
                assert (value is None) != (error is None)
                if value is not None:
                    ScoredTransaction.model_validate_json(value)


def test_an_oversized_record_is_dead_lettered_truncated_so_its_dead_letter_always_fits_kafka() -> None:
    # escaped control characters take 6 bytes each in JSON: whole, this dead letter would be ~6 MB, past
    # the broker's message size, and the failed Kafka write would fail the batch and every retry
    huge = b'{"note": "' + b"\x01" * 1_000_000 + b'"}'
    out = _parse(_raw([huge, _tx("ok", 1)]))
    assert out["kind"].tolist() == [DEAD_LETTER, TRANSACTION] and out["reason"].iloc[0] == "oversized"
    letter = DeadLetter.model_validate_json(out["payload"].iloc[0])
    assert letter.raw.encode() == huge[:4096] and "first 4096 bytes" in letter.error
    assert len(out["payload"].iloc[0]) < 64 * 1024
