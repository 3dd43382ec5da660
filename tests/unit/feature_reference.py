"""A slow, obviously correct reference for the feature definitions in docs/model.md.

It recomputes every feature of every transaction from the raw list of earlier events, with no state and
no buckets kept between transactions, so it shares no code with fraudwatch.features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Tx:
    tx_id: str
    ts: float
    card: str
    terminal: str
    amount: float
    country: str | None = None
    channel: str | None = None


@dataclass
class Lab:
    tx_id: str
    terminal: str
    event_ts: float
    reported_ts: float
    is_fraud: bool = True


def _order(txs: list[Tx], labels: list[Lab]) -> list[tuple[str, int]]:
    items = [(t.ts, 0, i, ("tx", i)) for i, t in enumerate(txs)]
    items += [(lab.reported_ts, 1, len(txs) + j, ("label", j)) for j, lab in enumerate(labels)]
    items.sort()
    return [it[3] for it in items]


def reference_features(txs: list[Tx], labels: list[Lab]) -> list[list[float]]:
    out: list[list[float]] = [[] for _ in txs]
    seen_tx: list[Tx] = []
    seen_labels: list[Lab] = []
    for kind, i in _order(txs, labels):
        if kind == "label":
            seen_labels.append(labels[i])
            continue
        t = txs[i]
        out[i] = (
            _tx(t) + _card(t, [p for p in seen_tx if p.card == t.card]) + _terminal(t, seen_tx, seen_labels)
        )
        seen_tx.append(t)
    return out


def _tx(t: Tx) -> list[float]:
    hour = math.floor((t.ts % 86400) / 3600)
    weekday = (math.floor(t.ts / 86400) + 3) % 7
    return [
        t.amount,
        math.log1p(t.amount),
        float(hour),
        float(hour < 6),
        float(weekday >= 5),
        float(t.channel == "ecom"),
        float(t.channel == "atm"),
    ]


def _in(ts: float, now: float, size: int, n: int) -> bool:
    b, cur = math.floor(ts / size), math.floor(now / size)
    return cur - n + 1 <= b <= cur


def _card(t: Tx, prior: list[Tx]) -> list[float]:
    if not prior:
        return [0.0] * 13 + [
            1.0,
            1.0,
            1.0,
            math.log1p(30 * 86400),
            0.0,
            1.0,
            1.0,
            float(bool(t.country)),
            0.0,
            0.0,
        ]
    h1 = [p for p in prior if _in(p.ts, t.ts, 300, 12)]
    d1 = [p for p in prior if _in(p.ts, t.ts, 3600, 24)]
    d7 = [p for p in prior if _in(p.ts, t.ts, 86400, 7)]
    d30 = [p for p in prior if _in(p.ts, t.ts, 86400, 30)]

    def s(xs: list[Tx]) -> float:
        return sum(p.amount for p in xs)

    def mean(xs: list[Tx]) -> float:
        return s(xs) / len(xs) if xs else 0.0

    def mx(xs: list[Tx]) -> float:
        return max((p.amount for p in xs), default=0.0)

    life_mean = s(prior) / len(prior)
    ref_mean = mean(d30) if d30 else life_mean
    ref_max = mx(d30) if d30 else life_mean
    since = min(max(t.ts - max(p.ts for p in prior), 0.0), 30 * 86400)
    recent_terminals: list[str] = []
    for p in reversed(prior):
        if p.terminal not in recent_terminals:
            recent_terminals.append(p.terminal)
    recent_countries: list[str] = []
    for p in reversed(prior):
        if p.country and p.country not in recent_countries:
            recent_countries.append(p.country)
    with_country = [p for p in prior if p.country]
    home = with_country[0].country if with_country else None
    last_country = with_country[-1].country if with_country else None
    changed = bool(t.country and last_country and t.country != last_country and since < 6 * 3600)
    return [
        float(len(h1)),
        float(sum(1 for p in h1 if p.amount < 5.0)),
        s(h1),
        float(len(d1)),
        s(d1),
        mean(d1),
        mx(d1),
        float(len(d7)),
        mean(d7),
        mx(d7),
        float(len(d30)),
        mean(d30),
        mx(d30),
        t.amount / max(ref_mean, 1.0),
        t.amount / max(ref_max, 1.0),
        t.amount / max(life_mean, 1.0),
        math.log1p(since),
        math.log1p(len(prior)),
        0.0,
        float(t.terminal not in recent_terminals[:32]),
        float(bool(t.country) and t.country not in recent_countries[:8]),
        float(changed),
        float(bool(t.country and home and t.country != home)),
    ]


def _terminal(t: Tx, seen_tx: list[Tx], seen_labels: list[Lab]) -> list[float]:
    prior = [p for p in seen_tx if p.terminal == t.terminal]
    frauds: dict[str, Lab] = {}
    for lab in seen_labels:
        if lab.terminal == t.terminal and lab.is_fraud and lab.tx_id not in frauds:
            frauds[lab.tx_id] = lab
    if not prior and not frauds:
        return [0.0] * 13 + [365.0, 1.0]
    d = math.floor(t.ts / 86400)

    def count(lo: int, hi: int) -> int:
        return sum(1 for p in prior if lo <= math.floor(p.ts / 86400) <= hi)

    def fcount(lo: int, hi: int) -> int:
        return sum(1 for lab in frauds.values() if lo <= math.floor(lab.event_ts / 86400) <= hi)

    def risk(lo: int, hi: int) -> float:
        c = count(lo, hi)
        return min(1.0, fcount(lo, hi) / c) if c else 0.0

    dd = d - 7
    last_fraud = max((lab.event_ts for lab in frauds.values()), default=None)
    since = 365.0 if last_fraud is None else min(max((t.ts - last_fraud) / 86400, 0.0), 365.0)
    return [
        float(count(d, d)),
        float(count(d - 6, d)),
        float(count(d - 29, d)),
        float(fcount(d - 6, d)),
        float(fcount(d - 29, d)),
        risk(d - 6, d),
        risk(d - 29, d),
        float(count(dd, dd)),
        float(count(dd - 6, dd)),
        float(count(dd - 29, dd)),
        risk(dd, dd),
        risk(dd - 6, dd),
        risk(dd - 29, dd),
        since,
        0.0 if prior else 1.0,
    ]
