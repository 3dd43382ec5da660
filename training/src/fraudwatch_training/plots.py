"""Evaluation plots (PR, ROC, thresholds, score distribution, importance) as matplotlib figures."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from fraudwatch.model import Thresholds

__all__ = ["importance_plot", "pr_plot", "roc_plot", "score_plot", "threshold_plot"]


def pr_plot(y: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        p, r, _ = precision_recall_curve(y, s)
        ax.plot(r, p, label=name)
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax.legend()
    return fig


def roc_plot(y: npt.ArrayLike, scores: Mapping[str, npt.ArrayLike]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend()
    return fig


def threshold_plot(y: npt.ArrayLike, score: npt.ArrayLike, thresholds: Thresholds) -> Figure:
    p, r, t = precision_recall_curve(y, score)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(t, p[:-1], label="precision")
    ax.plot(t, r[:-1], label="recall")
    ax.axvline(thresholds.review, color="orange", ls="--", label=f"review {thresholds.review:.3f}")
    ax.axvline(thresholds.decline, color="red", ls="--", label=f"decline {thresholds.decline:.3f}")
    ax.set(xlabel="score threshold", title="Precision and recall vs threshold (validation)")
    ax.legend()
    return fig


def score_plot(y: npt.ArrayLike, score: npt.ArrayLike) -> Figure:
    yt = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6, 5))
    bins = np.linspace(0, 1, 51)
    ax.hist(s[~yt], bins=bins, alpha=0.6, density=True, label="genuine", log=True)
    ax.hist(s[yt], bins=bins, alpha=0.6, density=True, label="fraud", log=True)
    ax.set(xlabel="score", ylabel="density (log)", title="Score distribution (test)")
    ax.legend()
    return fig


def importance_plot(importances: Mapping[str, float], top: int = 20) -> Figure:
    items = sorted(importances.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="drop in average precision when permuted", title="Permutation importance (validation)")
    fig.tight_layout()
    return fig
