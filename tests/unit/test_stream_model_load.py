"""The stream's model loading at start-up: a registered version comes from its serving artifact (as in the
API: no sklearn, skops or mlflow.pyfunc in the Python worker) and scores exactly as the pyfunc model does;
the worker warm-up loads it before the first batch and never raises (real MLflow registry on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from fraudwatch.features import FEATURE_NAMES
from fraudwatch.serving_model import CompiledFraudModel
from fraudwatch_stream import scoring
from fraudwatch_stream.scoring import ModelConfig, current_model, warm_worker
from tests.integration.test_stream import register_model, set_production

MODEL = "fraud-detector"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the run artifacts go under root/mlruns
        uri = f"sqlite:///{root / 'mlflow.db'}"
        version = register_model(uri, seed=3, review=0.3, decline=0.7)
        set_production(uri, version)
        yield uri, version


@pytest.fixture(autouse=True)
def _fresh_worker() -> Iterator[None]:
    for holder in (scoring._HOLDER, scoring._CHALLENGER):
        holder.model, holder.config, holder.checked_at = None, None, float("-inf")
    yield
    for holder in (scoring._HOLDER, scoring._CHALLENGER):
        holder.model, holder.config, holder.checked_at = None, None, float("-inf")


def _config(uri: str) -> ModelConfig:
    return ModelConfig(uri, f"models:/{MODEL}@production", MODEL, "production", 60.0, None)


def test_registered_version_loads_from_its_serving_artifact_with_the_pyfunc_scores(
    registry: tuple[str, str],
) -> None:
    import mlflow

    from fraudwatch.model import load_model

    uri, version = registry
    loaded = current_model(_config(uri))
    assert (loaded.name, loaded.version) == (MODEL, version)
    assert isinstance(loaded.model, CompiledFraudModel)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    pyfunc = load_model(f"models:/{MODEL}/{version}").model
    rows = np.random.default_rng(0).gamma(2.0, 3.0, size=(200, len(FEATURE_NAMES)))
    scores = loaded.score(rows)
    np.testing.assert_array_equal(scores, pyfunc.score_matrix(rows))
    assert len(set(np.round(scores, 6))) > 1  # the rows are not all scored alike
    assert list(loaded.model.decide(scores)) == list(pyfunc.decide(scores))
    for row in rows[:20]:
        assert loaded.explain(row, "BE") == list(pyfunc.explain(row, k=3, country="BE"))


def test_warm_up_loads_the_model_the_batches_then_use(registry: tuple[str, str]) -> None:
    uri, version = registry
    config = _config(uri)
    warmed = warm_worker(config)
    assert (warmed["version"], warmed["error"]) == (version, None)
    held = scoring._HOLDER.model
    assert held is not None
    assert current_model(config) is held  # the first batch scores with the warmed model, no new load


def test_warm_up_never_raises_when_the_model_cannot_be_loaded(registry: tuple[str, str]) -> None:
    uri, _ = registry
    config = ModelConfig(uri, f"models:/{MODEL}@no-such-alias", MODEL, "no-such-alias", 60.0, None)
    warmed = warm_worker(config)
    assert warmed["version"] is None
    assert warmed["error"] is not None and warmed["error"].startswith("warm-up: ModelError")
    assert scoring._HOLDER.model is None
