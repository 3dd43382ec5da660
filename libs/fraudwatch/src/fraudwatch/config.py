"""Typed settings for every fraudwatch part, read from FRAUDWATCH_* environment variables.

Build them through :func:`get_settings` (cached), never at import time. Unsafe values are refused:
outside ``development`` the scoring routes must be protected by a token and the MLflow store must not
be a local file under a temporary directory.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "configuration_markdown", "get_settings"]


class Settings(BaseSettings):
    """All settings; each field is FRAUDWATCH_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="FRAUDWATCH_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = Field(
        default="development", description="production refuses unsafe values (no token, SQLite store)."
    )
    local_dir: Path = Field(
        default=Path(".local"), description="Runtime state (data, services, checkpoints)."
    )

    # Kafka
    kafka_bootstrap: str = Field(
        default="localhost:9092", description="Kafka bootstrap servers (host:port,...)."
    )
    topic_transactions: str = "transactions"
    topic_labels: str = "labels"
    topic_scored: str = "transactions.scored"
    topic_alerts: str = "fraud.alerts"
    topic_dlq: str = "transactions.dlq"
    topic_partitions: int = Field(
        default=2, ge=1, le=1024, description="Partitions of each topic `make up` creates."
    )

    # MLflow
    mlflow_tracking_uri: str = Field(default="http://localhost:5000", description="MLflow tracking server.")
    model_name: str = Field(default="fraud-detector", description="Registered model name.")
    model_alias: str = Field(default="production", description="Alias the API and stream serve.")
    model_uri: str | None = Field(default=None, description="Overrides models:/<model_name>@<model_alias>.")
    shadow_alias: str = Field(
        default="challenger",
        description="Alias also scored in shadow when it exists (the production decision is the one acted on); "
        "empty: no shadow scoring.",
    )

    # Online store
    store_backend: Literal["sqlite", "redis"] = Field(default="sqlite", description="Online store backend.")
    sqlite_path: Path | None = Field(default=None, description="Defaults to <local_dir>/store/online.sqlite.")
    redis_url: str = Field(default="redis://localhost:6379/0", description="Redis online store URL.")

    # Scorer API
    api_host: str = Field(default="127.0.0.1", description="Scorer API bind address.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Scorer API port.")
    api_workers: int = Field(default=2, ge=1, le=64, description="uvicorn worker processes.")
    api_token: SecretStr | None = Field(default=None, description="Bearer token for /score routes.")
    api_max_batch: int = Field(default=1000, ge=1, le=100_000, description="Max items in /score/batch.")
    api_max_body_bytes: int = Field(default=2_000_000, ge=1024, description="Larger bodies get 413.")
    model_poll_seconds: float = Field(default=10.0, gt=0, description="Registry poll for alias moves.")

    # Review queue (services/review)
    review_host: str = Field(default="127.0.0.1", description="Review queue bind address.")
    review_port: int = Field(
        default=8010, ge=1, le=65535, description="Review queue port (page, API, /metrics)."
    )
    review_db_path: Path | None = Field(
        default=None, description="Review queue SQLite file; defaults to <local_dir>/review/review.sqlite."
    )
    review_group_id: str = Field(
        default="fraudwatch-review", description="Kafka consumer group reading fraud.alerts into the queue."
    )

    # Stream job
    stream_metrics_port: int = Field(default=9108, ge=1, le=65535, description="Stream /metrics port.")
    stream_trigger_seconds: float = Field(default=1.0, gt=0, description="Micro-batch trigger interval.")
    stream_checkpoint_dir: Path | None = Field(
        default=None, description="Defaults to <local_dir>/checkpoints."
    )
    stream_shuffle_partitions: int = Field(default=2, ge=1, description="spark.sql.shuffle.partitions.")
    stream_state_buckets: int = Field(
        default=8,  # measured: docs/stream.md, "Where the time goes"
        ge=1,
        description="State groups (buckets of cards or terminals) per stateful stage of the stream job.",
    )
    stream_max_offsets_per_trigger: int = Field(default=50_000, ge=1, description="Kafka records per batch.")
    max_record_bytes: int = Field(default=16_384, ge=256, description="Larger records go to the DLQ.")
    stream_warm_start: Path | None = Field(
        default=None,
        description="Bootstrap snapshot (`make bootstrap`: the states the training history ends with) the "
        "stream job loads into its state in the first batch of a fresh checkpoint; unset: start cold.",
    )

    # Event plausibility (API and stream; see fraudwatch.events.EventBounds)
    event_max_future_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Events (event_time, reported_at) later than this after the reference time (the request's "
        "receive time in the API, the Kafka record's timestamp in the stream) are refused; 0 disables. "
        "Covers clock skew between sources; a simulated clock running ahead of the wall clock needs 0.",
    )
    event_max_age_days: float = Field(
        default=45.0,
        ge=0,
        description="Events older than this before the reference time are refused; 0 disables. The default "
        "covers the longest feature window (30 d) plus a label-reporting delay; replaying old history needs 0.",
    )
    amount_max: float = Field(
        default=1_000_000.0,
        ge=0,
        le=1e9,
        description="Larger transaction amounts are refused (the schema's hard ceiling is 1e9); 0 disables.",
    )

    # Producer
    producer_metrics_port: int = Field(default=9109, ge=1, le=65535, description="Producer /metrics port.")
    producer_speedup: float = Field(
        default=0.0,
        ge=0,
        description="Live producer pace in simulated seconds per wall second (3600: an hour a second) when "
        "neither --rate nor --speedup is given; 0: a fixed --rate (default 5,000 tx/s).",
    )

    # Services (local, `make up`)
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="Port `make up` gives MLflow.")
    redis_port: int = Field(default=6379, ge=1, le=65535, description="Port `make up` gives Redis.")
    prometheus_port: int = Field(default=9090, ge=1, le=65535, description="Port `make up` gives Prometheus.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production":
            if self.api_token is None or len(self.api_token.get_secret_value()) < 16:
                raise ValueError("FRAUDWATCH_API_TOKEN must be set (>= 16 characters) in production")
            if self.store_backend == "sqlite":
                raise ValueError(
                    "the SQLite online store is for development; use FRAUDWATCH_STORE_BACKEND=redis"
                )
        return self

    @property
    def resolved_model_uri(self) -> str:
        return self.model_uri or f"models:/{self.model_name}@{self.model_alias}"

    @property
    def resolved_sqlite_path(self) -> Path:
        return self.sqlite_path or self.local_dir / "store" / "online.sqlite"

    @property
    def resolved_review_db_path(self) -> Path:
        return self.review_db_path or self.local_dir / "review" / "review.sqlite"

    @property
    def resolved_checkpoint_dir(self) -> Path:
        return self.stream_checkpoint_dir or self.local_dir / "checkpoints"

    @property
    def all_topics(self) -> tuple[str, ...]:
        return (
            self.topic_transactions,
            self.topic_labels,
            self.topic_scored,
            self.topic_alerts,
            self.topic_dlq,
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; call ``get_settings.cache_clear()`` in tests)."""
    return Settings()


def configuration_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from :class:`Settings`."""
    lines = [
        "# Configuration reference",
        "",
        "Every part reads these settings from the environment (generated from `fraudwatch.config.Settings`",
        "by `make config-docs`; a unit test keeps this page current).",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        default = info.default
        if isinstance(default, Path):
            default = str(default)
        shown = "—" if default is None else f"`{default}`"
        desc = info.description or ""
        lines.append(f"| `FRAUDWATCH_{name.upper()}` | {shown} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - CLI
    print(configuration_markdown(), end="")
