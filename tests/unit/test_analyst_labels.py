"""Analyst decisions from the review queue reach the next training run (fraudwatch_training.data): one label
per transaction, the analyst's verdict winning over the history's, known from the decision time on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest

from fraudwatch.events import ScoredTransaction
from fraudwatch.features import replay
from fraudwatch.simulator import simulate
from fraudwatch_review.queue import ReviewQueue
from fraudwatch_training.data import History, add_analyst_labels, load_history, read_analyst_labels


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    local = tmp_path_factory.mktemp("history")
    simulate(10, 300, 60, seed=3).write(local / "data")
    return load_history(local_dir=local)


def _queue_alert(queue: ReviewQueue, row: pd.Series) -> None:
    record = {
        "transaction_id": row["transaction_id"],
        "event_time": pd.Timestamp(row["event_time"]).isoformat(),
        "card_id": row["card_id"],
        "terminal_id": row["terminal_id"],
        "amount": float(row["amount"]),
        "currency": "EUR",
        "score": 0.5,
        "decision": "review",
        "model_name": "fraud-detector",
        "model_version": "1",
        "reasons": [],
        "scored_at": pd.Timestamp(row["event_time"]).isoformat(),
    }
    assert queue.add(ScoredTransaction.model_validate_json(orjson.dumps(record)))


def test_analyst_decisions_override_the_history_labels(history: History, tmp_path: Path) -> None:
    tx = history.transactions
    genuine = tx[~tx["is_fraud"]].iloc[len(tx) // 2]  # the analyst finds a fraud the history missed
    fraud = tx[tx["is_fraud"]].iloc[0]  # and clears one the history called fraud
    still_open = tx[~tx["is_fraud"]].iloc[len(tx) // 3]
    queue = ReviewQueue(tmp_path / "review.sqlite")
    for row in (genuine, fraud, still_open):
        _queue_alert(queue, row)
    decided_at = pd.Timestamp(genuine["event_time"]).to_pydatetime() + timedelta(hours=2)
    assert queue.decide(genuine["transaction_id"], "fraud", "alice", None, decided_at)
    assert queue.decide(fraud["transaction_id"], "genuine", "bob", "known customer", decided_at)
    queue.close()

    analyst = read_analyst_labels(tmp_path / "review.sqlite")
    assert sorted(analyst["transaction_id"]) == sorted([genuine["transaction_id"], fraud["transaction_id"]])
    assert set(analyst["source"]) == {"analyst:alice", "analyst:bob"}
    # a live transaction the history does not hold: counted, not invented
    live = pd.DataFrame(
        {
            "transaction_id": ["live-1"],
            "is_fraud": [True],
            "reported_at": [pd.Timestamp(datetime.now(UTC))],
            "source": ["analyst:alice"],
        }
    )
    merged = add_analyst_labels(history, pd.concat([analyst, live], ignore_index=True))
    assert merged.source["analyst_labels"] == 2 and merged.source["analyst_labels_unmatched"] == 1
    assert len(merged.transactions) == len(tx)

    out = merged.transactions.set_index("transaction_id")
    assert bool(out.loc[genuine["transaction_id"], "is_fraud"]) is True
    assert bool(out.loc[fraud["transaction_id"], "is_fraud"]) is False
    assert bool(out.loc[still_open["transaction_id"], "is_fraud"]) is False  # an open alert is no label
    assert out.loc[genuine["transaction_id"], "reported_at"] == pd.Timestamp(decided_at)
    assert (merged.transactions["is_fraud"].sum()) == tx["is_fraud"].sum()  # +1 and -1

    labels = merged.labels
    assert labels["transaction_id"].is_unique or labels["transaction_id"].duplicated().sum() == (
        history.labels["transaction_id"].duplicated().sum()
    )
    mine = labels[labels["transaction_id"] == genuine["transaction_id"]]
    assert len(mine) == 1 and bool(mine["is_fraud"].iloc[0]) and mine["reported_at"].iloc[0] == decided_at
    cleared = labels[labels["transaction_id"] == fraud["transaction_id"]]
    assert len(cleared) == 1 and not bool(cleared["is_fraud"].iloc[0])

    # the label reaches the features training builds: terminal fraud counts at that terminal rise after
    # the decision, point in time (nothing before it changes)
    before = replay(tx, history.labels).features.set_index(tx["transaction_id"])
    after = replay(merged.transactions, merged.labels).features.set_index(
        merged.transactions["transaction_id"]
    )
    at_terminal = merged.transactions[merged.transactions["terminal_id"] == genuine["terminal_id"]]
    later = at_terminal[at_terminal["event_time"] > pd.Timestamp(decided_at)]["transaction_id"]
    earlier = at_terminal[at_terminal["event_time"] <= pd.Timestamp(decided_at)]["transaction_id"]
    counts = [c for c in before.columns if c.startswith("terminal_fraud_count")]
    assert counts and len(later)
    assert (after.loc[later, counts].to_numpy() >= before.loc[later, counts].to_numpy()).all()
    assert (after.loc[later, counts].to_numpy() > before.loc[later, counts].to_numpy()).any()
    pd.testing.assert_frame_equal(after.loc[earlier, counts], before.loc[earlier, counts])


def test_no_review_database_means_no_analyst_labels(history: History, tmp_path: Path) -> None:
    analyst = read_analyst_labels(tmp_path / "absent.sqlite")
    assert analyst.empty
    merged = add_analyst_labels(history, analyst)
    assert merged.source["analyst_labels"] == 0
    pd.testing.assert_frame_equal(merged.transactions, history.transactions)
