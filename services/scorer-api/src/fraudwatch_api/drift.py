"""Live drift: population stability index (PSI) of live features and scores vs the training reference.

The model carries, per feature and for the score, the bin edges and the share of training rows in each bin.
The API keeps a bounded rolling window of recent live rows and, every few seconds, bins it with the same
edges and computes PSI = sum((live - ref) * ln(live / ref)). Shares are floored at a small epsilon so that an
empty bin gives a large but finite value.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["DriftWindow", "Reference", "psi"]

EPS = 1e-4


@dataclass(frozen=True)
class Reference:
    """Bin edges and training shares of one variable (edges are the inner cut points, len(shares) = len+1)."""

    edges: np.ndarray
    shares: np.ndarray

    @classmethod
    def from_mapping(cls, value: Mapping[str, Sequence[float]]) -> Reference:
        edges = np.asarray(value["edges"], dtype=np.float64)
        shares = np.asarray(
            value.get("shares") or value.get("fractions") or value.get("counts"), dtype=np.float64
        )
        if shares.sum() > 0:
            shares = shares / shares.sum()
        if len(shares) == len(edges) - 1:
            # full edges given (outer bounds included): use the inner cut points only
            edges = edges[1:-1]
        if len(shares) != len(edges) + 1:
            raise ValueError("reference histogram needs len(shares) == number of inner edges + 1")
        return cls(edges, shares)


def psi(reference: Reference, values: np.ndarray) -> float:
    """PSI of ``values`` against the reference bins (0 = same distribution; > 0.25 = major shift)."""
    if len(values) == 0:
        return 0.0
    idx = np.searchsorted(reference.edges, values, side="right")
    live = np.bincount(idx, minlength=len(reference.shares)).astype(np.float64) / len(values)
    ref = np.maximum(reference.shares, EPS)
    live = np.maximum(live, EPS)
    return float(np.sum((live - ref) * np.log(live / ref)))


class DriftWindow:
    """A bounded window of recent feature rows and scores (thread-safe appends)."""

    def __init__(self, size: int = 5000) -> None:
        self._rows: deque[np.ndarray] = deque(maxlen=size)
        self._scores: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, rows: np.ndarray, scores: np.ndarray) -> None:
        with self._lock:
            self._rows.extend(rows)
            self._scores.extend(scores.tolist())

    def __len__(self) -> int:
        return len(self._scores)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if not self._scores:
                return np.empty((0, 0)), np.empty(0)
            return np.vstack(list(self._rows)), np.asarray(self._scores, dtype=np.float64)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._scores.clear()
