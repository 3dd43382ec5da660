"""Training against a real MLflow server: registration, the promotion gate, loading by alias, scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from fraudwatch.features import FEATURE_NAMES
from fraudwatch.model import FraudModel, Thresholds, load_model, log_model, promote_if_better, resolve_alias
from fraudwatch.simulator import simulate
from fraudwatch_training.models import ModelSpec
from fraudwatch_training.pipeline import train_and_register
from fraudwatch_training.split import SplitConfig

pytestmark = pytest.mark.integration
NAME = "fraud-detector-it"


def _noise_model(seed: int) -> FraudModel:
    """A model that learned nothing: fitted on random labels."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, len(FEATURE_NAMES)))
    est = Pipeline([("model", LogisticRegression())]).fit(X, rng.integers(0, 2, 500))
    return FraudModel(est, Thresholds(0.5, 0.9))


def test_registration_and_gated_promotion(mlflow_tracking_uri: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_tracking_uri)
    mlflow.set_experiment("fraudwatch-it")
    client = MlflowClient(tracking_uri=mlflow_tracking_uri)
    example = pd.DataFrame(np.zeros((2, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))

    with mlflow.start_run():
        v1 = log_model(_noise_model(0), input_example=example, registered_model_name=NAME, client=client)
    assert v1 is not None
    history = simulate(days=24, n_cards=800, n_terminals=300, seed=5)
    # the first model becomes production whatever it is worth
    first = promote_if_better(client, NAME, v1.version, np.zeros((10, len(FEATURE_NAMES))), [0] * 9 + [1])
    assert first.promoted and resolve_alias(client, NAME, "production").version == v1.version

    result = train_and_register(
        history.transactions, history.labels, mlflow_tracking_uri, model_name=NAME, experiment="fraudwatch-it",
        specs={"hist_gradient_boosting": ModelSpec("hist_gradient_boosting", {"max_iter": 40})},
        split=SplitConfig(validation_days=4, test_days=4, gap_days=2), importance_rows=1500, plots=False,
    )  # fmt: skip
    assert result.promotion is not None and result.promotion.promoted, result.promotion
    assert resolve_alias(client, NAME, "production").version == result.model_version
    assert resolve_alias(client, NAME, "challenger").version == result.model_version
    # the gate ran on the test window (after validation), and the run records window, values and verdict
    run = client.get_run(result.run_id).data
    assert run.params["promotion_window_start"] == str(result.bounds["test"][0])
    assert result.bounds["test"][0] >= result.bounds["validation"][1]
    assert int(run.params["promotion_window_rows"]) == len(result.promotion_y)
    assert run.tags["promotion_verdict"] == "promoted"
    assert run.metrics["promotion_candidate_value"] == pytest.approx(result.promotion.candidate_value)
    assert run.metrics["promotion_production_value"] == pytest.approx(result.promotion.production_value)
    # labels as known at the cut-off: simulated frauds are reported after a lognormal delay, so some of the
    # training window's frauds were not known yet when the model was fitted
    assert 0 < run.metrics["train_frauds_unknown_at_cutoff"] < run.metrics["train_frauds"]
    assert run.params["label_cutoff"] == str(result.bounds["validation"][0])

    # a worse candidate becomes challenger and leaves production alone
    with mlflow.start_run():
        v3 = log_model(_noise_model(1), input_example=example, registered_model_name=NAME, client=client)
    gate = promote_if_better(client, NAME, v3.version, result.promotion_X, result.promotion_y)
    assert not gate.promoted and gate.candidate_value < gate.production_value
    assert resolve_alias(client, NAME, "production").version == result.model_version
    assert resolve_alias(client, NAME, "challenger").version == v3.version

    loaded = load_model(f"models:/{NAME}@production", client)
    assert loaded.version == result.model_version and loaded.model.feature_names == FEATURE_NAMES
    frame = pd.DataFrame(result.validation_X[:50], columns=list(FEATURE_NAMES))
    out = loaded.pyfunc.predict(frame)
    np.testing.assert_allclose(
        out["score"].to_numpy(), loaded.model.score_matrix(frame.to_numpy()), atol=1e-12
    )
    assert set(out["decision"]) <= {"approve", "review", "decline"}
    assert loaded.model.metadata["data_hash"] and loaded.model.metadata["code_version"]
