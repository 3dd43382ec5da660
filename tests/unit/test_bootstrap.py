"""The warm start (fraudwatch.bootstrap): the snapshot is the replay's end state taken point-in-time, it
survives the file, loads into a real SQLite online store without moving it back in time, seeds the stream's
state buckets, and the API's features of a live transaction on the warm store equal a replay of history +
live. The stream's Spark state from a snapshot runs in tests/integration/test_warm_start.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraudwatch.bootstrap import (
    Snapshot,
    build_snapshot,
    history_end,
    load_store,
    read_snapshot,
    write_snapshot,
)
from fraudwatch.errors import FeatureStateError
from fraudwatch.events import Transaction
from fraudwatch.features import CARD_DTYPE, FEATURE_NAMES, new_states, replay
from fraudwatch.simulator import LiveSimulator, SimulatedHistory, simulate
from fraudwatch.store import SQLiteStore
from fraudwatch_api.scoring import feature_matrix
from fraudwatch_stream.stateful import EntityLog, seed_bucket
from tests.unit.test_stream_state import _fresh_cache, _Handle  # noqa: F401 - the autouse fixture too

F = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[SimulatedHistory, Path]:
    hist = simulate(12, 150, 60, seed=3)
    out = tmp_path_factory.mktemp("history")
    hist.write(out)
    return hist, out


def test_the_snapshot_is_the_point_in_time_end_state_of_the_replay(
    history: tuple[SimulatedHistory, Path],
) -> None:
    hist, data = history
    end = history_end(data, hist.transactions)
    assert end == hist.spec.end  # simulation.json's end: where live traffic continues
    labels = hist.labels
    late = labels[pd.to_datetime(labels["reported_at"], utc=True) > end]
    assert late["is_fraud"].any(), "the scenario needs frauds reported after the end"
    snap = build_snapshot(hist.transactions, labels, end)
    known = labels[pd.to_datetime(labels["reported_at"], utc=True) <= end]
    expected = replay(hist.transactions, known)
    assert snap.cards == expected.card_states
    assert snap.terminals == expected.terminal_states
    # a label reported after the end would leak into the terminal windows: it is not in the snapshot
    leaky = replay(hist.transactions, labels)
    assert any(leaky.terminal_states[t] != snap.terminals[t] for t in late["terminal_id"].unique())


def test_the_snapshot_file_round_trips_and_refuses_stale_records(tmp_path: Path) -> None:
    hist = simulate(3, 30, 20, seed=1)
    snap = build_snapshot(hist.transactions, hist.labels)
    path = tmp_path / "b" / "states.parquet"
    write_snapshot(snap, path)
    back = read_snapshot(path)
    assert back == snap
    assert not list(path.parent.glob(".*.tmp"))  # written through a temp file, renamed into place

    stale = Snapshot(snap.as_of, {"c1": b"\x01\x00" + bytes(CARD_DTYPE.itemsize - 2)}, {})
    write_snapshot(stale, path)
    with pytest.raises(FeatureStateError, match="version 1"):
        read_snapshot(path)
    pd.DataFrame({"kind": ["card"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="not a fraudwatch bootstrap snapshot"):
        read_snapshot(tmp_path / "other.parquet")


def test_loading_the_store_fills_absent_entities_only(tmp_path: Path) -> None:
    hist = simulate(3, 40, 20, seed=2)
    snap = build_snapshot(hist.transactions, hist.labels)
    store = SQLiteStore(tmp_path / "online.sqlite")
    newer_card = next(iter(snap.cards))
    newer = new_states(CARD_DTYPE, 1)
    newer["n_life"] = 999  # stands for the stream's later state of that card
    store.put({newer_card: newer.tobytes()}, {})

    assert load_store(snap, store) == (len(snap.cards) - 1, len(snap.terminals))
    assert store.get(newer_card, "none").card == newer.tobytes()  # kept, not moved back in time
    other = list(snap.cards)[1]
    terminal = next(iter(snap.terminals))
    got = store.get(other, terminal)
    assert (got.card, got.terminal) == (snap.cards[other], snap.terminals[terminal])
    assert load_store(snap, store) == (0, 0)  # loading twice changes nothing


def test_seeding_a_bucket_adds_to_what_it_holds_and_keeps_existing_entities() -> None:
    log = EntityLog("card", _Handle())
    entities, meta = log.open(5)
    log.commit(5, entities, meta, {"c-live": b"live"})
    # the initial rows of one key may come in several frames
    assert (
        seed_bucket(log, (5,), pd.DataFrame({"entity_id": ["c-live", "c1"], "state": [b"old", b"s1"]})) == 1
    )
    assert seed_bucket(log, (5,), pd.DataFrame({"entity_id": ["c2"], "state": [b"s2"]})) == 1
    held, _ = log.open(5)
    assert held == {"c-live": b"live", "c1": b"s1", "c2": b"s2"}


def test_api_features_on_the_warm_store_equal_a_replay_of_history_and_live(
    history: tuple[SimulatedHistory, Path], tmp_path: Path
) -> None:
    hist, data = history
    end = history_end(data, hist.transactions)
    snap = build_snapshot(hist.transactions, hist.labels, end)
    store = SQLiteStore(tmp_path / "online.sqlite")
    load_store(snap, store)

    live = pd.DataFrame(LiveSimulator.continuing(hist.spec).next_batch(400).transactions)
    live["event_time"] = pd.to_datetime(live["event_time"], utc=True)
    assert live["event_time"].min() >= pd.Timestamp(end)
    # the API reads the store and never writes it: compare the transactions that are the first live one of
    # both their card and their terminal (later ones depend on live state the stream would have written)
    first = ~live["card_id"].duplicated() & ~live["terminal_id"].duplicated()
    first &= live["card_id"].isin(list(snap.cards)).to_numpy()
    assert first.sum() >= 20

    known = hist.labels[pd.to_datetime(hist.labels["reported_at"], utc=True) <= end]
    columns = ["transaction_id", "event_time", "card_id", "terminal_id", "amount", "channel", "country"]
    both = pd.concat([hist.transactions[columns], live[columns]], ignore_index=True)
    expected = replay(both, known).features.iloc[len(hist.transactions) :].to_numpy()[first.to_numpy()]

    picked = live[first]
    txs = [Transaction.model_validate(r) for r in picked.assign(currency="EUR").to_dict("records")]
    got = feature_matrix(txs, [store.get(t.card_id, t.terminal_id) for t in txs])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert (got[:, F["card_is_new"]] == 0).all()  # warm: every history card is known

    cold = feature_matrix(txs, [store.get("never-seen", "never-seen")] * len(txs))
    assert (cold[:, F["card_is_new"]] == 1).all()  # what the API answered before the warm start


def test_history_end_without_a_spec_is_the_latest_event(tmp_path: Path) -> None:
    times = pd.Series(pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-02T05:00:00Z"]))
    end = history_end(tmp_path / "transactions.parquet", pd.DataFrame({"event_time": times}))
    assert end == times.max().to_pydatetime()
    assert end - times.min().to_pydatetime() == timedelta(days=1, hours=5)
