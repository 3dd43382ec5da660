"""Scoring inside Spark: an iterator-of-batches pandas UDF with a per-worker model that follows the alias.

The model is loaded once per Python worker (a module-level holder; Spark reuses its Python workers) and the
registry is asked at most every ``poll_seconds`` which version the alias points at; when it moved, the new
version is loaded between two Arrow batches, never in the middle of one. A registry that cannot be reached
keeps the current model (and is asked again at the next poll).

Shadow scoring: when the registered model has a ``challenger`` alias pointing at another version than the
one serving, the same feature rows are also scored by the challenger (followed the same way) and its version,
score and decision travel next to production's (``challenger_*`` columns) into the authoritative table. The
challenger is never acted on: the scored JSON, alerts and metrics of decisions are production's. Anything
the challenger does wrong (alias lookup, loading, scoring) only leaves its columns null.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from fraudwatch.errors import ModelError
from fraudwatch.features import FEATURE_NAMES
from fraudwatch_stream.records import describe_failure, unpack_features

__all__ = [
    "ALERT_DECISIONS",
    "CHALLENGER_COLUMNS",
    "SCORE_COLUMNS",
    "LoadedModel",
    "ModelConfig",
    "current_challenger",
    "current_model",
    "score_batches",
    "score_transactions",
    "warm_worker",
]

log = logging.getLogger("fraudwatch_stream.scoring")

#: FRAUDWATCH_STREAM_PROFILE=1: a JSON line on the worker's stderr per model load and per worker warm-up
PROFILE = os.environ.get("FRAUDWATCH_STREAM_PROFILE", "") == "1"


def _profile(event: str, **fields: Any) -> None:
    print(
        json.dumps({"event": event, "pid": os.getpid(), **fields}, default=str), file=sys.stderr, flush=True
    )


#: decisions published on fraud.alerts (and explained with reasons)
ALERT_DECISIONS = frozenset({"review", "decline"})
#: the shadow (challenger) model's output, null when there is no challenger or it failed
CHALLENGER_COLUMNS = ("challenger_version", "challenger_score", "challenger_decision")
SCORE_COLUMNS = ("score", "decision", "model_name", "model_version", "value", "error", *CHALLENGER_COLUMNS)
REASONS_KEPT = 3


@dataclass(frozen=True)
class ModelConfig:
    """What a worker needs to find the model (plain values: shipped to the workers by pickling)."""

    tracking_uri: str
    model_uri: str
    model_name: str
    alias: str | None
    poll_seconds: float
    #: alias of the shadow model scored next to production (None: no shadow scoring)
    challenger_alias: str | None = None


@dataclass(frozen=True, eq=False)
class LoadedModel:
    name: str
    version: str
    model: Any  # fraudwatch.model.FraudModel: score_matrix, decide, explain, feature_names, thresholds
    columns: np.ndarray | None  # columns of a FEATURE_NAMES row the model takes (None: all, same order)

    def score(self, matrix: np.ndarray) -> np.ndarray:
        x = matrix if self.columns is None else matrix[:, self.columns]
        return np.asarray(self.model.score_matrix(x), dtype=np.float64)

    def explain(self, row: np.ndarray, country: str | None) -> list[str]:
        x = row if self.columns is None else row[self.columns]
        return list(self.model.explain(x, k=REASONS_KEPT, country=country))


class _Holder:
    model: LoadedModel | None = None
    config: ModelConfig | None = None
    checked_at: float = float("-inf")


_HOLDER = _Holder()
_CHALLENGER = _Holder()
#: MLflow error codes meaning "there is no such alias / model" (anything else: the registry failed)
_ABSENT = frozenset({"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"})


def _client(config: ModelConfig) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


def _resolve(config: ModelConfig) -> tuple[str, str]:
    """(name, version) the configured URI points at now."""
    ref = config.model_uri.removeprefix("models:/")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, str(_client(config).get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    return name, version


def _load(config: ModelConfig, name: str, version: str) -> LoadedModel:
    """Load ``name``/``version``: a registered version from its serving artifact (numpy arrays + JSON, as the
    API does: no sklearn, scipy, skops or mlflow.pyfunc in the worker), else through mlflow.pyfunc (a
    version registered before the artifact existed, or a non-registry URI). Both score through the same
    compiled scorer, so the scores are the same."""
    started = time.perf_counter()
    registered = config.model_uri.startswith("models:/")
    uri = f"models:/{name}/{version}" if registered else config.model_uri
    model: Any = None
    source = "pyfunc"
    if registered:
        from fraudwatch.serving_model import load_registered

        model = load_registered(_client(config), name, version)
        if model is not None:
            source = "serving artifact"
        else:
            log.warning("model %s has no serving artifact: loading it through mlflow.pyfunc", uri)
    if model is None:
        import mlflow

        from fraudwatch.model import load_model

        mlflow.set_tracking_uri(config.tracking_uri)
        mlflow.set_registry_uri(config.tracking_uri)
        model = load_model(uri).model
    names = tuple(getattr(model, "feature_names", ()) or ())
    if not names:
        raise ModelError(f"model {uri} carries no feature_names")
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown:
        raise ModelError(f"model {uri} needs features the shared feature code does not compute: {unknown}")
    columns = None if names == FEATURE_NAMES else np.array([FEATURE_NAMES.index(n) for n in names])
    log.info("loaded model %s version %s from its %s", name, version, source)
    if PROFILE:
        _profile(
            "model_loaded", name=name, version=version, source=source, seconds=time.perf_counter() - started
        )
    return LoadedModel(name=name, version=version, model=model, columns=columns)


def current_model(config: ModelConfig) -> LoadedModel:
    """The worker's model, reloaded when the alias moved (registry asked at most every poll_seconds)."""
    now = time.monotonic()
    held = _HOLDER.model if _HOLDER.config == config else None
    if held is not None and now - _HOLDER.checked_at < config.poll_seconds:
        return held
    try:
        name, version = (
            _resolve(config) if config.model_uri.startswith("models:/") else (config.model_name, "")
        )
    except Exception as exc:
        if held is None:
            raise ModelError(f"cannot resolve {config.model_uri} in {config.tracking_uri}: {exc}") from exc
        log.warning("registry unreachable, keeping model version %s: %s", held.version, exc)
        _HOLDER.checked_at = now
        return held
    if held is None or held.version != version or held.name != name:
        held = _load(config, name, version or "local")
        _HOLDER.model, _HOLDER.config = held, config
    _HOLDER.checked_at = now
    return held


