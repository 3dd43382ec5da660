"""The engine (offline replay through the compiled kernels) against the independent oracle, at 1e-9.

Three sources of history: the simulator, a small Handbook-like history built here (the Fraud Detection
Handbook's generator: customers and terminals on a grid, no country or channel, labels a fixed 7 days after
the transaction), and hypothesis histories shaped to reach every bound of the state: the card ring
(``CARD_RING`` transactions), the most recent terminals and countries kept, the label dedup ring, tile
eviction over long spans, new entities, labels at the same instant as a transaction, redelivered labels.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudwatch.features import FEATURE_NAMES, replay, spec
from fraudwatch.simulator import simulate

from .feature_oracle import oracle_features

T0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp())  # a Monday


def _assert_same(tx: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    got = replay(tx, labels).features.reset_index(drop=True)
    want = oracle_features(tx, labels)
    assert list(got.columns) == list(FEATURE_NAMES)
    diff = np.abs(got.to_numpy() - want.to_numpy())
    tol = 1e-9 * np.maximum(1.0, np.abs(want.to_numpy()))
    bad = np.argwhere(diff > tol)
    assert not len(bad), [(int(i), FEATURE_NAMES[j], got.iat[i, j], want.iat[i, j]) for i, j in bad[:10]]
    return got


def test_simulator_history_matches_oracle() -> None:
    history = simulate(40, n_cards=40, n_terminals=25, seed=11)
    got = _assert_same(history.transactions, history.labels)
    # the history reaches the interesting regions: windows with frauds, delayed risk, country changes
    assert got["terminal_fraud_count_utc30d"].max() >= 1
    assert got["terminal_risk_delayed_utc30d"].max() > 0
    assert got["card_abroad"].max() == 1


def handbook_like(
    n_customers: int = 30, n_terminals: int = 40, days: int = 50, seed: int = 5
) -> pd.DataFrame:
    """Transactions and frauds the way the Fraud Detection Handbook's simulator makes them (small)."""
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0, 100, n_customers), rng.uniform(0, 100, n_customers)
    tx_xy = rng.uniform(0, 100, (n_terminals, 2))
    mean_amount = rng.uniform(5, 100, n_customers)
    rate = rng.uniform(0, 4, n_customers)
    rows = []
    for c in range(n_customers):
        near = np.flatnonzero(np.hypot(tx_xy[:, 0] - cx[c], tx_xy[:, 1] - cy[c]) < 50)
        if not len(near):
            continue
        for day in range(days):
            for _ in range(rng.poisson(rate[c])):
                sec = int(rng.normal(86400 / 2, 20000))
                if 0 < sec < 86400:
                    amount = round(abs(rng.normal(mean_amount[c], mean_amount[c] / 2)), 2)
                    rows.append((T0 + day * 86400 + sec, f"C{c}", f"T{int(rng.choice(near))}", amount))
    tx = pd.DataFrame(rows, columns=["ts", "card_id", "terminal_id", "amount"]).sort_values(
        "ts", kind="stable"
    )
    tx = tx.reset_index(drop=True)
    tx["transaction_id"] = [f"H{i}" for i in range(len(tx))]
    tx["event_time"] = pd.to_datetime(tx["ts"], unit="s", utc=True)
    fraud = tx["amount"] > 220  # scenario 1
    day = (tx["ts"] - T0) // 86400
    for _ in range(days // 5):  # scenario 2: compromised terminals for 28 days
        term, start = f"T{rng.integers(n_terminals)}", rng.integers(days)
        fraud |= (tx["terminal_id"] == term) & (day >= start) & (day < start + 28)
    tx["is_fraud"] = fraud
    return tx.drop(columns="ts")


def test_handbook_like_history_matches_oracle() -> None:
    tx = handbook_like()
    assert len(tx) > 1000
    labels = tx.loc[tx["is_fraud"], ["transaction_id", "terminal_id", "event_time", "is_fraud"]].assign(
        reported_at=lambda f: f["event_time"] + pd.Timedelta(days=7)
    )
    got = _assert_same(tx, labels)
    assert got["terminal_risk_delayed_utc7d"].max() > 0


@st.composite
def bounded_histories(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Histories whose knobs (sizes, pools, time scale, label habits) reach each bound of the state."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(1, 260))
    n_cards = draw(st.sampled_from([1, 2, 5]))  # one card: the ring fills (CARD_RING + 100 transactions)
    n_terminals = draw(st.sampled_from([1, 3, 40]))  # 40 > CARD_TERMINALS_KEPT distinct terminals
    n_countries = draw(st.sampled_from([0, 2, 12]))  # 12 > CARD_COUNTRIES_KEPT; 0: no country at all
    span = draw(st.sampled_from([600, 3 * 3600, 2 * 86400, 70 * 86400]))  # bursts ... past tile eviction
    grid = draw(st.sampled_from([1, 1800, 86400]))  # coarse grids put events exactly on window edges
    offsets = np.sort(rng.integers(0, span // grid + 1, n)) * grid
    micros = draw(st.booleans())
    ts = T0 + offsets + (rng.integers(0, 10**6, n) / 1e6 if micros else 0)
    countries = [None] + [f"{chr(65 + i)}{chr(66 + i)}" for i in range(n_countries)]
    tx = pd.DataFrame(
        {
            "transaction_id": [f"x{i}" for i in range(n)],
            "event_time": pd.to_datetime(np.round(ts * 1e6).astype("int64"), unit="us", utc=True),
            "card_id": [f"c{i}" for i in rng.integers(0, n_cards, n)],
            "terminal_id": [f"t{i}" for i in rng.integers(0, n_terminals, n)],
            "amount": rng.choice([0.0, 1.5, 4.99, 5.0, 12.0, 55.5, 230.0, 1999.99], n),
            "country": [countries[i] for i in rng.integers(0, len(countries), n)],
            "channel": rng.choice(np.array([None, "pos", "ecom", "atm", ""], dtype=object), n),
        }
    )
    share = draw(st.sampled_from([0.0, 0.3, 1.0]))
    picked = np.flatnonzero(rng.random(n) < share)
    delay = draw(st.sampled_from(["zero", "small", "week", "mixed"]))
    d = {
        "zero": np.zeros(len(picked)),  # reported at the transaction's own instant
        "small": rng.integers(0, 4 * 3600, len(picked)).astype(float),
        "week": np.full(len(picked), 7 * 86400.0),
        "mixed": rng.choice([0.0, 60.0, 86400.0, 8 * 86400.0, 38 * 86400.0, 45 * 86400.0], len(picked)),
    }[delay]
    labels = pd.DataFrame(
        {
            "transaction_id": tx["transaction_id"].to_numpy()[picked],
            "terminal_id": tx["terminal_id"].to_numpy()[picked],
            "event_time": tx["event_time"].iloc[picked].to_numpy(),
            "is_fraud": rng.random(len(picked)) < 0.8,
            "reported_at": (tx["event_time"].iloc[picked] + pd.to_timedelta(d, unit="s")).to_numpy(),
        }
    )
    if len(labels) and draw(st.booleans()):  # redeliveries: some labels again, later
        again = labels.sample(frac=0.5, random_state=seed % 1000).assign(
            reported_at=lambda f: f["reported_at"] + pd.Timedelta(hours=draw(st.sampled_from([0, 1, 200])))
        )
        labels = pd.concat([labels, again], ignore_index=True)
    return tx, labels


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(bounded_histories())
def test_bounded_histories_match_oracle(history: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    tx, labels = history
    _assert_same(tx, labels)


def _burst(n: int, card: str = "c1", step: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"b{i}" for i in range(n)],
            "event_time": pd.to_datetime([T0 + step * i for i in range(n)], unit="s", utc=True),
            "card_id": card,
            "terminal_id": [f"t{i}" for i in range(n)],
            "amount": [float(i % 50) for i in range(n)],
            "country": [f"A{chr(65 + i % 20)}" for i in range(n)],
            "channel": "pos",
        }
    )


def test_ring_capacity_rule_beyond_the_ring() -> None:
    """Beyond CARD_RING earlier transactions in a window, only the CARD_RING most recent count."""
    n = spec.CARD_RING + 40
    tx = _burst(n)
    got = _assert_same(tx, None)
    assert got["card_count_1h"].iloc[-1] == spec.CARD_RING
    assert got["card_count_1h"].iloc[spec.CARD_RING] == spec.CARD_RING
    assert got["card_log_count_life"].iloc[-1] == np.log1p(n - 1)  # lifetime aggregates are not bounded
    # distinct terminals and countries beyond what is kept: the oldest are forgotten
    assert got["card_terminal_is_new"].iloc[1:].eq(1.0).all()


def test_label_dedup_ring_forgets_after_label_ids_kept() -> None:
    """A redelivery is ignored while its id is among the LABEL_IDS_KEPT most recent; counted again after."""
    k = spec.LABEL_IDS_KEPT
    n = k + 3
    tx = _burst(n, step=60.0).assign(terminal_id="t1")
    first = tx.assign(is_fraud=True, reported_at=tx["event_time"] + pd.Timedelta(seconds=30))
    labels = first[["transaction_id", "terminal_id", "event_time", "is_fraud", "reported_at"]]
    redelivered = labels.iloc[[0, k + 1]].assign(
        reported_at=tx["event_time"].iloc[-1] - pd.Timedelta(seconds=1)
    )
    probe = tx.iloc[[-1]].assign(
        transaction_id="probe", event_time=tx["event_time"].iloc[-1] + pd.Timedelta(1, "s")
    )
    tx2 = pd.concat([tx, probe], ignore_index=True)
    got = _assert_same(tx2, pd.concat([labels, redelivered], ignore_index=True))
    # the probe knows n - 1 labels (the last is reported after it) + label 0 again (it had left the ring);
    # label k + 1 was still in the ring, so its redelivery is ignored
    assert got["terminal_fraud_count_utc30d"].iloc[-1] == n


def test_label_before_and_after_a_transaction_at_the_same_instant() -> None:
    tx = _burst(3, step=3600.0).assign(terminal_id="t1")
    at_second = tx["event_time"].iloc[1]
    labels = pd.DataFrame(
        {
            "transaction_id": ["b0"],
            "terminal_id": ["t1"],
            "event_time": [tx["event_time"].iloc[0]],
            "is_fraud": [True],
            "reported_at": [at_second],
        }
    )
    got = _assert_same(tx, labels)
    assert got["terminal_fraud_count_utc30d"].tolist() == [0.0, 0.0, 1.0]  # same instant: tx first
