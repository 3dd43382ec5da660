"""The fraudwatch error hierarchy.

FraudwatchError                 base of everything this library raises on purpose
├── ConfigError                 a setting is missing, malformed or unsafe for the environment
├── SchemaError                 an event failed validation (carries the field and the reason)
├── FeatureStateError           entity state cannot be decoded (wrong version, corrupt bytes)
├── ModelError                  a model cannot be loaded, or its metadata is inconsistent
└── StoreError                  the online store cannot be reached or answered badly
    └── StoreUnavailable        the store is down (the API answers 503, never 500)
"""

from __future__ import annotations


class FraudwatchError(Exception):
    """Base class of every error fraudwatch raises on purpose."""


class ConfigError(FraudwatchError):
    """A setting is missing, malformed or unsafe for the environment."""


class SchemaError(FraudwatchError):
    """An event failed validation.

    ``errors`` is a list of ``{"field": "...", "reason": "..."}`` so callers (the dead-letter queue,
    the API's 422 answers) can say exactly what was wrong.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = errors or []


class FeatureStateError(FraudwatchError):
    """Entity state bytes cannot be decoded."""


class ModelError(FraudwatchError):
    """A model cannot be loaded, or its metadata is inconsistent."""


class StoreError(FraudwatchError):
    """The online store failed."""


class StoreUnavailable(StoreError):
    """The online store cannot be reached."""
