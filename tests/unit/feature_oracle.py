"""An independent oracle for the feature definitions: every feature straight from raw history.

For each transaction it looks at the raw earlier events (pandas/numpy window arithmetic on the whole
history, no state carried between transactions) and applies the definitions in docs/model.md. It shares
nothing with the engine but the declarations (windows and bounds in ``fraudwatch.features.spec``): no
kernels, no records, no codes, no hashes.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from fraudwatch.features import spec


def _seconds(values: pd.Series) -> np.ndarray:
    ns = pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]").astype("int64").to_numpy()
    return (ns // 1000) / 1e6


def _text(values: pd.Series | None, n: int) -> list[str | None]:
    if values is None:
        return [None] * n
    return [v if isinstance(v, str) and v else None for v in values.tolist()]


def _distinct_recent(values: list[object], keep: int) -> list[object]:
    out: list[object] = []
    for v in reversed(values):
        if v not in out:
            out.append(v)
            if len(out) == keep:
                break
    return out


def _card_rows(tx: pd.DataFrame, t: np.ndarray) -> np.ndarray:
    n = len(tx)
    names = spec.CARD_FEATURES
    out = np.zeros((n, len(names)))
    col = {name: j for j, name in enumerate(names)}
    amount = tx["amount"].to_numpy(dtype=float)
    cards = tx["card_id"].astype(str).to_numpy()
    terminals = tx["terminal_id"].astype(str).tolist()
    countries = _text(tx.get("country"), n)
    order = np.lexsort((np.arange(n), t))
    for card in np.unique(cards):
        seq = [i for i in order.tolist() if cards[i] == card]  # the card's transactions, processing order
        for j, i in enumerate(seq):
            prev = np.array(seq[:j], dtype=np.int64)
            recent = prev[-spec.CARD_RING :]
            ages = t[i] - t[recent]
            row = out[i]
            for w in spec.CARD_WINDOWS:
                a = amount[recent][(ages >= 0) & (ages < w.window)]
                if w.column == "transactions":
                    value = float(len(a))
                elif w.column == "small_amounts":
                    value = float((a < spec.SMALL_AMOUNT).sum())
                elif w.function == "sum":
                    value = float(a.sum())
                elif w.function == "mean":
                    value = float(a.mean()) if len(a) else 0.0
                else:
                    value = float(a.max()) if len(a) else 0.0
                row[col[w.name]] = value
            c = countries[i]
            if not len(prev):
                row[col["amount_to_card_mean_30d"]] = 1.0
                row[col["amount_to_card_max_30d"]] = 1.0
                row[col["amount_to_card_mean_life"]] = 1.0
                row[col["card_log_seconds_since_prev"]] = math.log1p(spec.NO_PREVIOUS_SECONDS)
                row[col["card_log_count_life"]] = 0.0
                row[col["card_is_new"]] = 1.0
                row[col["card_terminal_is_new"]] = 1.0
                row[col["card_country_is_new"]] = 1.0 if c else 0.0
                continue
            life = amount[prev].mean()
            in30 = recent[(ages >= 0) & (ages < 30 * spec.DAY)]
            mean30 = amount[in30].mean() if len(in30) else life
            max30 = amount[in30].max() if len(in30) else life
            since = min(max(t[i] - t[prev].max(), 0.0), spec.NO_PREVIOUS_SECONDS)
            with_country = [countries[p] for p in prev.tolist() if countries[p]]
            row[col["amount_to_card_mean_30d"]] = amount[i] / max(mean30, spec.RATIO_FLOOR)
            row[col["amount_to_card_max_30d"]] = amount[i] / max(max30, spec.RATIO_FLOOR)
            row[col["amount_to_card_mean_life"]] = amount[i] / max(life, spec.RATIO_FLOOR)
            row[col["card_log_seconds_since_prev"]] = math.log1p(since)
            row[col["card_log_count_life"]] = math.log1p(len(prev))
            row[col["card_is_new"]] = 0.0
            recent_terminals = _distinct_recent(
                [terminals[p] for p in prev.tolist()], spec.CARD_TERMINALS_KEPT
            )
            row[col["card_terminal_is_new"]] = float(terminals[i] not in recent_terminals)
            recent_countries = _distinct_recent(with_country, spec.CARD_COUNTRIES_KEPT)
            row[col["card_country_is_new"]] = float(bool(c) and c not in recent_countries)
            last = with_country[-1] if with_country else None
            changed = bool(c) and last is not None and c != last and since < spec.COUNTRY_CHANGE_SECONDS
            row[col["card_country_changed_6h"]] = float(changed)
            home = with_country[0] if with_country else None
            row[col["card_abroad"]] = float(bool(c) and home is not None and c != home)
    return out


def _accepted_labels(frauds: pd.DataFrame) -> dict[str, list[tuple[float, int, float]]]:
    """Per terminal, the fraud labels that count: (reported, input position, event time), redeliveries out."""
    rep = _seconds(frauds["reported_at"]) if len(frauds) else np.empty(0)
    evt = _seconds(frauds["event_time"]) if len(frauds) else np.empty(0)
    out: dict[str, list[tuple[float, int, float]]] = {}
    recent: dict[str, deque[str]] = {}
    order = np.lexsort((np.arange(len(frauds)), rep))
    ids = frauds["transaction_id"].astype(str).tolist()
    terms = frauds["terminal_id"].astype(str).tolist()
    for j in order.tolist():
        seen = recent.setdefault(terms[j], deque(maxlen=spec.LABEL_IDS_KEPT))
        if ids[j] in seen:
            continue
        seen.append(ids[j])
        out.setdefault(terms[j], []).append((rep[j], j, evt[j]))
    return out


def _terminal_rows(tx: pd.DataFrame, labels: pd.DataFrame | None, t: np.ndarray) -> np.ndarray:
    n = len(tx)
    names = spec.TERMINAL_FEATURES
    col = {name: j for j, name in enumerate(names)}
    out = np.zeros((n, len(names)))
    frauds = (
        labels[labels["is_fraud"].astype(bool)]
        if labels is not None and len(labels)
        else pd.DataFrame({c: [] for c in ("transaction_id", "terminal_id", "event_time", "reported_at")})
    )
    accepted = _accepted_labels(frauds)
    terminals = tx["terminal_id"].astype(str).to_numpy()
    days = np.floor(t / spec.DAY)
    for i in range(n):
        same = terminals == terminals[i]
        earlier = same & ((t < t[i]) | ((t == t[i]) & (np.arange(n) < i)))
        tx_days = days[earlier]
        # a label at its reported_at goes after a transaction at the same instant
        known = [e for r, _, e in accepted.get(terminals[i], []) if r < t[i]]
        fraud_days = np.floor(np.array(known) / spec.DAY) if known else np.empty(0)
        d = days[i]
        row = out[i]
        for w in spec.TERMINAL_WINDOWS:
            hi = d if not w.delay else math.floor((t[i] - w.delay) / spec.DAY) - 1
            lo = hi - w.days + 1
            n_tx = int(((tx_days >= lo) & (tx_days <= hi)).sum())
            n_fraud = int(((fraud_days >= lo) & (fraud_days <= hi)).sum())
            if w.function == "risk":
                row[col[w.name]] = min(1.0, n_fraud / n_tx) if n_tx else 0.0
            else:
                row[col[w.name]] = float(n_tx if w.column == "transactions" else n_fraud)
        row[col["terminal_days_since_fraud"]] = (
            min(max((t[i] - max(known)) / spec.DAY, 0.0), spec.NO_FRAUD_DAYS) if known else spec.NO_FRAUD_DAYS
        )
        row[col["terminal_is_new"]] = 0.0 if earlier.any() else 1.0
    return out


def _tx_rows(tx: pd.DataFrame) -> np.ndarray:
    when = pd.to_datetime(tx["event_time"], utc=True)
    amount = tx["amount"].to_numpy(dtype=float)
    channel = _text(tx.get("channel"), len(tx))
    hour = when.dt.hour.to_numpy().astype(float)
    return np.column_stack(
        [
            amount,
            np.log1p(amount),
            hour,
            (hour < 6).astype(float),
            (when.dt.dayofweek.to_numpy() >= 5).astype(float),
            np.array([c == "ecom" for c in channel], dtype=float),
            np.array([c == "atm" for c in channel], dtype=float),
        ]
    )


def oracle_features(tx: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every transaction's features (FEATURE_NAMES columns, the input's row order) from raw history."""
    tx = tx.reset_index(drop=True)
    t = _seconds(tx["event_time"])
    values = np.hstack([_tx_rows(tx), _card_rows(tx, t), _terminal_rows(tx, labels, t)])
    return pd.DataFrame(values, columns=list(spec.FEATURE_NAMES))
