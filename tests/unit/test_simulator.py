"""The transaction simulator: determinism, scenarios and their rates, labels and their delays, schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest

from fraudwatch.events import Label, Transaction
from fraudwatch.simulator import (
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    SCENARIOS,
    TRANSACTION_COLUMNS,
    LabelDelays,
    LiveSimulator,
    ScenarioRates,
    SimulatedHistory,
    main,
    simulate,
)

DAYS, CARDS, TERMINALS = 60, 3_000, 1_000
START = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def history() -> SimulatedHistory:
    return simulate(DAYS, CARDS, TERMINALS, seed=7, start=START)


def test_same_seed_same_history_other_seed_differs() -> None:
    a = simulate(5, 300, 100, seed=1)
    b = simulate(5, 300, 100, seed=1)
    c = simulate(5, 300, 100, seed=2)
    pd.testing.assert_frame_equal(a.transactions, b.transactions)
    pd.testing.assert_frame_equal(a.labels, b.labels)
    assert not a.transactions["amount"].equals(c.transactions["amount"].iloc[: len(a.transactions)])


def test_columns_types_and_order(history: SimulatedHistory) -> None:
    tx, labels = history.transactions, history.labels
    assert tuple(tx.columns) == TRANSACTION_COLUMNS
    assert tuple(labels.columns) == LABEL_COLUMNS
    assert str(tx["event_time"].dt.tz) == "UTC"
    assert str(tx["reported_at"].dt.tz) == "UTC"
    assert tx["transaction_id"].is_unique
    assert tx["event_time"].is_monotonic_increasing
    assert (tx["amount"] >= 0).all()
    assert np.allclose(tx["amount"], tx["amount"].round(2))
    assert set(tx["currency"]) == {"EUR"}
    assert set(tx["channel"]) == {"pos", "ecom", "atm"}
    assert tx["is_fraud"].dtype == bool
    assert tx["is_fraud"].equals(tx["fraud_scenario"] > 0)
    assert len(labels) == len(tx)
    assert (labels["transaction_id"].to_numpy() == tx["transaction_id"].to_numpy()).all()


# Expected incident counts from the documented rates; counts are Poisson so we accept 4 standard deviations.
def _expected(history: SimulatedHistory, rates: ScenarioRates) -> dict[int, float]:
    tx = history.transactions
    return {
        1: rates.amount_outlier * ((tx["fraud_scenario"] == 0) | (tx["fraud_scenario"] == 1)).sum(),
        2: rates.compromised_terminal * TERMINALS * DAYS,
        3: rates.account_takeover * CARDS * DAYS,
        4: rates.card_testing * CARDS * DAYS,
        5: rates.impossible_travel * CARDS * DAYS,
    }


def test_every_scenario_present_at_its_documented_rate(history: SimulatedHistory) -> None:
    counts = history.incidents.groupby("scenario").size()
    for scenario, expected in _expected(history, ScenarioRates()).items():
        got = int(counts.get(scenario, 0))
        assert abs(got - expected) <= 4 * np.sqrt(expected) + 1, (SCENARIOS[scenario], got, expected)
        assert (history.transactions["fraud_scenario"] == scenario).sum() >= got, SCENARIOS[scenario]
    share = history.transactions["is_fraud"].mean()
    assert 0.002 < share < 0.01  # documented overall fraud share: about 0.5 %


def test_scenarios_have_their_shape(history: SimulatedHistory) -> None:
    tx = history.transactions
    pop = history.population
    typical = pd.Series(np.exp(pop.amount_mu), index=pop.card_ids)
    outliers = tx[tx["fraud_scenario"] == 1]
    assert (outliers["amount"].to_numpy() > 3 * typical[outliers["card_id"]].to_numpy()).mean() > 0.95
    testing = tx[tx["fraud_scenario"] == 4]
    assert (testing["channel"] == "ecom").all()
    assert (testing["amount"] < 3).mean() > 0.8 and testing["amount"].max() >= 300
    travel = tx[tx["fraud_scenario"] == 5]
    assert (~travel["country"].isin(["BE", "NL", "FR", "DE", "LU", "ES", "IT", "PT", "AT", "CH"])).all()
    ato = tx[tx["fraud_scenario"] == 3]
    assert (ato["channel"] == "ecom").mean() > 0.5
    # Compromised terminals: every transaction at such a terminal inside its window is fraud.
    inc = history.incidents[history.incidents["scenario"] == 2].iloc[0]
    window = tx[
        (tx["terminal_id"] == inc["terminal_id"]) & tx["event_time"].between(inc["start"], inc["end"])
    ]
    assert window["is_fraud"].all()


def test_no_label_before_its_transaction_and_delays_follow_the_distribution(
    history: SimulatedHistory,
) -> None:
    labels = history.labels
    delay_days = (labels["reported_at"] - labels["event_time"]).dt.total_seconds() / 86_400
    assert (delay_days >= 0).all()
    d = LabelDelays()
    fraud = delay_days[labels["is_fraud"]]
    assert abs(fraud.median() / d.fraud_median_days - 1) < 0.15
    assert abs(np.log(fraud).std() - d.fraud_sigma) < 0.15
    assert fraud.max() <= d.fraud_max_days + 1e-6
    genuine = delay_days[~labels["is_fraud"]]
    assert np.allclose(genuine, d.genuine_days)
    # Every label validates as a Label event.
    for row in labels.sample(500, random_state=0).to_dict("records"):
        Label.model_validate(row)


def test_every_transaction_validates_and_carries_no_label(history: SimulatedHistory) -> None:
    events = history.transactions[list(EVENT_COLUMNS)]
    for row in events.to_dict("records"):
        tx = Transaction.model_validate(row)
        assert not set(tx.model_extra or {})
    assert not {"is_fraud", "fraud_scenario", "reported_at"} & set(EVENT_COLUMNS)


def test_daily_and_weekly_seasonality(history: SimulatedHistory) -> None:
    t = history.transactions["event_time"]
    hour = t.dt.hour
    night = (hour < 6).mean() / 6  # share per hour
    day = ((hour >= 9) & (hour < 21)).mean() / 12
    assert night < day / 4
    per_weekday = t.dt.dayofweek.value_counts()
    assert per_weekday[6] < 0.7 * per_weekday[5]  # Sunday quieter than Saturday


def test_cards_shop_near_home(history: SimulatedHistory) -> None:
    tx = history.transactions
    pop = history.population
    genuine_cp = tx[(tx["fraud_scenario"] == 0) & (tx["channel"] != "ecom")]
    card = pd.Series(np.arange(CARDS), index=pop.card_ids)[genuine_cp["card_id"]].to_numpy()
    term = pd.Series(np.arange(TERMINALS), index=pop.terminal_ids)[genuine_cp["terminal_id"]].to_numpy()
    dist = np.hypot(*(pop.card_xy[card] - pop.terminal_xy[term]).T)
    assert np.median(dist) < 100  # km


def test_live_batches_validate_and_labels_match() -> None:
    live = LiveSimulator(n_cards=500, n_terminals=200, seed=3, id_prefix="tx-t-")
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    seen: set[str] = set()
    last = None
    for i in range(5):
        batch = live.next_batch(3_000, now + timedelta(seconds=i))  # more than a simulated day of 500 cards
        assert len(batch.transactions) == len(batch.labels) == len(batch.label_delay_days) == 3_000
        for tx, label, key in zip(batch.transactions, batch.labels, batch.card_ids, strict=True):
            parsed = Transaction.model_validate_json(orjson.dumps(tx))
            assert not (parsed.model_extra or {})
            assert key == tx["card_id"] == label["card_id"]
            assert label["transaction_id"] == tx["transaction_id"]
            assert tx["transaction_id"] not in seen
            seen.add(tx["transaction_id"])
            t = parsed.event_time
            assert t <= now + timedelta(seconds=i)
            assert t >= now + timedelta(seconds=i - 1)
            if last is not None:
                assert t >= last
            last = t
        assert (batch.label_delay_days > 0).all()
        assert ((batch.scenarios > 0) == np.array([lb["is_fraud"] for lb in batch.labels])).all()


def test_live_uses_the_same_scenarios() -> None:
    live = LiveSimulator(n_cards=3_000, n_terminals=1_000, seed=5)
    scenarios = np.concatenate([live.next_batch(50_000).scenarios for _ in range(4)])
    assert set(np.unique(scenarios)) == set(SCENARIOS)


def test_cli_writes_parquet(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert (
        main(["--days", "3", "--cards", "200", "--terminals", "100", "--out", str(tmp_path), "--seed", "4"])
        == 0
    )
    tx = pd.read_parquet(tmp_path / "transactions.parquet")
    labels = pd.read_parquet(tmp_path / "labels.parquet")
    assert tuple(tx.columns) == TRANSACTION_COLUMNS and tuple(labels.columns) == LABEL_COLUMNS
    assert str(tx["event_time"].dt.tz) == "UTC" and tx["event_time"].is_monotonic_increasing
    expected = simulate(3, 200, 100, seed=4).transactions
    assert len(tx) == len(expected)
    assert (tx["transaction_id"] == expected["transaction_id"]).all()
