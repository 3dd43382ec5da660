"""Behaviour of a model trained on a small simulated history: directional, invariance and
minimum-functionality tests (Made-With-ML style)."""

from __future__ import annotations

import numpy as np
import pytest

from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch.model import FraudModel
from fraudwatch.simulator import SCENARIOS, ScenarioRates, simulate
from fraudwatch_training.data import History
from fraudwatch_training.metrics import recall_per_scenario
from fraudwatch_training.models import ModelSpec, fit_estimator
from fraudwatch_training.pipeline import Dataset, build_dataset
from fraudwatch_training.split import SplitConfig, time_split
from fraudwatch_training.thresholds import choose_thresholds

pytestmark = pytest.mark.slow  # trains a small model on a simulated history (tens of seconds)
IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
# More compromised terminals than the default so a small history has enough of every scenario.
RATES = ScenarioRates(compromised_terminal=0.002, account_takeover=0.0006, card_testing=0.0006)


@pytest.fixture(scope="module")
def trained() -> tuple[FraudModel, Dataset, object]:
    history = simulate(days=28, n_cards=1500, n_terminals=400, seed=3, rates=RATES)
    data = build_dataset(History(history.transactions, history.labels))
    parts = time_split(data.event_time, SplitConfig(validation_days=5, test_days=5, gap_days=3))
    train, val, test = data.take(parts.train), data.take(parts.validation), data.take(parts.test)
    est = fit_estimator(
        ModelSpec("hist_gradient_boosting", {"max_iter": 80, "early_stopping": False}), train.X, train.y
    )
    model = FraudModel(est)
    model.thresholds = choose_thresholds(val.y, model.score_matrix(val.X)).thresholds
    return model, test, history


def test_larger_amount_at_night_on_new_terminal_does_not_lower_the_score(trained: tuple) -> None:
    model, test, _ = trained
    rows = test.X[(test.y == 0) & (test.X[:, IDX["card_count_30d"]] > 10)][:300]
    worse = rows.copy()
    worse[:, IDX["amount"]] *= 10
    worse[:, IDX["log_amount"]] = np.log1p(worse[:, IDX["amount"]])
    for f in ("amount_to_card_mean_30d", "amount_to_card_max_30d", "amount_to_card_mean_life"):
        worse[:, IDX[f]] *= 10
    for f in ("card_sum_amount_1h",):
        worse[:, IDX[f]] = rows[:, IDX[f]]  # the history before the transaction is unchanged
    worse[:, IDX["hour_of_day"]] = 3
    worse[:, IDX["is_night"]] = 1
    worse[:, IDX["card_terminal_is_new"]] = 1
    before, after = model.score_matrix(rows), model.score_matrix(worse)
    assert (after >= before - 1e-9).mean() >= 0.98
    assert np.median(after) > 5 * np.median(before)


def test_renaming_ids_does_not_change_the_score(trained: tuple) -> None:
    model, _, history = trained
    tx = history.transactions.iloc[:15000]
    labels = history.labels[history.labels["transaction_id"].isin(tx["transaction_id"])]
    renamed_tx = tx.assign(
        card_id="c/" + tx["card_id"].str[::-1], terminal_id="t/" + tx["terminal_id"].str[::-1],
        transaction_id="x" + tx["transaction_id"],
    )  # fmt: skip
    renamed_labels = labels.assign(
        terminal_id="t/" + labels["terminal_id"].str[::-1], transaction_id="x" + labels["transaction_id"]
    )
    a = replay(tx, labels).features.to_numpy()
    b = replay(renamed_tx, renamed_labels).features.to_numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.score_matrix(a), model.score_matrix(b))


def test_each_scenario_is_caught_at_the_review_threshold(trained: tuple) -> None:
    model, test, _ = trained
    recall = recall_per_scenario(
        test.scenario, model.score_matrix(test.X), model.thresholds.review, SCENARIOS
    )
    assert set(recall) == set(SCENARIOS.values()) - {"genuine"}, recall
    assert all(r > 0 for r in recall.values()), recall
