"""Live drift: the rolling window and PSI against a model's training reference."""

from __future__ import annotations

import numpy as np

from fraudwatch.drift import LiveWindow, reference_psi
from fraudwatch.features import FEATURE_NAMES
from fraudwatch.model import Histogram, Reference


def _reference(rng: np.random.Generator) -> Reference:
    amounts = rng.lognormal(3.5, 0.8, 20_000)
    return Reference(
        score_histogram=Histogram.of(rng.beta(1, 30, 20_000)),
        feature_histograms={"amount": Histogram.of(amounts)},
    )


def _rows(rng: np.random.Generator, n: int, mu: float) -> np.ndarray:
    rows = np.zeros((n, len(FEATURE_NAMES)))
    rows[:, FEATURE_NAMES.index("amount")] = rng.lognormal(mu, 0.8, n)
    return rows


def test_same_distribution_has_small_psi_and_a_shift_has_large_psi() -> None:
    rng = np.random.default_rng(7)
    ref = _reference(rng)
    same_score, same = reference_psi(ref, _rows(rng, 5000, 3.5), rng.beta(1, 30, 5000))
    shifted_score, shifted = reference_psi(ref, _rows(rng, 5000, 4.5), rng.beta(2, 5, 5000))
    assert same_score is not None
    assert shifted_score is not None
    assert same["amount"] < 0.05
    assert same_score < 0.05
    assert shifted["amount"] > 0.25
    assert shifted_score > 0.25


def test_window_keeps_only_the_latest_rows() -> None:
    window = LiveWindow(size=100)
    rng = np.random.default_rng(1)
    assert len(window) == 0
    window.add(_rows(rng, 80, 3.0), np.full(80, 0.1))
    window.add(_rows(rng, 80, 3.0), np.full(80, 0.9))
    rows, scores = window.snapshot()
    assert rows.shape == (100, len(FEATURE_NAMES))
    assert scores.tolist() == [0.1] * 20 + [0.9] * 80


def test_reference_without_histograms_gives_no_psi() -> None:
    score_psi, features = reference_psi(Reference(), np.zeros((10, len(FEATURE_NAMES))), np.zeros(10))
    assert score_psi is None
    assert features == {}
