"""Settings: environment variables, defaults, and refusal of unsafe values."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fraudwatch.config import Settings, get_settings


def test_defaults_match_the_architecture() -> None:
    s = Settings()
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.mlflow_tracking_uri == "http://localhost:5000"
    assert s.api_port == 8000 and s.stream_metrics_port == 9108 and s.producer_metrics_port == 9109
    assert s.all_topics == (
        "transactions",
        "labels",
        "transactions.scored",
        "fraud.alerts",
        "transactions.dlq",
    )
    assert s.resolved_model_uri == "models:/fraud-detector@production"


def test_environment_variables_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDWATCH_API_PORT", "8123")
    monkeypatch.setenv("FRAUDWATCH_STORE_BACKEND", "redis")
    get_settings.cache_clear()
    try:
        assert get_settings().api_port == 8123
        assert get_settings().store_backend == "redis"
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kafka_bootstrap": "localhost"},
        {"api_port": 0},
        {"store_backend": "memory"},
        {"environment": "production", "store_backend": "redis"},
        {"environment": "production", "store_backend": "redis", "api_token": "short"},
        {"environment": "production", "api_token": "x" * 32},
    ],
)
def test_unsafe_or_malformed_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)


def test_production_with_token_and_redis_is_accepted() -> None:
    s = Settings(environment="production", store_backend="redis", api_token="t" * 32)
    assert s.api_token is not None


def test_configuration_reference_is_current() -> None:
    from pathlib import Path

    from fraudwatch.config import configuration_markdown

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == configuration_markdown(), (
        "docs/configuration.md is stale: run `make config-docs`"
    )
