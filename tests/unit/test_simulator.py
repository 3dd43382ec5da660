"""The transaction simulator: determinism, scenarios and their rates, labels and their delays, schema; and the
simulated clock live traffic runs on (the live simulator and the producer's sources, driven without sleeping)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from fraudwatch.events import Label, Transaction
from fraudwatch.simulator import (
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    NIGHT_OWL_SHARE,
    NS_PER_S,
    SCENARIOS,
    TRANSACTION_COLUMNS,
    LabelDelays,
    LiveBatch,
    LiveSimulator,
    OpenWindows,
    ScenarioRates,
    SimulatedHistory,
    Windows,
    main,
    read_spec,
    simulate,
)
from fraudwatch_producer.__main__ import build_parser, plan_live
from fraudwatch_producer.sources import LiveSource, Records, ReplaySource

NS_PER_DAY = 86_400 * NS_PER_S
EUROPE = ["BE", "NL", "FR", "DE", "LU", "ES", "IT", "PT", "AT", "CH"]

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
    seen: set[str] = set()
    last = live.start
    for _ in range(5):
        batch = live.next_batch(3_000)  # more than a simulated day of 500 cards
        assert len(batch.transactions) == len(batch.labels) == len(batch.reported_at_ns) == 3_000
        for tx, label, key in zip(batch.transactions, batch.labels, batch.card_ids, strict=True):
            parsed = Transaction.model_validate_json(orjson.dumps(tx))
            assert not (parsed.model_extra or {})
            lab = Label.model_validate_json(orjson.dumps(label))
            assert key == tx["card_id"] == label["card_id"]
            assert label["transaction_id"] == tx["transaction_id"]
            assert lab.event_time == parsed.event_time < lab.reported_at
            assert tx["transaction_id"] not in seen
            seen.add(tx["transaction_id"])
            assert parsed.event_time >= last  # simulated event-time order
            last = parsed.event_time
        assert ((batch.scenarios > 0) == np.array([lb["is_fraud"] for lb in batch.labels])).all()
    assert last > live.start + timedelta(days=4)  # 15,000 events of 500 cards: about 12 simulated days


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


# --- The simulated clock: live traffic continues the history (simulator and producer sources) ----------------


def _frame(batches: list[LiveBatch]) -> pd.DataFrame:
    """Live batches as a history-like frame (the columns the comparisons need)."""
    txs = [tx for b in batches for tx in b.transactions]
    return pd.DataFrame(
        {
            "event_time": pd.to_datetime(np.concatenate([b.event_time_ns for b in batches]), utc=True),
            "card_id": [tx["card_id"] for tx in txs],
            "terminal_id": [tx["terminal_id"] for tx in txs],
            "channel": [tx["channel"] for tx in txs],
            "country": [tx["country"] for tx in txs],
            "fraud_scenario": np.concatenate([b.scenarios for b in batches]),
        }
    )


def _live_days(live: LiveSimulator, days: int) -> pd.DataFrame:
    """Every live transaction of the first ``days`` simulated days, pulled a simulated hour at a time."""
    batches = []
    for hour in range(1, days * 24 + 1):
        batches.append(live.next_batch(1_000_000, until_ns=live.start_ns + hour * 3_600 * NS_PER_S))
    return _frame(batches)


@pytest.fixture(scope="module")
def live_continuation(history: SimulatedHistory) -> pd.DataFrame:
    """As many simulated days of live traffic as the history, continuing it."""
    return _live_days(LiveSimulator.continuing(history.spec), DAYS)


def test_live_continues_the_history_population_and_time(tmp_path: Path) -> None:
    hist = simulate(10, 400, 150, seed=9, start=START)
    hist.write(tmp_path)
    spec = read_spec(tmp_path)
    assert spec is not None and read_spec(tmp_path / "nowhere") is None
    assert (spec.seed, spec.n_cards, spec.n_terminals, spec.end) == (9, 400, 150, START + timedelta(days=10))
    for kind in ("compromised", "trips"):
        written, kept = getattr(spec.open_windows, kind), getattr(hist.spec.open_windows, kind)
        for part in ("entity", "start_ns", "end_ns", "place"):
            assert np.array_equal(getattr(written, part), getattr(kept, part)), (kind, part)
    assert len(spec.open_windows.trips) > 0  # 400 cards x 0.2 % a day: trips under way at the end
    live = LiveSimulator.continuing(spec)
    pop, hpop = live.population, hist.population
    assert (pop.card_ids == hpop.card_ids).all() and (pop.candidates == hpop.candidates).all()
    assert np.array_equal(pop.amount_mu, hpop.amount_mu) and np.array_equal(pop.terminal_xy, hpop.terminal_xy)
    batch = live.next_batch(2_000)
    first = pd.Timestamp(batch.event_time_ns[0], tz="UTC")
    assert spec.end <= first < spec.end + timedelta(hours=1)
    assert (np.diff(batch.event_time_ns) >= 0).all()
    # The live day is a new day, not a repeat of the history's first day.
    day0 = hist.transactions[hist.transactions["event_time"] < START + timedelta(days=1)]
    assert day0["card_id"].head(50).tolist() != batch.card_ids[:50]


def test_live_stream_depends_on_the_seed_not_on_pacing() -> None:
    a = LiveSimulator(300, 100, seed=4, id_prefix="tx-a-")
    b = LiveSimulator(300, 100, seed=4, id_prefix="tx-a-")
    by_count = [a.next_batch(777) for _ in range(8)]
    by_clock = []
    while sum(len(x) for x in by_clock) < 777 * 8:
        by_clock.append(b.next_batch(10**6, until_ns=b.next_time_ns() + 1_800 * NS_PER_S))
    x = [tx for batch in by_count for tx in batch.transactions]
    y = [tx for batch in by_clock for tx in batch.transactions][: len(x)]
    assert x == y
    assert [lb for batch in by_count for lb in batch.labels] == [
        lb for batch in by_clock for lb in batch.labels
    ][: len(x)]


def test_live_inter_arrival_hours_and_weekdays_are_those_of_the_history(
    history: SimulatedHistory, live_continuation: pd.DataFrame
) -> None:
    """Per-card gaps: two-sample KS distance below 0.02 and the 1/10/50/90 % quantiles within 5 %;
    hour-of-day shares and weekday shares of the mean daily volume within 0.5 / 1 percentage point."""
    hist, live = history.transactions, live_continuation

    def gaps(tx: pd.DataFrame) -> npt.NDArray[np.float64]:
        t = tx.sort_values(["card_id", "event_time"], kind="stable")
        return t.groupby("card_id")["event_time"].diff().dt.total_seconds().dropna().to_numpy()

    gh, gl = gaps(hist), gaps(live)
    assert ks_2samp(gh, gl).statistic < 0.02
    q = [0.01, 0.1, 0.5, 0.9]
    assert np.allclose(np.quantile(gl, q), np.quantile(gh, q), rtol=0.05)
    # Under a minute between a card's transactions is as rare live as in the history (it was 60 % live).
    assert abs((gl < 60).mean() - (gh < 60).mean()) < 0.002
    hours = [f["event_time"].dt.hour.value_counts(normalize=True).sort_index() for f in (hist, live)]
    assert (hours[0] - hours[1]).abs().max() < 0.005
    # Weekdays: mean transactions per calendar day of each weekday (60 days is no whole number of weeks).
    weekdays = []
    for f in (hist, live):
        per_day = f.groupby(f["event_time"].dt.floor("D")).size()
        mean = per_day.groupby(per_day.index.dayofweek).mean()
        weekdays.append(mean / mean.sum())
    assert (weekdays[0] - weekdays[1]).abs().max() < 0.01


def _rows_per_incident(history: SimulatedHistory, scenario: int) -> npt.NDArray[np.int64]:
    """Transactions each incident of ``scenario`` produced in the history (compromised terminals: inside
    their window at their terminal; bursts: the incident's card between its start and end)."""
    tx, inc = history.transactions, history.incidents[history.incidents["scenario"] == scenario]
    of = tx[tx["fraud_scenario"] == scenario]
    key = "terminal_id" if scenario == 2 else "card_id"
    sizes = [
        int(((of[key] == row[key]) & of["event_time"].between(row["start"], row["end"])).sum())
        for _, row in inc.iterrows()
    ]
    return np.maximum(np.array(sizes, dtype=np.int64), 1)


def test_scenario_rates_live_vs_history(history: SimulatedHistory, live_continuation: pd.DataFrame) -> None:
    """Fraud rows per scenario, live vs history over as many days: frauds come in incidents (a compromised
    terminal yields tens of rows), so the counts are compound Poisson; the tolerance is 4 standard
    deviations of the difference, var = rows x E[size^2] / E[size] from the history's own incident sizes."""
    hist, live = history.transactions, live_continuation
    for scenario in (1, 2, 3, 4, 5):
        sizes = _rows_per_incident(history, scenario) if scenario in (2, 3, 4) else np.ones(1)
        dispersion = float((sizes**2).mean() / sizes.mean())
        h = (hist["fraud_scenario"] == scenario).sum() / len(hist) * len(live)  # scaled to the live size
        got = (live["fraud_scenario"] == scenario).sum()
        sd = np.sqrt((h + got) * dispersion)
        assert abs(got - h) <= 4 * sd + 1, (SCENARIOS[scenario], got, h, sd)

    # Genuine card-present use outside Europe (trips: tens of rows each) and the genuine night share.
    def abroad(f: pd.DataFrame) -> pd.Series:
        return (f["channel"] != "ecom") & ~f["country"].isin(EUROPE) & (f["fraud_scenario"] == 0)

    sizes = hist[abroad(hist)].groupby(["card_id", "country"]).size().to_numpy()
    dispersion = float((sizes**2).mean() / sizes.mean())
    h, got = abroad(hist).sum() / len(hist) * len(live), abroad(live).sum()
    assert abs(got - h) <= 4 * np.sqrt((h + got) * dispersion) + 1, ("abroad", got, h)
    nights = [(f["event_time"].dt.hour < 6)[f["fraud_scenario"] == 0].mean() for f in (hist, live)]
    assert abs(nights[0] - nights[1]) < 0.005, nights
    # The day-at-a-time cut used to leave 0.8 compromised-terminal frauds per 10k live (19.8 in history).
    per_10k = {
        name: (frame["fraud_scenario"] == 2).mean() * 1e4 for name, frame in (("hist", hist), ("live", live))
    }
    assert per_10k["live"] > 0.5 * per_10k["hist"], per_10k


def test_compromised_terminal_stays_compromised_across_simulated_midnights() -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    probe = LiveSimulator(600, 200, seed=6, start=start)
    busiest = int(np.bincount(probe.population.candidates[:, :4].ravel()).argmax())  # a much-used terminal
    t0 = probe.start_ns
    window = Windows(
        np.array([busiest]),
        np.array([t0 - 2 * NS_PER_DAY]),
        np.array([t0 + 3 * NS_PER_DAY + NS_PER_DAY // 2]),
        np.array([-1]),
    )
    live = LiveSimulator(600, 200, seed=6, start=start, open_windows=OpenWindows(compromised=window))
    tx = _live_days(live, 6)
    at = tx[tx["terminal_id"] == live.population.terminal_ids[busiest]]
    end = pd.Timestamp(int(window.end_ns[0]), tz="UTC")
    inside, after = at[at["event_time"] < end], at[at["event_time"] >= end]
    assert inside["event_time"].dt.date.nunique() == 4  # four simulated days, cut at no midnight
    assert (inside["fraud_scenario"] > 0).all() and (inside["fraud_scenario"] == 2).mean() > 0.9
    assert len(after) > 0 and (after["fraud_scenario"] != 2).all()


def _parse(records: Records, model: type[Transaction] | type[Label]) -> list[Any]:
    return [model.model_validate_json(v) for v in records.values]


def test_paced_clock_sends_events_and_labels_when_simulated_time_reaches_them() -> None:
    """Driven with injected wall times (no sleeping): at 3600x each 0.5 s tick is 30 simulated minutes."""
    source = LiveSource(LiveSimulator(400, 150, seed=2, id_prefix="tx-c-"), speedup=3_600)
    wall0, start = 1_000.0, source.simulator.start
    before = start
    n_tx = n_labels = 0
    for tick in range(1, 24 * 2 * 9 + 1):  # 9 simulated days: genuine labels (7 days) are due by the end
        wall = wall0 + 0.5 * (tick - 1)
        clock = start + timedelta(seconds=0.5 * (tick - 1) * 3_600)
        assert source.clock.now_ns(wall) == int(clock.timestamp() * 1e9)
        txs = _parse(source.next(10**6, wall), Transaction)
        labels = _parse(source.due_labels(wall), Label)
        # Exactly the events the clock has reached since the previous tick, and every label whose
        # reported_at it passed: none early, none held back.
        assert all(before < t.event_time <= clock for t in txs[1:]) and all(
            t.event_time <= clock for t in txs
        )
        assert all(before < lb.reported_at <= clock for lb in labels)
        assert source.simulator.next_time_ns() > int(clock.timestamp() * 1e9)
        n_tx, n_labels, before = n_tx + len(txs), n_labels + len(labels), clock
    assert n_tx > 5_000 and n_labels > 0.15 * n_tx
    assert len(source.pending) == n_tx - n_labels
    assert source.lag_seconds(wall) == 0.0


def test_event_driven_clock_follows_the_events_at_a_fixed_rate() -> None:
    source = LiveSource(LiveSimulator(400, 150, seed=2), speedup=0)
    sent: list[Transaction] = []
    released: list[Label] = []
    for step in range(200):
        sent += _parse(source.next(250, 5.0 + step), Transaction)  # a fixed 250 per call, whatever the hour
        clock = sent[-1].event_time
        assert source.clock.now_ns(0.0) == int(clock.timestamp() * 1e6) * 1000
        released += _parse(source.due_labels(0.0), Label)
        assert all(lb.reported_at <= clock for lb in released)
    assert len(sent) == 50_000 and len(released) > 0
    by_id = {t.transaction_id: t for t in sent}
    assert all(by_id[lb.transaction_id].event_time < lb.reported_at for lb in released)


def test_replay_uses_the_same_clock(history: SimulatedHistory) -> None:
    frame = history.transactions.head(20_000)
    source = ReplaySource(frame, speedup=3_600)
    start = frame["event_time"].iloc[0]
    got = 0
    for tick in range(1, 40):
        wall = 50.0 + tick - 1
        clock = start + timedelta(hours=tick - 1)
        txs = _parse(source.next(10**6, wall), Transaction)
        got += len(txs)
        assert all(t.event_time <= clock for t in txs)
        assert got == (frame["event_time"] <= clock).sum()
        assert all(lb.reported_at <= clock for lb in _parse(source.due_labels(wall), Label))


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_producer_plan_continues_the_written_history_and_derives_rate_or_speedup(tmp_path: Path) -> None:
    simulate(7, 300, 100, seed=5, start=START).write(tmp_path)
    plan = plan_live(_args("--speedup", "3600"), tmp_path)
    live = plan.simulator
    assert (live.seed, live.population.n_cards, live.start) == (5, 300, START + timedelta(days=7))
    per_second = live.expected_per_day() / 86_400
    assert plan.speedup == 3_600 and plan.rate == pytest.approx(3_600 * per_second)
    by_rate = plan_live(_args("--rate", "50"), tmp_path)
    assert by_rate.speedup == 0 and by_rate.derived_speedup == pytest.approx(50 / per_second)
    assert plan_live(_args(), tmp_path).rate == 5_000  # the documented default pace
    assert plan_live(_args(), tmp_path, default_speedup=60).speedup == 60  # FRAUDWATCH_PRODUCER_SPEEDUP
    assert plan_live(_args("--rate", "7"), tmp_path, default_speedup=60).speedup == 0  # the flag wins
    # Without a written history: the `make data` defaults (seed 0, never a random population).
    default = plan_live(_args("--rate", "10"), tmp_path / "none").simulator
    assert (default.seed, default.population.n_cards, default.start) == (0, 5_000, START + timedelta(days=60))
    other = plan_live(_args("--seed", "6"), tmp_path)
    assert any("NOT" in note for note in other.notes)
    with pytest.raises(ValueError, match="not both"):
        plan_live(_args("--rate", "10", "--speedup", "60"), tmp_path)


def test_expected_per_day_matches_the_simulated_volume(history: SimulatedHistory) -> None:
    live = LiveSimulator.continuing(history.spec)
    assert len(history.transactions) / DAYS == pytest.approx(live.expected_per_day(), rel=0.02)


# --- Realism: night activity and travel are risk factors, not rules ------------------------------------------


def test_night_use_is_a_risk_factor_not_a_rule(history: SimulatedHistory) -> None:
    tx = history.transactions
    night = tx["event_time"].dt.hour < 6
    genuine = tx["fraud_scenario"] == 0
    assert night[genuine].mean() > 0.07  # night owls: genuine traffic has its own night activity (~8 %)
    fraud_at_night, fraud_by_day = tx["is_fraud"][night].mean(), tx["is_fraud"][~night].mean()
    assert fraud_by_day < fraud_at_night < 0.05  # riskier at night, and night traffic is still >95 % genuine
    owls = history.population.peak_hour > 20.0  # daytime peaks are clipped to 8-20 h
    assert owls.mean() == pytest.approx(NIGHT_OWL_SHARE, abs=0.02)  # less the 2 % of owls drawn before 20 h


def test_card_present_use_abroad_is_a_risk_factor_not_a_rule(history: SimulatedHistory) -> None:
    tx = history.transactions
    far = (tx["channel"] != "ecom") & ~tx["country"].isin(EUROPE)
    genuine_far = tx[far & (tx["fraud_scenario"] == 0)]
    assert len(genuine_far) > 5 * (far & tx["is_fraud"]).sum()  # it was 0 genuine vs 82 fraud rows
    assert tx["is_fraud"].mean() < tx["is_fraud"][far].mean() < 0.25
    # Trips start at the documented rate, and every genuine card-present use outside Europe is a trip's.
    rates = ScenarioRates()
    expected = rates.genuine_trip * CARDS * DAYS
    trips = history.trips[history.trips["start"] < START + timedelta(days=DAYS)]
    assert abs(len(trips) - expected) <= 4 * np.sqrt(expected) + 1
    assert (~trips["country"].isin(EUROPE)).mean() == pytest.approx(rates.trip_far_share, abs=0.1)
    on_trip = genuine_far.merge(history.trips, on=["card_id", "country"], suffixes=("", "_trip"))
    covered = on_trip[(on_trip["event_time"] >= on_trip["start"]) & (on_trip["event_time"] < on_trip["end"])]
    assert covered["transaction_id"].nunique() == len(genuine_far)
    home = pd.Series(np.array(EUROPE)[history.population.card_country], index=history.population.card_ids)
    assert (history.trips["country"].to_numpy() != home[history.trips["card_id"]].to_numpy()).all()


def test_trip_goes_on_across_simulated_midnights() -> None:
    start = datetime(2026, 3, 2, tzinfo=UTC)
    probe = LiveSimulator(300, 200, seed=8, start=start)
    card = int(np.argmax(probe.population.daily_rate))  # the most active card
    us = 10  # "US": the first country after the ten European ones in the simulator's country table
    t0 = probe.start_ns
    trip = Windows(
        np.array([card]), np.array([t0 - NS_PER_DAY]), np.array([t0 + 3 * NS_PER_DAY]), np.array([us])
    )
    live = LiveSimulator(300, 200, seed=8, start=start, open_windows=OpenWindows(trips=trip))
    tx = _live_days(live, 6)
    mine = tx[(tx["card_id"] == live.population.card_ids[card]) & (tx["channel"] != "ecom")]
    mine = mine[mine["fraud_scenario"] == 0]
    end = pd.Timestamp(int(trip.end_ns[0]), tz="UTC")
    during, after = mine[mine["event_time"] < end], mine[mine["event_time"] >= end]
    assert (during["country"] == "US").all() and during["event_time"].dt.date.nunique() == 3
    assert len(after) > 0 and (after["country"] != "US").all()