def current_challenger(config: ModelConfig, production: LoadedModel) -> LoadedModel | None:
    """The worker's shadow model, or None (no challenger alias, it points at production's version, or it
    could not be loaded). Asked at most every poll_seconds, like production; never raises.

    A registry outage keeps the current challenger; a missing alias drops it; a version that fails to load is
    retried at the next poll (its columns stay null meanwhile).
    """
    if config.challenger_alias is None or not config.model_uri.startswith("models:/"):
        return None
    now = time.monotonic()
    held = _CHALLENGER.model if _CHALLENGER.config == config else None
    if _CHALLENGER.config != config or now - _CHALLENGER.checked_at >= config.poll_seconds:
        from mlflow.exceptions import MlflowException

        version: str | None = held.version if held is not None else None
        try:
            found = _client(config).get_model_version_by_alias(production.name, config.challenger_alias)
            version = str(found.version)
        except MlflowException as exc:
            if exc.error_code in _ABSENT:
                version = None
            else:
                log.warning("registry unreachable, keeping challenger %s: %s", version, exc)
        except Exception as exc:
            log.warning("registry unreachable, keeping challenger %s: %s", version, exc)
        if version is None:
            held = None
        elif held is None or held.version != version or held.name != production.name:
            try:
                held = _load(config, production.name, version)
            except Exception as exc:  # the shadow model never fails the batch: retried at the next poll
                log.warning("cannot load challenger %s version %s: %s", production.name, version, exc)
                held = None
        _CHALLENGER.model, _CHALLENGER.config, _CHALLENGER.checked_at = held, config, now
    if held is None or (held.name, held.version) == (production.name, production.version):
        return None
    return held


def _shadow(
    config: ModelConfig, production: LoadedModel, matrix: np.ndarray, bad: np.ndarray
) -> tuple[list[str | None], np.ndarray, list[str | None]]:
    """Per row: (challenger version, score, decision), all null where the challenger has no answer.

    Rows production could not score (``bad``) get none either (they are dead letters); a challenger that
    raises leaves the whole batch's shadow columns null.
    """
    n = len(matrix)
    none: list[str | None] = [None] * n
    try:
        challenger = current_challenger(config, production)
        if challenger is None:
            return none, np.full(n, np.nan), none
        scores = np.asarray(challenger.score(np.where(bad[:, None], 0.0, matrix)), dtype=np.float64)
        ok = ~bad & np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0)
        decided = list(challenger.model.decide(np.where(ok, scores, 0.0)))
    except Exception as exc:  # the challenger's failure is never the batch's nor a record's
        log.warning("the challenger failed to score a batch: %s", exc)
        return none, np.full(n, np.nan), none
    keep = ok.tolist()
    versions: list[str | None] = [challenger.version if k else None for k in keep]
    decisions: list[str | None] = [d if k else None for d, k in zip(decided, keep, strict=True)]
    return versions, np.where(ok, scores, np.nan), decisions


