"""Scoring: online-store state + the shared feature engine + the served model -> score, decision, reasons.

This is the hot path. The feature rows come from :func:`fraudwatch.features.online_features`: the same
compiled kernels the stream and the training-set builder run, called read-only on the state records read
from the store, straight into one numpy matrix scored with a single ``score_matrix`` call; no pandas. The API
only reads state: it never writes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fraudwatch.drift import LiveWindow
from fraudwatch.events import Transaction
from fraudwatch.features import FEATURE_NAMES, datetime_seconds, online_features
from fraudwatch.store import EntityStates, OnlineStore
from fraudwatch_api.asof import as_of
from fraudwatch_api.metrics import ApiMetrics
from fraudwatch_api.serving import ServingModel

__all__ = ["Scorer", "feature_matrix"]

log = logging.getLogger("fraudwatch_api.scoring")


def feature_matrix(transactions: Sequence[Transaction], states: Sequence[EntityStates]) -> np.ndarray:
    """Feature rows (FEATURE_NAMES order) of transactions given their card/terminal state."""
    if len(transactions) != len(states):
        raise ValueError("one state pair per transaction")
    return online_features(
        [st.card for st in states],
        [st.terminal for st in states],
        [datetime_seconds(tx.event_time) for tx in transactions],
        [tx.amount for tx in transactions],
        [tx.terminal_id for tx in transactions],
        [tx.country for tx in transactions],
        [tx.channel for tx in transactions],
    )


def _age(now: float, updated_at: float | None) -> float | None:
    return None if updated_at is None else max(0.0, now - updated_at)


@dataclass(slots=True)
class Scorer:
    """Scores transactions against the store with a given ServingModel (stateless apart from metrics)."""

    store: OnlineStore
    metrics: ApiMetrics
    drift: LiveWindow

    def score(
        self,
        model: ServingModel,
        transactions: Sequence[Transaction],
        explain: bool = False,
        shadow: ServingModel | None = None,
    ) -> list[dict[str, Any]]:
        n = len(transactions)
        if n == 1:
            tx = transactions[0]
            states = [self.store.get(tx.card_id, tx.terminal_id)]
        else:
            states = self.store.get_many([(tx.card_id, tx.terminal_id) for tx in transactions])
        matrix = feature_matrix(transactions, states)
        scores = model.score(matrix)
        decisions = model.decide(scores)
        self.drift.add(matrix, scores)
        shadows = self._shadow(shadow, matrix, decisions) if shadow is not None else None

        m = self.metrics
        now = time.time()
        thresholds = model.thresholds
        info = model.info
        out: list[dict[str, Any]] = []
        for i, (tx, st) in enumerate(zip(transactions, states, strict=True)):
            score = float(scores[i])
            decision = decisions[i]
            card_age = _age(now, st.card_updated_at)
            term_age = _age(now, st.terminal_updated_at)
            m.score.observe(score)
            (m.decision_counters.get(decision) or m.decisions.labels(decision=decision)).inc()
            if card_age is not None:
                m.age_card.observe(card_age)
            if term_age is not None:
                m.age_terminal.observe(term_age)
            item: dict[str, Any] = {
                "transaction_id": tx.transaction_id,
                "score": score,
                "decision": decision,
                "thresholds": thresholds,
                "reasons": model.explain(matrix[i], tx.country),
                "model": info,
                "state_age_seconds": {"card": card_age, "terminal": term_age},
            }
            # as-of safety: say so (and count it) when the state already holds later events
            stamp = item["as_of"] = as_of(datetime_seconds(tx.event_time), st)
            if stamp["card_newer"]:
                m.newer_card.inc()
            if stamp["terminal_newer"]:
                m.newer_terminal.inc()
            item["shadow"] = shadows[i] if shadows is not None else None
            if explain:
                item["features"] = dict(zip(FEATURE_NAMES, matrix[i].tolist(), strict=True))
            out.append(item)
        return out

    def _shadow(
        self, shadow: ServingModel, matrix: np.ndarray, decisions: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        """The shadow model's score and decision of each row (same features, one more predict), counted.

        Never acted on, and never fails the request: a failure is counted and logged, and the answer carries
        ``shadow: null``.
        """
        try:
            scores = shadow.score(matrix)
            shadow_decisions = shadow.decide(scores)
        except Exception:
            self.metrics.shadow_failures.labels(stage="score").inc()
            log.exception("shadow scoring failed", extra={"fields": shadow.info})
            return None
        m = self.metrics
        out = []
        for score, decision, production in zip(scores.tolist(), shadow_decisions, decisions, strict=True):
            m.shadow_decision_counters[decision].inc()
            if decision != production:
                m.shadow_disagreements.labels(production=production, challenger=decision).inc()
            out.append({"model_version": shadow.version, "score": score, "decision": decision})
        return out
