"""The feature engine's contracts: point in time, state records, blocks vs whole histories, read-only rows,
and the declarations (the docs' table is generated from them). Values against an independent oracle are in
test_feature_oracle.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudwatch.errors import FeatureStateError
from fraudwatch.features import (
    CARD_DTYPE,
    FEATURE_NAMES,
    TERMINAL_DTYPE,
    Window,
    card_features,
    channel_codes,
    check_record,
    country_codes,
    datetime_seconds,
    epoch_seconds,
    feature_table,
    feature_vector,
    new_states,
    online_features,
    replay,
    spec,
    states_from_bytes,
    terminal_keys,
)

from .test_feature_oracle import T0, bounded_histories

ROOT = Path(__file__).resolve().parents[2]


def _tx(rows: list[tuple[str, float, str, str, float]], country: str | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [r[0] for r in rows],
            "event_time": pd.to_datetime([r[1] for r in rows], unit="s", utc=True),
            "card_id": [r[2] for r in rows],
            "terminal_id": [r[3] for r in rows],
            "amount": [r[4] for r in rows],
            "country": country,
            "channel": "pos",
        }
    )


def _labels(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [r[0] for r in rows],
            "terminal_id": [r[1] for r in rows],
            "event_time": pd.to_datetime([r[2] for r in rows], unit="s", utc=True),
            "is_fraud": True,
            "reported_at": pd.to_datetime([r[3] for r in rows], unit="s", utc=True),
        }
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(bounded_histories(), st.integers(1, 10 * 86400))
def test_later_events_never_change_earlier_features(
    history: tuple[pd.DataFrame, pd.DataFrame], extra: int
) -> None:
    tx, labels = history
    before = replay(tx, labels).features
    last = tx["event_time"].max() + pd.Timedelta(seconds=extra)
    late_tx = tx.iloc[[0]].assign(transaction_id="late", event_time=last, amount=999.0)
    late_labels = tx.assign(is_fraud=True, reported_at=last)[list(labels.columns)]
    all_labels = pd.concat([labels, late_labels]) if len(labels) else late_labels
    after = replay(pd.concat([tx, late_tx]), all_labels).features.iloc[: len(tx)]
    pd.testing.assert_frame_equal(before, after)


def test_transaction_never_sees_its_own_label() -> None:
    tx = _tx([("x0", T0, "c1", "t1", 50.0)])
    feats = replay(tx, _labels([("x0", "t1", T0, T0)])).features.iloc[0]
    assert feats["terminal_fraud_count_utc30d"] == 0
    assert feats["terminal_days_since_fraud"] == spec.NO_FRAUD_DAYS


def test_label_counts_only_after_it_is_reported() -> None:
    tx = _tx([(f"x{i}", T0 + i * 3600, "c1", "t1", 20.0) for i in range(5)])
    frauds = replay(tx, _labels([("x0", "t1", T0, T0 + 2.5 * 3600)])).features["terminal_fraud_count_utc30d"]
    assert frauds.tolist() == [0, 0, 0, 1, 1]


def test_delayed_windows_count_only_days_old_enough_to_carry_a_label() -> None:
    # one transaction a day for 20 days, each reported fraud exactly 7 days later
    days = 20
    tx = _tx([(f"x{i}", T0 + i * 86400 + 600, "c1", "t1", 20.0) for i in range(days)])
    labels = _labels([(f"x{i}", "t1", T0 + i * 86400 + 600, T0 + (i + 7) * 86400 + 600) for i in range(days)])
    last = replay(tx, labels).features.iloc[-1]
    # at day 19, 00:10: the 7 latest UTC days that ended >= 7 days ago are days 5..11 - all labelled
    assert last["terminal_count_delayed_utc7d"] == 7
    assert last["terminal_risk_delayed_utc7d"] == 1.0
    assert last["terminal_count_delayed_utc1d"] == 1
    assert last["terminal_count_utc1d"] == 0 and last["terminal_count_utc7d"] == 6


def test_amount_ratio_reflects_card_history() -> None:
    tx = _tx(
        [(f"x{i}", T0 + i * 86400, "c1", "t1", 10.0) for i in range(10)]
        + [("big", T0 + 10 * 86400, "c1", "t2", 82.0)]
    )
    last = replay(tx).features.iloc[-1]
    assert last["amount_to_card_mean_30d"] == pytest.approx(8.2)
    assert last["card_terminal_is_new"] == 1.0
    assert last["card_count_30d"] == 10
    assert last["card_count_1d"] == 0  # exactly 24 h earlier is outside the trailing 24 h


def test_cold_start_features_for_unknown_entities() -> None:
    vec = feature_vector(None, None, T0 + 3 * 3600, 42.0, "t-new", "BE", "pos")
    named = dict(zip(FEATURE_NAMES, vec, strict=True))
    assert named["card_is_new"] == 1.0 and named["terminal_is_new"] == 1.0
    assert named["is_night"] == 1.0 and named["card_count_30d"] == 0.0
    assert named["card_country_is_new"] == 1.0 and named["terminal_days_since_fraud"] == spec.NO_FRAUD_DAYS


def test_online_rows_equal_replay_and_do_not_touch_state() -> None:
    rows = [(f"x{i}", T0 + 977 * i, f"c{i % 3}", f"t{i % 4}", float(i % 13)) for i in range(200)]
    tx = _tx(rows, country="BE")
    # labels all reported before the 150th transaction: the online rows see no label the state lacks
    labels = _labels([(f"x{i}", f"t{i % 4}", T0 + 977 * i, T0 + 977 * i + 5000) for i in range(0, 140, 7)])
    whole = replay(tx, labels).features
    first = replay(tx.iloc[:150], labels)
    nxt = tx.iloc[150:]
    cards = [first.card_states[c] for c in nxt["card_id"]]
    terms = [first.terminal_states[t] for t in nxt["terminal_id"]]
    before = (list(cards), list(terms))
    got = online_features(
        cards,
        terms,
        epoch_seconds(nxt["event_time"]).tolist(),
        nxt["amount"].tolist(),
        nxt["terminal_id"].tolist(),
        nxt["country"].tolist(),
        nxt["channel"].tolist(),
    )
    assert (cards, terms) == before
    # each row is what the replay gives a transaction seen right after the first 150 (only the first of
    # each card and terminal: online rows never see each other)
    first_seen = ~nxt["card_id"].duplicated().to_numpy() & ~nxt["terminal_id"].duplicated().to_numpy()
    np.testing.assert_allclose(got[first_seen], whole.iloc[150:].to_numpy()[first_seen], rtol=1e-12, atol=0)


def test_replay_from_saved_state_equals_one_replay() -> None:
    rows = [(f"x{i}", T0 + 3571 * i, f"c{i % 3}", f"t{i % 4}", float(i % 13)) for i in range(300)]
    tx = _tx(rows, country="FR")
    labels = _labels(
        [(f"x{i}", f"t{i % 4}", T0 + 3571 * i, T0 + 3571 * i + 90_000) for i in range(0, 300, 5)]
    )
    whole = replay(tx, labels).features
    split = T0 + 3571 * 150
    first = replay(tx.iloc[:150], labels[labels["reported_at"] < pd.Timestamp(split, unit="s", tz="UTC")])
    second = replay(
        tx.iloc[150:],
        labels[labels["reported_at"] >= pd.Timestamp(split, unit="s", tz="UTC")],
        card_states=first.card_states,
        terminal_states=first.terminal_states,
    ).features
    pd.testing.assert_frame_equal(whole.iloc[150:], second)


def test_a_block_split_in_two_calls_equals_one_call() -> None:
    rng = np.random.default_rng(0)
    n = 500
    rows = rng.integers(0, 7, n)
    ts = T0 + np.sort(rng.uniform(0, 5 * 86400, n))
    amount = rng.uniform(0, 300, n)
    keys = terminal_keys([f"t{i}" for i in rng.integers(0, 50, n)])
    countries = country_codes(rng.choice(np.array(["BE", "FR", None], dtype=object), n))
    channels = channel_codes(rng.choice(np.array(["pos", "ecom", "atm"], dtype=object), n))
    one = new_states(CARD_DTYPE, 7)
    two = new_states(CARD_DTYPE, 7)
    a = card_features(one, rows, ts, amount, keys, countries, channels)
    b = np.vstack(
        [
            card_features(two, rows[s], ts[s], amount[s], keys[s], countries[s], channels[s])
            for s in (slice(0, 123), slice(123, n))
        ]
    )
    np.testing.assert_array_equal(a, b)
    assert one.tobytes() == two.tobytes()


def test_records_are_fixed_size_versioned_and_round_trip() -> None:
    tx = _tx([(f"x{i}", T0 + 90 * i, "c1", f"t{i}", 10.0 + i % 7) for i in range(2_000)], country="BE")
    res = replay(tx, _labels([("x3", "t3", T0 + 270, T0 + 9000)]))
    card, term = res.card_states["c1"], res.terminal_states["t3"]
    assert len(card) == CARD_DTYPE.itemsize and len(term) == TERMINAL_DTYPE.itemsize
    table = states_from_bytes([card, None], CARD_DTYPE)
    assert table[0].tobytes() == card and table[1]["n_life"] == 0 and table[0]["n_life"] == 2_000
    assert check_record(term, TERMINAL_DTYPE) == term
    with pytest.raises(FeatureStateError, match="version"):
        check_record(b"\x01\x00" + card[2:], CARD_DTYPE)
    with pytest.raises(FeatureStateError, match="bytes"):
        states_from_bytes([b"[1, [], 0]"], TERMINAL_DTYPE)
    with pytest.raises(FeatureStateError):
        check_record(card, TERMINAL_DTYPE)


def test_docs_feature_table_is_generated_from_the_declarations() -> None:
    assert feature_table() in (ROOT / "docs" / "model.md").read_text()


def test_declarations_refuse_windows_the_engine_cannot_compute() -> None:
    with pytest.raises(ValueError, match="whole UTC days"):
        Window("terminal_count_6h", "terminal", "transactions", "count", 6 * 3600)
    with pytest.raises(ValueError, match="undelayed"):
        Window("card_fraud_1d", "card", "frauds", "count", 86400)
    with pytest.raises(ValueError, match="undelayed"):
        Window("card_delayed_1d", "card", "amount", "sum", 86400, 7 * 86400)
    assert spec.TERMINAL_TILES == 38
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))


def test_time_conversions_agree() -> None:
    dt = datetime(2026, 5, 17, 23, 59, 59, 123456, tzinfo=UTC)
    assert datetime_seconds(dt) == dt.timestamp()
    series = pd.Series([dt, dt.replace(microsecond=1)])
    assert epoch_seconds(series).tolist() == [dt.timestamp(), dt.replace(microsecond=1).timestamp()]
    naive = pd.Series([pd.Timestamp("2018-04-01 00:00:31")])
    assert epoch_seconds(naive)[0] == datetime(2018, 4, 1, 0, 0, 31, tzinfo=UTC).timestamp()
