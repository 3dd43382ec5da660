"""Detection quality: AUC ROC, average precision, the Handbook's card precision@k, and per-scenario recall."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = ["card_precision_at_k", "evaluate", "recall_per_scenario"]


def card_precision_at_k(
    day: npt.ArrayLike,
    card_id: npt.ArrayLike,
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    k: int = 100,
    remove_detected: bool = True,
) -> float:
    """The Handbook's card precision top-k (``card_precision_top_k`` in its shared_functions.py).

    For each day in increasing order: drop the cards already detected on earlier days; reduce the day to
    one row per card (max score, max label); take the ``k`` cards with the highest score; the day's
    precision is (compromised cards among them) / ``k`` — always divided by ``k``. Detected cards (true
    positives of the top k) are removed from later days. The result is the mean over days.
    """
    frame = pd.DataFrame(
        {"day": np.asarray(day), "card": np.asarray(card_id), "y": np.asarray(y, dtype=np.int64),
         "score": np.asarray(score, dtype=np.float64)}
    )  # fmt: skip
    detected: set[object] = set()
    per_day: list[float] = []
    for _, df_day in frame.groupby("day", sort=True):
        if detected:
            df_day = df_day[~df_day["card"].isin(detected)]
        cards = df_day.groupby("card")[["score", "y"]].max().sort_values("score", ascending=False)
        top = cards.head(k)
        hits = top.index[top["y"] == 1].tolist()
        per_day.append(len(hits) / k)
        if remove_detected:
            detected.update(hits)
    return float(np.mean(per_day)) if per_day else 0.0


def recall_per_scenario(
    scenario: npt.ArrayLike, score: npt.ArrayLike, threshold: float, names: dict[int, str] | None = None
) -> dict[str, float]:
    """Share of each fraud scenario's transactions scored at or above ``threshold``."""
    s = np.asarray(scenario)
    sc = np.asarray(score, dtype=np.float64)
    out: dict[str, float] = {}
    for sid in sorted(int(v) for v in np.unique(s) if v != 0):
        mask = s == sid
        name = (names or {}).get(sid, str(sid))
        out[name] = float((sc[mask] >= threshold).mean())
    return out


def evaluate(
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    day: npt.ArrayLike | None = None,
    card_id: npt.ArrayLike | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
    k: int = 100,
) -> dict[str, float]:
    """AUC ROC, average precision, card precision@k (when days and cards are given), and precision /
    recall / alert rate at each named threshold."""
    yt = np.asarray(y, dtype=np.int64)
    sc = np.asarray(score, dtype=np.float64)
    both = 0 < yt.sum() < len(yt)
    out = {
        "auc_roc": float(roc_auc_score(yt, sc)) if both else float("nan"),
        "average_precision": float(average_precision_score(yt, sc)) if both else float("nan"),
        "fraud_rate": float(yt.mean()) if len(yt) else float("nan"),
    }
    if day is not None and card_id is not None:
        out[f"card_precision_at_{k}"] = card_precision_at_k(day, card_id, yt, sc, k)
    for name, thr in thresholds:
        flagged = sc >= thr
        tp = int((flagged & (yt == 1)).sum())
        out[f"precision_at_{name}"] = tp / int(flagged.sum()) if flagged.any() else float("nan")
        out[f"recall_at_{name}"] = tp / int(yt.sum()) if yt.sum() else float("nan")
        out[f"alert_rate_at_{name}"] = float(flagged.mean()) if len(yt) else float("nan")
    return out
