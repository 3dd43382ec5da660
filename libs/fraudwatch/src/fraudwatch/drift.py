"""Live drift against the training reference: a bounded window of recent rows and its PSI per feature.

The model carries histograms of the score and of key features from its training data
(:class:`fraudwatch.model.Reference`); a service keeps the latest live rows here and periodically exports
``fraudwatch_feature_psi`` / ``fraudwatch_score_psi`` computed with
:func:`fraudwatch.model.population_stability_index`.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import numpy.typing as npt

from fraudwatch.features import FEATURE_NAMES
from fraudwatch.serving_model import Reference, population_stability_index

__all__ = ["LiveWindow", "reference_psi"]


class LiveWindow:
    """The latest ``size`` feature rows and scores (thread-safe)."""

    def __init__(self, size: int = 5000) -> None:
        self._rows: deque[npt.NDArray[np.float64]] = deque(maxlen=size)
        self._scores: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, rows: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]) -> None:
        with self._lock:
            self._rows.extend(np.asarray(rows, dtype=np.float64))
            self._scores.extend(np.asarray(scores, dtype=np.float64).tolist())

    def __len__(self) -> int:
        return len(self._scores)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._scores.clear()

    def snapshot(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        with self._lock:
            if not self._scores:
                return np.empty((0, len(FEATURE_NAMES))), np.empty(0)
            return np.vstack(list(self._rows)), np.asarray(self._scores, dtype=np.float64)


def reference_psi(
    reference: Reference, rows: npt.NDArray[np.float64], scores: npt.NDArray[np.float64]
) -> tuple[float | None, dict[str, float]]:
    """PSI of the live scores and of every feature the reference has a histogram for."""
    score_psi = (
        population_stability_index(reference.score_histogram, scores)
        if reference.score_histogram is not None and len(scores)
        else None
    )
    features: dict[str, float] = {}
    if len(rows):
        for name, hist in reference.feature_histograms.items():
            if name in FEATURE_NAMES:
                features[name] = population_stability_index(hist, rows[:, FEATURE_NAMES.index(name)])
    return score_psi, features