def _rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def score_transactions(work: pd.DataFrame, config: ModelConfig) -> pd.DataFrame:
    """Transaction rows with ``cfeat`` and ``tfeat`` -> the same rows with score, decision, model and the
    ScoredTransaction JSON in ``value`` (``payload`` is dropped: ``value`` supersedes it).

    Reasons are computed for the transactions a human will look at (review and decline: the alerts); an
    approved transaction carries an empty list. Explaining costs ~65 µs per row, scoring ~2 µs.

    Per-record isolation: a row whose features or score are not finite, or whose explanation or JSON
    fails, gets ``error`` (and no value) and becomes a dead letter in the sink; the other rows are scored.
    The model failing on the whole matrix is not a record's fault: it raises and fails the batch.
    """
    model = current_model(config)
    matrix = np.hstack((unpack_features(work["cfeat"]), unpack_features(work["tfeat"])))
    bad = ~np.isfinite(matrix).all(axis=1)
    scores = np.asarray(model.score(np.where(bad[:, None], 0.0, matrix)), dtype=np.float64)
    bad |= ~(np.isfinite(scores) & (scores >= 0.0) & (scores <= 1.0))
    scores = np.where(bad, np.nan, scores)
    decisions: list[str | None] = list(model.model.decide(np.where(bad, 0.0, scores)))
    scored_at = _rfc3339_now()
    values: list[str | None] = []
    errors: list[str | None] = []
    for j, (payload, decision) in enumerate(zip(work["payload"].tolist(), decisions, strict=True)):
        if bad[j]:
            values.append(None)
            errors.append("scoring: the features or the score are not finite or out of range")
            decisions[j] = None
            continue
        try:
            record = orjson.loads(payload)
            record.update(
                score=float(scores[j]),
                decision=decision,
                model_name=model.name,
                model_version=model.version,
                reasons=model.explain(matrix[j], record.get("country"))
                if decision in ALERT_DECISIONS
                else [],
                scored_at=scored_at,
            )
            values.append(orjson.dumps(record).decode())
            errors.append(None)
        except Exception as exc:  # this record only: it is dead-lettered, the batch goes on
            values.append(None)
            errors.append(describe_failure("scoring", exc))
            decisions[j] = None
    shadow_version, shadow_scores, shadow_decisions = _shadow(config, model, matrix, bad)
    return work.assign(
        score=scores,
        decision=pd.Series(decisions, index=work.index, dtype=object),
        model_name=model.name,
        model_version=model.version,
        value=pd.Series(values, index=work.index, dtype=object),
        error=pd.Series(errors, index=work.index, dtype=object),
        challenger_version=pd.Series(shadow_version, index=work.index, dtype=object),
        challenger_score=shadow_scores,
        challenger_decision=pd.Series(shadow_decisions, index=work.index, dtype=object),
        payload=None,
    )


def score_batches(batches: Iterator[pd.DataFrame], config: ModelConfig) -> Iterator[pd.DataFrame]:
    """Body of the iterator-of-batches pandas UDF: struct(kind, payload, cfeat, tfeat) -> SCORE_COLUMNS.

    Rows that are not transactions (dead letters, state rows) get nulls; a transaction that could not be
    scored gets ``error`` (the sink dead-letters it).
    """
    for pdf in batches:
        is_tx = (pdf["kind"] == 0).to_numpy()
        out = pd.DataFrame({c: pd.Series([None] * len(pdf), dtype=object) for c in SCORE_COLUMNS})
        if is_tx.any():
            scored = score_transactions(pdf[is_tx], config)
            rows = is_tx.nonzero()[0]
            for c in SCORE_COLUMNS:
                out.loc[rows, c] = scored[c].to_numpy()
        out["score"] = out["score"].astype("float64")
        out["challenger_score"] = out["challenger_score"].astype("float64")
        yield out


def warm_worker(config: ModelConfig) -> dict[str, Any]:
    """Do in this Python worker what its first batch would otherwise do before scoring anything: load the
    feature and tree kernels (numba cache), the model (and the shadow model) and score one row through them.

    The job runs it in every Python worker before its query starts (``StreamJob.start``); Spark reuses its
    Python workers, so the first micro-batch with transactions does not pay for it. Never raises: a model
    that cannot be loaded now fails the first batch with transactions, as it would without the warm-up.
    """
    from fraudwatch.features import warm_up as warm_features
    from fraudwatch.serving_model import warm_up as warm_trees

    started = time.perf_counter()
    out: dict[str, Any] = {"pid": os.getpid(), "version": None, "error": None}
    try:
        warm_features()
        warm_trees()
        model = current_model(config)
        model.score(np.zeros((1, len(FEATURE_NAMES))))
        challenger = current_challenger(config, model)
        if challenger is not None:
            challenger.score(np.zeros((1, len(FEATURE_NAMES))))
        out["version"] = model.version
    except Exception as exc:  # the query reports it at its first batch with transactions
        out["error"] = describe_failure("warm-up", exc)
    out["seconds"] = round(time.perf_counter() - started, 3)
    return out
