"""The model contract: reasons, thresholds, decisions, fast path vs pyfunc predict, skops round trip."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.model import (
    FraudModel,
    Histogram,
    Thresholds,
    compute_reference,
    population_stability_index,
)

IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


def _training(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = np.zeros((n, len(FEATURE_NAMES)))
    X[:, IDX["amount"]] = rng.lognormal(3.5, 0.6, n)
    X[:, IDX["log_amount"]] = np.log1p(X[:, IDX["amount"]])
    X[:, IDX["amount_to_card_mean_30d"]] = rng.lognormal(0, 0.3, n)
    X[:, IDX["amount_to_card_max_30d"]] = rng.uniform(0.1, 1.0, n)
    X[:, IDX["card_count_1h"]] = rng.poisson(0.2, n)
    X[:, IDX["card_count_30d"]] = rng.poisson(60, n)
    X[:, IDX["terminal_fraud_count_utc30d"]] = rng.poisson(0.05, n)
    X[:, IDX["terminal_days_since_fraud"]] = 365.0
    X[:, IDX["card_log_seconds_since_prev"]] = np.log1p(rng.exponential(30000, n))
    X[:, IDX["hour_of_day"]] = rng.integers(8, 21, n)
    y = (
        (X[:, IDX["amount_to_card_mean_30d"]] > 1.6) | (X[:, IDX["terminal_fraud_count_utc30d"]] > 0)
    ).astype(int)
    return X, y


@pytest.fixture(scope="module")
def models() -> dict[str, FraudModel]:
    X, y = _training()
    lr = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(class_weight="balanced"))]).fit(
        X, y
    )
    hgb = Pipeline([("model", HistGradientBoostingClassifier(max_iter=40, random_state=0))]).fit(X, y)
    importances = {name: 0.0 for name in FEATURE_NAMES} | {
        "amount_to_card_mean_30d": 0.3,
        "card_count_1h": 0.01,
    }
    out = {}
    for name, est in (("lr", lr), ("hgb", hgb)):
        out[name] = FraudModel(
            est, Thresholds(0.3, 0.8), compute_reference(X, est.predict_proba(X)[:, 1], importances)
        )
    return out


def _row(**values: float) -> list[float]:
    row = [0.0] * len(FEATURE_NAMES)
    row[IDX["terminal_days_since_fraud"]] = 365.0
    row[IDX["card_log_seconds_since_prev"]] = np.log1p(30000)
    row[IDX["card_count_30d"]] = 60.0
    row[IDX["hour_of_day"]] = 14.0
    for k, v in values.items():
        row[IDX[k]] = v
    return row


def test_reasons_are_in_analyst_words(models: dict[str, FraudModel]) -> None:
    m = models["lr"]
    row = _row(
        amount=420.0, amount_to_card_mean_30d=8.2, terminal_fraud_count_utc30d=4, card_small_count_1h=6
    )
    reasons = m.explain(row, k=5)
    assert "amount 8.2x the card's 30-day average" in reasons
    assert "terminal had 4 reported frauds in the last 30 days" in reasons
    assert "card-testing pattern: 6 small amounts in the last hour" in reasons
    assert len(m.explain(row, k=2)) == 2


def test_reasons_rank_by_importance_and_rarity(models: dict[str, FraudModel]) -> None:
    # amount ratio: important and rare; 3 tx in the last hour: barely important
    row = _row(amount_to_card_mean_30d=8.2, card_count_1h=3, is_night=1.0, hour_of_day=3.0)
    reasons = models["lr"].explain(row, k=3)
    assert reasons[0] == "amount 8.2x the card's 30-day average"
    assert "night-time transaction (03:00-03:59 UTC)" in reasons


def test_country_named_when_known(models: dict[str, FraudModel]) -> None:
    reasons = models["lr"].explain(_row(card_abroad=1.0), k=3, country="FR")
    assert "card used abroad (FR)" in reasons


def test_no_reasons_for_an_ordinary_transaction(models: dict[str, FraudModel]) -> None:
    assert models["lr"].explain(_row(amount=30.0, amount_to_card_mean_30d=1.0)) == []


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ModelError):
        Thresholds(0.8, 0.3)
    with pytest.raises(ModelError):
        Thresholds(0.5, 0.5)


def test_decide_boundaries(models: dict[str, FraudModel]) -> None:
    assert models["lr"].decide([0.0, 0.2999, 0.3, 0.7999, 0.8, 1.0]) == [
        "approve", "approve", "review", "review", "decline", "decline",
    ]  # fmt: skip


@pytest.mark.parametrize("kind", ["lr", "hgb"])
def test_fast_path_agrees_with_sklearn_and_predict(models: dict[str, FraudModel], kind: str) -> None:
    m = models[kind]
    X, _ = _training(500, seed=1)
    fast = m.score_matrix(X)
    np.testing.assert_allclose(fast, m.estimator.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    frame = pd.DataFrame(X, columns=list(FEATURE_NAMES)).assign(transaction_id="t", country="BE")
    out = m.predict(None, frame)
    assert list(out.columns) == ["score", "decision", "reasons"]
    np.testing.assert_allclose(out["score"].to_numpy(), fast, rtol=0, atol=1e-12)
    assert out["decision"].tolist() == m.decide(fast)
    assert out["reasons"].iloc[0] == m.explain(X[0].tolist(), country="BE")
    np.testing.assert_allclose(m.score_matrix(X[3].tolist()), fast[3:4], rtol=0, atol=1e-12)


def test_hgb_fast_path_handles_missing_values() -> None:
    X, y = _training(3000)
    X[::7, IDX["amount_to_card_mean_30d"]] = np.nan
    est = Pipeline([("model", HistGradientBoostingClassifier(max_iter=30, random_state=0))]).fit(X, y)
    np.testing.assert_allclose(FraudModel(est).score_matrix(X), est.predict_proba(X)[:, 1], atol=1e-12)


def test_missing_feature_columns_are_an_error(models: dict[str, FraudModel]) -> None:
    frame = pd.DataFrame([_row()], columns=list(FEATURE_NAMES)).drop(columns=["amount"])
    with pytest.raises(ModelError, match="amount"):
        models["lr"].predict(None, frame)


def test_feature_list_must_match_the_library() -> None:
    with pytest.raises(ModelError, match="FEATURE_NAMES"):
        FraudModel(feature_names=list(reversed(FEATURE_NAMES)))


def test_artifacts_round_trip_through_skops(models: dict[str, FraudModel], tmp_path: Path) -> None:
    m = models["hgb"]
    artifacts = m.save_artifacts(tmp_path)
    loaded = FraudModel()
    loaded.load_context(SimpleNamespace(artifacts=artifacts))
    X, _ = _training(200, seed=2)
    np.testing.assert_array_equal(loaded.score_matrix(X), m.score_matrix(X))
    assert loaded.thresholds == m.thresholds
    assert loaded.explain(X[0].tolist()) == m.explain(X[0].tolist())


def test_psi_flags_a_shifted_distribution() -> None:
    rng = np.random.default_rng(0)
    ref = Histogram.of(rng.normal(0, 1, 20000))
    assert population_stability_index(ref, rng.normal(0, 1, 20000)) < 0.02
    assert population_stability_index(ref, rng.normal(1.0, 1, 20000)) > 0.25
