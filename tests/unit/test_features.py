"""The feature library against a slow reference, point-in-time properties, and bounded state."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudwatch.errors import FeatureStateError
from fraudwatch.features import (
    FEATURE_NAMES,
    CardState,
    TerminalState,
    datetime_seconds,
    epoch_seconds,
    feature_vector,
    replay,
)
from fraudwatch.features.state import CARD_TERMINALS_KEPT

from .feature_reference import Lab, Tx, reference_features

T0 = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
CARDS = ["c1", "c2", "c3"]
TERMINALS = ["t1", "t2", "t3", "t4"]


def _frames(txs: list[Tx], labels: list[Lab]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tx = pd.DataFrame(
        {
            "transaction_id": [t.tx_id for t in txs],
            "event_time": pd.to_datetime([t.ts for t in txs], unit="s", utc=True),
            "card_id": [t.card for t in txs],
            "terminal_id": [t.terminal for t in txs],
            "amount": [t.amount for t in txs],
            "country": [t.country for t in txs],
            "channel": [t.channel for t in txs],
        }
    )
    lab = pd.DataFrame(
        {
            "transaction_id": [x.tx_id for x in labels],
            "terminal_id": [x.terminal for x in labels],
            "event_time": pd.to_datetime([x.event_ts for x in labels], unit="s", utc=True),
            "is_fraud": [x.is_fraud for x in labels],
            "reported_at": pd.to_datetime([x.reported_ts for x in labels], unit="s", utc=True),
        }
    )
    return tx, lab


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Tx], list[Lab]]:
    n = draw(st.integers(min_value=1, max_value=40))
    # whole seconds keep the reference's float arithmetic identical to the library's
    offsets = sorted(draw(st.lists(st.integers(0, 45 * 86400), min_size=n, max_size=n)))
    txs = []
    for i, off in enumerate(offsets):
        txs.append(
            Tx(
                tx_id=f"x{i}",
                ts=T0 + off,
                card=draw(st.sampled_from(CARDS)),
                terminal=draw(st.sampled_from(TERMINALS)),
                amount=draw(st.sampled_from([0.0, 1.5, 4.99, 12.0, 55.5, 230.0, 1999.99])),
                country=draw(st.sampled_from([None, "BE", "FR", "US"])),
                channel=draw(st.sampled_from([None, "pos", "ecom", "atm"])),
            )
        )
    labels = []
    for t in txs:
        if draw(st.booleans()) and draw(st.booleans()):
            delay = draw(st.integers(0, 20 * 86400))
            labels.append(Lab(t.tx_id, t.terminal, t.ts, t.ts + delay, is_fraud=draw(st.booleans())))
    return txs, labels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_features_match_reference(history: tuple[list[Tx], list[Lab]]) -> None:
    txs, labels = history
    tx, lab = _frames(txs, labels)
    got = replay(tx, lab).features.to_numpy()
    want = np.array(reference_features(txs, labels))
    assert got.shape == (len(txs), len(FEATURE_NAMES))
    for i in range(len(txs)):
        for j, name in enumerate(FEATURE_NAMES):
            assert got[i, j] == pytest.approx(want[i, j], rel=1e-9, abs=1e-9), (i, name)


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(1, 10 * 86400))
def test_later_events_never_change_earlier_features(history: tuple[list[Tx], list[Lab]], extra: int) -> None:
    txs, labels = history
    tx, lab = _frames(txs, labels)
    before = replay(tx, lab).features
    last = max(t.ts for t in txs)
    later_tx = Tx("late", last + extra, txs[0].card, txs[0].terminal, 999.0)
    later_labels = [Lab(t.tx_id, t.terminal, t.ts, last + extra, True) for t in txs]
    tx2, lab2 = _frames([*txs, later_tx], labels + later_labels)
    after = replay(tx2, lab2).features.iloc[: len(txs)]
    pd.testing.assert_frame_equal(before, after)


def test_transaction_never_sees_its_own_label() -> None:
    t = Tx("x0", T0, "c1", "t1", 50.0)
    same_instant = Lab("x0", "t1", T0, T0, True)
    tx, lab = _frames([t], [same_instant])
    feats = replay(tx, lab).features.iloc[0]
    assert feats["terminal_fraud_count_30d"] == 0
    assert feats["terminal_days_since_fraud"] == 365.0


def test_label_counts_only_after_it_is_reported() -> None:
    txs = [Tx(f"x{i}", T0 + i * 3600, "c1", "t1", 20.0) for i in range(5)]
    label = Lab("x0", "t1", T0, T0 + 2.5 * 3600, True)  # reported between x2 and x3
    tx, lab = _frames(txs, [label])
    frauds = replay(tx, lab).features["terminal_fraud_count_30d"].tolist()
    assert frauds == [0, 0, 0, 1, 1]


def test_redelivered_label_is_counted_once() -> None:
    txs = [Tx("x0", T0, "c1", "t1", 20.0), Tx("x1", T0 + 7200, "c1", "t1", 20.0)]
    labels = [Lab("x0", "t1", T0, T0 + 60, True), Lab("x0", "t1", T0, T0 + 120, True)]
    tx, lab = _frames(txs, labels)
    assert replay(tx, lab).features["terminal_fraud_count_30d"].tolist() == [0, 1]


def test_amount_ratio_reflects_card_history() -> None:
    txs = [Tx(f"x{i}", T0 + i * 86400, "c1", "t1", 10.0) for i in range(10)]
    txs.append(Tx("big", T0 + 10 * 86400, "c1", "t2", 82.0))
    tx, _ = _frames(txs, [])
    last = replay(tx).features.iloc[-1]
    assert last["amount_to_card_mean_30d"] == pytest.approx(8.2)
    assert last["card_terminal_is_new"] == 1.0
    assert last["card_count_30d"] == 10


def test_cold_start_features_for_unknown_entities() -> None:
    ts = T0 + 3 * 3600
    vec = feature_vector(None, None, ts, 42.0, "t-new", "BE", "pos")
    assert len(vec) == len(FEATURE_NAMES)
    named = dict(zip(FEATURE_NAMES, vec, strict=True))
    assert named["card_is_new"] == 1.0
    assert named["terminal_is_new"] == 1.0
    assert named["is_night"] == 1.0
    assert named["card_count_30d"] == 0.0


def test_state_is_bounded_whatever_the_activity() -> None:
    n = 20_000  # one card, one transaction every 90 s for ~3 weeks, on ever-new terminals
    txs = [Tx(f"x{i}", T0 + 90 * i, "c1", f"t{i}", 10.0 + i % 7, "BE" if i % 2 else "FR") for i in range(n)]
    tx, _ = _frames(txs, [])
    result = replay(tx)
    card = result.card_states["c1"]
    assert len(card.m5) <= 12 and len(card.hours) <= 24 and len(card.days) <= 30
    assert len(card.terminals) == CARD_TERMINALS_KEPT
    assert len(card.to_bytes()) < 4096


def test_state_round_trips_and_rejects_garbage() -> None:
    txs = [Tx(f"x{i}", T0 + 1000 * i, "c1", "t1", 3.0 * i, "BE") for i in range(50)]
    labels = [Lab("x3", "t1", T0 + 3000, T0 + 9000, True)]
    tx, lab = _frames(txs, labels)
    res = replay(tx, lab)
    card, term = res.card_states["c1"], res.terminal_states["t1"]
    assert CardState.from_bytes(card.to_bytes()) == card
    assert TerminalState.from_bytes(term.to_bytes()) == term
    with pytest.raises(FeatureStateError):
        CardState.from_bytes(b"not state")
    with pytest.raises(FeatureStateError):
        TerminalState.from_bytes(b"[99, [], 0, -1, [], -1]")


def test_replay_from_saved_state_equals_one_replay() -> None:
    txs = [Tx(f"x{i}", T0 + 3571 * i, CARDS[i % 3], TERMINALS[i % 4], float(i % 13)) for i in range(300)]
    tx, _ = _frames(txs, [])
    whole = replay(tx).features
    first = replay(tx.iloc[:150])
    cards = {k: CardState.from_bytes(v.to_bytes()) for k, v in first.card_states.items()}
    terms = {k: TerminalState.from_bytes(v.to_bytes()) for k, v in first.terminal_states.items()}
    second = replay(tx.iloc[150:], card_states=cards, terminal_states=terms).features
    pd.testing.assert_frame_equal(whole.iloc[150:], second)


def test_time_conversions_agree() -> None:
    dt = datetime(2026, 5, 17, 23, 59, 59, 123456, tzinfo=UTC)
    assert datetime_seconds(dt) == dt.timestamp()
    series = pd.Series([dt, dt.replace(microsecond=1)])
    assert epoch_seconds(series).tolist() == [dt.timestamp(), dt.replace(microsecond=1).timestamp()]
    naive = pd.Series([pd.Timestamp("2018-04-01 00:00:31")])
    assert epoch_seconds(naive)[0] == datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC).timestamp()
