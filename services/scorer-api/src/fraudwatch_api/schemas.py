"""Response schemas of the scorer API (the request schema is the shared fraudwatch.events.Transaction).

These models document the API (OpenAPI, /docs); the hot path builds plain dicts of the same shape and
serialises them with orjson instead of validating its own output.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AsOf",
    "BatchScoreResponse",
    "ErrorResponse",
    "FieldError",
    "HealthResponse",
    "ModelRef",
    "ReadyResponse",
    "ScoreResponse",
    "ShadowScore",
    "StateAge",
    "Thresholds",
    "ValidationErrorResponse",
]


class Thresholds(BaseModel):
    review: float = Field(description="Scores at or above this are reviewed.")
    decline: float = Field(description="Scores at or above this are declined.")


class ModelRef(BaseModel):
    name: str
    version: str
    alias: str | None


class StateAge(BaseModel):
    card: float | None = Field(description="Seconds since the card's state was written; null on cold start.")
    terminal: float | None = Field(
        description="Seconds since the terminal's state was written; null on cold start."
    )


class ShadowScore(BaseModel):
    model_version: str = Field(description="Registry version behind the shadow alias (challenger).")
    score: float = Field(ge=0, le=1, description="The shadow model's fraud probability score.")
    decision: Literal["approve", "review", "decline"] = Field(
        description="What the shadow model would decide at its own thresholds; never acted on."
    )


class AsOf(BaseModel):
    """Whether the stored state already held events later than this transaction (docs/api.md, As-of safety)."""

    state_newer_than_event: bool = Field(
        description="True when the card's or the terminal's state holds events later than event_time (a "
        "back-dated request or a re-score): the features then include those later events."
    )
    card_newer: bool = Field(description="The card's latest transaction is at or after event_time.")
    terminal_newer: bool = Field(
        description="The terminal's state holds a later day, or a fraud that happened after event_time."
    )
    card_state_time: datetime | None = Field(
        description="Event time of the card's latest transaction in its state; null when never seen."
    )
    terminal_state_time: datetime | None = Field(
        description="Lower bound of the terminal state's latest event (start of its newest day, or its latest "
        "reported fraud's time if later); null when never seen."
    )


class ScoreResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "transaction_id": "tx-000001",
                    "score": 0.91,
                    "decision": "decline",
                    "thresholds": {"review": 0.3, "decline": 0.8},
                    "reasons": [
                        "amount is 9.8x the card's 30-day average",
                        "3 transactions on this card in the last hour",
                        "terminal had reported frauds in the last 7 days",
                    ],
                    "model": {"name": "fraud-detector", "version": "7", "alias": "production"},
                    "state_age_seconds": {"card": 2.4, "terminal": 0.8},
                }
            ]
        }
    )

    transaction_id: str
    score: float = Field(ge=0, le=1, description="Fraud probability score.")
    decision: Literal["approve", "review", "decline"]
    thresholds: Thresholds
    reasons: list[str] = Field(description="Top reasons, in words for a fraud analyst.")
    model: ModelRef
    state_age_seconds: StateAge
    features: dict[str, float] | None = Field(
        default=None, description="The feature vector (only with ?explain=true)."
    )
    as_of: AsOf | None = Field(
        default=None, description="Whether the state was newer than the transaction (as-of safety)."
    )
    shadow: ShadowScore | None = Field(
        default=None,
        description="The challenger's score of the same features when a challenger alias exists, else null. "
        "Only `decision` is acted on.",
    )


class BatchScoreResponse(BaseModel):
    results: list[ScoreResponse]
    model: ModelRef


class FieldError(BaseModel):
    field: str = Field(description="The offending field ('amount', '3.event_time' in a batch, '(body)').")
    reason: str


class ValidationErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": [{"field": "amount", "reason": "Input should be >= 0"}]}]}
    )

    detail: list[FieldError]


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"detail": "online store unavailable: Redis store: connection refused", "request_id": "..."}
            ]
        }
    )

    detail: str
    request_id: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "not ready"]
    model: ModelRef | None
    store: str
    missing: list[str] = Field(default_factory=list, description="What is not ready: 'model', 'store'.")
