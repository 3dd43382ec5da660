"""As-of safety in the scorer API: a transaction scored against state that already holds later events (a
back-dated request, a re-score) is flagged in the response's ``as_of`` and counted in
``fraudwatch_api_state_newer_than_event_total``; a new transaction is not. Real model, real SQLite store
(the fixtures of tests/unit/test_api.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from fraudwatch.features import CARD_DTYPE, TERMINAL_DTYPE, new_states
from fraudwatch.store import EntityStates
from fraudwatch_api.asof import as_of, state_times
from tests.unit import test_api
from tests.unit.test_api import World, known_tx, metric_value

# the API tests' fixtures: a real model in a temporary MLflow store, the replayed history in a SQLite store
world = test_api.world
store_path = test_api.store_path
settings_for = test_api.settings_for
client = test_api.client

NEWER = "fraudwatch_api_state_newer_than_event_total"


def _iso(ts: pd.Timestamp | datetime) -> str:
    return pd.Timestamp(ts).isoformat().replace("+00:00", "Z")


def _card(last: datetime) -> bytes:
    rec = new_states(CARD_DTYPE, 1)
    rec["n_life"] = 3
    rec["last_ts"] = last.timestamp()
    return rec.tobytes()


def _terminal(newest_day: datetime | None, last_fraud: datetime | None) -> bytes:
    rec = new_states(TERMINAL_DTYPE, 1)
    if newest_day is not None:
        rec["tile_newest"] = int(newest_day.timestamp() // 86400)
    if last_fraud is not None:
        rec["last_fraud_ts"] = last_fraud.timestamp()
    return rec.tobytes()


def test_state_times_read_the_records() -> None:
    t = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    states = EntityStates(_card(t), _terminal(t, None), None, None)
    assert state_times(states) == (t.timestamp(), datetime(2026, 3, 4, tzinfo=UTC).timestamp())
    fraud_later_that_day = t + timedelta(hours=2)
    states = EntityStates(None, _terminal(t, fraud_later_that_day), None, None)
    assert state_times(states) == (None, fraud_later_that_day.timestamp())
    assert state_times(EntityStates(None, None, None, None)) == (None, None)
    # a record that exists but never took a transaction (a fresh record) has no time
    assert state_times(EntityStates(new_states(CARD_DTYPE, 1).tobytes(), None, None, None)) == (None, None)


def test_as_of_flags_later_state_only() -> None:
    last = datetime(2026, 3, 4, 15, 30, tzinfo=UTC)
    states = EntityStates(_card(last), _terminal(last, None), None, None)
    after = as_of((last + timedelta(minutes=5)).timestamp(), states)
    assert after == {
        "state_newer_than_event": False,
        "card_newer": False,
        "terminal_newer": False,
        "card_state_time": "2026-03-04T15:30:00Z",
        "terminal_state_time": "2026-03-04T00:00:00Z",
    }
    # a re-score: the card's state holds this very transaction (equal times)
    assert as_of(last.timestamp(), states)["card_newer"] is True
    # back-dated to the day before: both the card and the terminal's newest day are later
    before = as_of((last - timedelta(days=1)).timestamp(), states)
    assert before["state_newer_than_event"] and before["card_newer"] and before["terminal_newer"]
    # the terminal's time is a lower bound: a later transaction on the same day is not detected
    same_day = as_of((last - timedelta(hours=3)).timestamp(), EntityStates(None, states.terminal, None, None))
    assert same_day["terminal_newer"] is False


def test_a_new_transaction_is_not_flagged(client: TestClient, world: World) -> None:
    body = known_tx(world)
    r = client.post("/score", json=body)
    assert r.status_code == 200, r.text
    stamp = r.json()["as_of"]
    assert stamp["state_newer_than_event"] is False
    card_rows = world.history.transactions[world.history.transactions["card_id"] == body["card_id"]]
    assert stamp["card_state_time"] == _iso(card_rows["event_time"].max())
    assert stamp["terminal_state_time"] is not None
    assert metric_value(client.get("/metrics").text, NEWER, {"entity": "card"}) in (None, 0.0)


def test_back_dated_and_re_scored_transactions_are_flagged_and_counted(
    client: TestClient, world: World
) -> None:
    history = world.history.transactions
    card = history["card_id"].value_counts().index[0]  # a busy card: many transactions to land between
    rows = history[history["card_id"] == card].sort_values("event_time")
    latest = rows.iloc[-1]

    back = known_tx(world, event_time=_iso(rows["event_time"].iloc[len(rows) // 2]), card_id=card)
    r = client.post("/score", json=back)
    assert r.status_code == 200, r.text
    stamp = r.json()["as_of"]
    assert stamp["state_newer_than_event"] is True and stamp["card_newer"] is True
    assert stamp["card_state_time"] == _iso(latest["event_time"])

    again = known_tx(
        world,
        transaction_id=latest["transaction_id"],
        event_time=_iso(latest["event_time"]),
        card_id=card,
        terminal_id=latest["terminal_id"],
        amount=float(latest["amount"]),
    )
    assert client.post("/score", json=again).json()["as_of"]["card_newer"] is True

    text = client.get("/metrics").text
    assert metric_value(text, NEWER, {"entity": "card"}) == 2.0


def test_batch_items_carry_their_own_as_of(client: TestClient, world: World) -> None:
    history = world.history.transactions
    old = _iso(history["event_time"].min() - np.timedelta64(1, "D"))
    items = [known_tx(world, transaction_id="new"), known_tx(world, transaction_id="old", event_time=old)]
    r = client.post("/score/batch", json=items)
    assert r.status_code == 200, r.text
    flags = [item["as_of"]["state_newer_than_event"] for item in r.json()["results"]]
    assert flags == [False, True]
