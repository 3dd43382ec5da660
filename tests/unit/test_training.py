"""Training building blocks: the Handbook's card precision@k, the threshold policy, the time split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudwatch_training.data import HANDBOOK, ColumnMapping, apply_mapping, read_mapping
from fraudwatch_training.metrics import card_precision_at_k, recall_per_scenario
from fraudwatch_training.split import SplitConfig, time_split
from fraudwatch_training.thresholds import ThresholdPolicy, choose_thresholds, expected_cost


def test_card_precision_at_k_hand_computed() -> None:
    # day 0: cards by max score: A(0.9, fraud), B(0.8, genuine), C(0.7, fraud) -> top 2: A, B -> 1/2
    # day 1: A was detected on day 0 and is dropped; C(0.95, fraud), B(0.6) -> top 2: C, B -> 1/2
    # day 2: A, C detected; B(0.5, fraud), D(0.4) -> 1/2 ... wait B is fraud today -> top 2: B, D -> 1/2
    day = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    card = ["A", "A", "B", "C", "A", "C", "B", "A", "B", "D"]
    y = [0, 1, 0, 1, 1, 1, 0, 1, 1, 0]
    score = [0.2, 0.9, 0.8, 0.7, 0.99, 0.95, 0.6, 0.99, 0.5, 0.4]
    assert card_precision_at_k(day, card, y, score, k=2) == pytest.approx((0.5 + 0.5 + 0.5) / 3)
    # without removing detected cards, day 1 top 2 are A (fraud) and C (fraud) -> 1, day 2: A, B -> 1
    assert card_precision_at_k(day, card, y, score, k=2, remove_detected=False) == pytest.approx(
        (0.5 + 1 + 1) / 3
    )
    # precision is always over k, even when fewer cards exist that day
    assert card_precision_at_k([0], ["A"], [1], [0.5], k=100) == pytest.approx(0.01)


def test_threshold_policy_precision_and_recall() -> None:
    # 10 frauds with scores 0.91..1.0 and 0.45, 0.55; 1000 genuine in 0..0.5 plus two at 0.95 and 0.6
    rng = np.random.default_rng(0)
    fraud = np.r_[np.linspace(0.91, 1.0, 10), 0.45, 0.55]
    genuine = np.r_[rng.uniform(0, 0.5, 1000), 0.95, 0.6]
    s = np.r_[fraud, genuine]
    y = np.r_[np.ones(len(fraud)), np.zeros(len(genuine))].astype(int)
    choice = choose_thresholds(
        y, s, ThresholdPolicy(decline_precision=0.9, review_recall=0.9, max_review_rate=0.05)
    )
    t = choice.thresholds
    assert t.review < t.decline
    declined = s >= t.decline
    assert y[declined].mean() >= 0.9
    assert y[s >= t.review].sum() / y.sum() >= 0.9
    assert choice.decline_rule.startswith("precision")


def test_threshold_policy_fallbacks() -> None:
    # precision 0.99 is unreachable: fall back to max F1; review capped by capacity
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([0, 1, 1, 0, 0, 0, 0, 0, 0, 1])
    choice = choose_thresholds(
        y, s, ThresholdPolicy(decline_precision=0.99, review_recall=1.0, max_review_rate=0.4)
    )
    assert choice.decline_rule == "fallback: max F1"
    assert choice.thresholds.review < choice.thresholds.decline
    assert (s >= choice.thresholds.review).mean() <= 0.4 or choice.review_rule == "below decline"
    with pytest.raises(ValueError, match="at least one fraud"):
        choose_thresholds(np.zeros(5), np.linspace(0, 1, 5))


def test_expected_cost_counts_missed_fraud_and_alerts() -> None:
    from fraudwatch.model import Thresholds

    y = np.array([1, 1, 0, 0])
    s = np.array([0.95, 0.1, 0.95, 0.5])
    amount = np.array([100.0, 50.0, 10.0, 10.0])
    cost = expected_cost(y, s, amount, Thresholds(0.4, 0.9))
    # missed: 50; one review (genuine at 0.5): 5; one false decline: 20
    assert cost["cost_total"] == pytest.approx(75.0)
    assert cost["cost_approve_all"] == pytest.approx(150.0)


def test_time_split_has_gaps_and_no_overlap() -> None:
    times = pd.Series(pd.date_range("2026-01-01", periods=60 * 24, freq="h", tz="UTC"))
    sp = time_split(times, SplitConfig(validation_days=7, test_days=7, gap_days=7))
    assert not (sp.train & sp.validation).any() and not (sp.validation & sp.test).any()
    assert not (sp.train & sp.test).any()
    assert times[sp.train].max() + pd.Timedelta(days=7) <= times[sp.validation].min() + pd.Timedelta(hours=1)
    assert times[sp.validation].max() + pd.Timedelta(days=7) <= times[sp.test].min() + pd.Timedelta(hours=1)
    assert times[sp.train].max() < times[sp.validation].min() - pd.Timedelta(days=6)
    assert sp.test[-1] and sp.train[0]
    with pytest.raises(ValueError, match="too short"):
        time_split(times[: 24 * 20], SplitConfig(validation_days=7, test_days=7, gap_days=7))


def test_recall_per_scenario() -> None:
    r = recall_per_scenario([0, 1, 1, 2], [0.9, 0.9, 0.1, 0.5], 0.5, {1: "a", 2: "b"})
    assert r == {"a": 0.5, "b": 1.0}


def test_handbook_preset_maps_columns_and_delays_labels() -> None:
    raw = pd.DataFrame(
        {"TRANSACTION_ID": [1, 0], "TX_DATETIME": pd.to_datetime(["2018-04-01 10:00", "2018-04-01 09:00"]),
         "CUSTOMER_ID": [7, 8], "TERMINAL_ID": [3, 4], "TX_AMOUNT": [10.0, 250.0], "TX_FRAUD": [0, 1],
         "TX_FRAUD_SCENARIO": [0, 1], "TX_TIME_SECONDS": [0, 0]}
    )  # fmt: skip
    h = apply_mapping(raw, HANDBOOK)
    assert h.transactions["transaction_id"].tolist() == ["0", "1"]  # event-time order
    assert str(h.transactions["event_time"].dt.tz) == "UTC"
    lab = h.labels.iloc[0]
    assert lab["reported_at"] - lab["event_time"] == pd.Timedelta(days=7)
    assert bool(lab["is_fraud"]) and h.transactions["card_id"].iloc[0] == "8"


def test_simulator_delay_model_and_mapping_files(tmp_path: Path) -> None:
    n = 4000
    raw = pd.DataFrame(
        {"t": pd.date_range("2026-01-01", periods=n, freq="min"), "c": np.arange(n) % 50, "m": np.arange(n) % 7,
         "a": np.full(n, 10.0), "f": np.arange(n) % 10 == 0}
    )  # fmt: skip
    cols = {"event_time": "t", "card_id": "c", "terminal_id": "m", "amount": "a", "is_fraud": "f"}
    (tmp_path / "m.toml").write_text(
        "label_delay = 'simulator'\nseed = 3\n[columns]\n"
        + "".join(f'{k} = "{v}"\n' for k, v in cols.items())
    )
    mapping = read_mapping(tmp_path / "m.toml")
    h = apply_mapping(raw, mapping)
    tx = h.transactions
    delay_days = (tx["reported_at"] - tx["event_time"]) / pd.Timedelta(days=1)
    fraud = tx["is_fraud"].to_numpy()
    # the simulator's model: frauds lognormal with median 3 days, genuine labels after 7 days
    assert 2.5 < float(np.median(delay_days[fraud])) < 3.5
    assert (delay_days[~fraud] == 7).all()
    assert "simulator" in h.source["label_delay"]
    (tmp_path / "bad.json").write_text('{"columns": {"card": "c"}}')
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['card'\]"):
        read_mapping(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="label_delay must be"):
        ColumnMapping(cols, label_delay="soon")
