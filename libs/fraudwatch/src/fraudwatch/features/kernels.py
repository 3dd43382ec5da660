"""The compiled kernels (numba, nopython, cached): features of a time-ordered block of events from the
states of the entities they touch, updating those states in place.

One kernel per entity, because the stream computes card and terminal features in different stages:

* :func:`card_kernel` — transaction + card features of transactions, in the order given;
* :func:`terminal_kernel` — terminal features of transactions, interleaved with fraud labels (the caller
  orders the block by (time, kind): a transaction at its event_time before a label at its reported_at).

Each event's features come from its entity's record *before* the event. With ``update`` false the records
are only read (the API: features of transactions against stored state). The window programme (which
aggregate of which window goes to which column) is built from :mod:`.spec` by :mod:`.engine`; the kernels
know no feature names. Compiled code is cached on disk (``cache=True``: next to this module, or in
``NUMBA_CACHE_DIR``), so a process loads it instead of compiling it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

__all__ = [
    "CARD_DERIVED_COLUMNS",
    "P_COUNTRY_CHANGE",
    "P_FIRST_TERMINAL",
    "P_NO_FRAUD_DAYS",
    "P_NO_PREVIOUS",
    "P_RATIO_FLOOR",
    "P_REF_SPAN",
    "P_SMALL_AMOUNT",
    "STAT_COUNT",
    "STAT_FRAUDS",
    "STAT_MAX",
    "STAT_MEAN",
    "STAT_RISK",
    "STAT_SMALL",
    "STAT_SUM",
    "TX_COLUMNS",
    "card_kernel",
    "online_kernel",
    "terminal_kernel",
]

STAT_COUNT = 0  # card: transactions; terminal: transactions
STAT_SMALL = 1  # card: transactions under the small amount
STAT_FRAUDS = 1  # terminal: reported frauds
STAT_SUM = 2
STAT_MEAN = 3
STAT_MAX = 4
STAT_RISK = 5  # terminal: frauds / transactions, capped at 1

# positions in the float ``params`` vector the engine builds from the declarations
P_SMALL_AMOUNT = 0
P_RATIO_FLOOR = 1
P_NO_PREVIOUS = 2
P_COUNTRY_CHANGE = 3
P_NO_FRAUD_DAYS = 4
P_REF_SPAN = 5  # index in ``spans`` of the window the amount ratios compare with
P_FIRST_TERMINAL = 6  # online_kernel: the column of the first terminal feature

#: columns the card kernel writes besides the card windows: 7 transaction features before them, 10 after
TX_COLUMNS = 7
CARD_DERIVED_COLUMNS = 10

_DAY = 86400.0
_HOUR = 3600.0
_NO_DAY = np.iinfo(np.int32).min


@njit(cache=True, inline="always")
def _lru_push(arr: Any, n: int, value: Any) -> Any:
    """Move ``value`` to the end of the first ``n`` slots of ``arr`` (evicting the oldest when full)."""
    cap = arr.shape[0]
    m = np.int64(n)
    pos = -1
    for j in range(m):
        if arr[j] == value:
            pos = j
            break
    if pos >= 0:
        for j in range(pos, m - 1):
            arr[j] = arr[j + 1]
        m -= 1
    elif m == cap:
        for j in range(m - 1):
            arr[j] = arr[j + 1]
        m -= 1
    arr[m] = value
    return m + 1


@njit(cache=True, inline="always")
def _card_one(
    st: Any,
    t: float,
    a: float,
    tk: Any,
    c: Any,
    ch: Any,
    spans: Any,
    prog: Any,
    params: Any,
    update: bool,
    o: Any,
    cnt: Any,
    small: Any,
    total: Any,
    top: Any,
) -> None:
    """Features of one transaction from its card's record (into ``o[0:]``), then (``update``) take it in."""
    n_spans = spans.shape[0]
    n_prog = prog.shape[0]
    hour = math.floor((t % _DAY) / _HOUR)
    weekday = (math.floor(t / _DAY) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    o[0] = a
    o[1] = math.log1p(a)
    o[2] = hour
    o[3] = 1.0 if hour < 6 else 0.0
    o[4] = 1.0 if weekday >= 5 else 0.0
    o[5] = 1.0 if ch == 2 else 0.0
    o[6] = 1.0 if ch == 3 else 0.0

    small_amount = params[P_SMALL_AMOUNT]
    for s in range(n_spans):
        cnt[s] = 0.0
        small[s] = 0.0
        total[s] = 0.0
        top[s] = 0.0
    for j in range(st.ring_len):
        age = t - st.ring_ts[j]
        if age < 0.0:
            continue  # a later transaction processed earlier (out of order): not "earlier"
        am = st.ring_amount[j]
        for s in range(n_spans):
            if age < spans[s]:
                cnt[s] += 1.0
                total[s] += am
                if am < small_amount:
                    small[s] += 1.0
                if am > top[s]:
                    top[s] = am
    for p in range(n_prog):
        s = prog[p, 0]
        stat = prog[p, 1]
        if stat == STAT_COUNT:
            v = cnt[s]
        elif stat == STAT_SMALL:
            v = small[s]
        elif stat == STAT_SUM:
            v = total[s]
        elif stat == STAT_MEAN:
            v = total[s] / cnt[s] if cnt[s] > 0 else 0.0
        else:
            v = top[s]
        o[7 + p] = v

    b = 7 + n_prog
    n_life = st.n_life
    ratio_floor = params[P_RATIO_FLOOR]
    no_previous = params[P_NO_PREVIOUS]
    if n_life == 0:
        o[b] = 1.0
        o[b + 1] = 1.0
        o[b + 2] = 1.0
        o[b + 3] = math.log1p(no_previous)
        o[b + 4] = 0.0
        o[b + 5] = 1.0
        o[b + 6] = 1.0
        o[b + 7] = 1.0 if c != 0 else 0.0
        o[b + 8] = 0.0
        o[b + 9] = 0.0
    else:
        ref = int(params[P_REF_SPAN])
        mean_life = st.sum_life / n_life
        if cnt[ref] > 0:
            ref_mean = total[ref] / cnt[ref]
            ref_max = top[ref]
        else:
            ref_mean = mean_life
            ref_max = mean_life
        since = min(max(t - st.last_ts, 0.0), no_previous)
        country_new = 0.0
        if c != 0:
            country_new = 1.0
            for j in range(st.n_countries):
                if st.countries[j] == c:
                    country_new = 0.0
                    break
        terminal_new = 1.0
        for j in range(st.n_terminals):
            if st.terminals[j] == tk:
                terminal_new = 0.0
                break
        o[b] = a / max(ref_mean, ratio_floor)
        o[b + 1] = a / max(ref_max, ratio_floor)
        o[b + 2] = a / max(mean_life, ratio_floor)
        o[b + 3] = math.log1p(since)
        o[b + 4] = math.log1p(n_life)
        o[b + 5] = 0.0
        o[b + 6] = terminal_new
        o[b + 7] = country_new
        changed = (
            c != 0 and st.last_country != 0 and c != st.last_country and since < params[P_COUNTRY_CHANGE]
        )
        o[b + 8] = 1.0 if changed else 0.0
        o[b + 9] = 1.0 if (c != 0 and st.home_country != 0 and c != st.home_country) else 0.0

    if not update:
        return
    ring = st.ring_ts.shape[0]
    h = st.ring_head
    st.ring_ts[h] = t
    st.ring_amount[h] = a
    st.ring_head = (h + 1) % ring
    if st.ring_len < ring:
        st.ring_len += 1
    if n_life == 0 or t >= st.last_ts:
        st.last_ts = t
        if c != 0:
            st.last_country = c
    st.n_life = n_life + 1
    st.sum_life += a
    if c != 0:
        if st.home_country == 0:
            st.home_country = c
        st.n_countries = _lru_push(st.countries, st.n_countries, c)
    st.n_terminals = _lru_push(st.terminals, st.n_terminals, tk)


@njit(cache=True)
def card_kernel(
    states: Any,
    rows: Any,
    ts: Any,
    amount: Any,
    tkey: Any,
    country: Any,
    channel: Any,
    spans: Any,
    prog: Any,
    params: Any,
    update: bool,
    out: Any,
) -> None:
    """out[k] = transaction + card features of transaction k (see spec.FEATURE_NAMES); then update.

    ``spans`` are the distinct card windows (seconds); ``prog[p] = (span index, STAT_*)`` is what goes to
    card window column ``p``; ``params`` the scalar constants (``P_*``).
    """
    n_spans = spans.shape[0]
    cnt = np.zeros(n_spans)
    small = np.zeros(n_spans)
    total = np.zeros(n_spans)
    top = np.zeros(n_spans)
    for k in range(rows.shape[0]):
        _card_one(
            states[rows[k]],
            ts[k],
            amount[k],
            tkey[k],
            country[k],
            channel[k],
            spans,
            prog,
            params,
            update,
            out[k],
            cnt,
            small,
            total,
            top,
        )


@njit(cache=True, inline="always")
def _tile_add(st: Any, day: int, transactions: int, frauds: int) -> None:
    """Add to the tile of ``day`` (advancing the newest day; a day older than the tiles kept is dropped)."""
    tiles = st.tile_day.shape[0]
    newest = st.tile_newest
    if newest == _NO_DAY or day > newest:
        newest = day
        st.tile_newest = day
    if day <= newest - tiles:
        return
    slot = day % tiles
    if st.tile_day[slot] != day:
        st.tile_day[slot] = day
        st.tile_count[slot] = 0
        st.tile_fraud[slot] = 0
    st.tile_count[slot] += transactions
    st.tile_fraud[slot] += frauds


@njit(cache=True, inline="always")
def _terminal_label(st: Any, h: Any, ev: float) -> None:
    """Apply a fraud label (hash of its transaction id, its event time) unless it is in the dedup ring."""
    for j in range(st.label_len):
        if st.label_hashes[j] == h:
            return
    cap = st.label_hashes.shape[0]
    st.label_hashes[st.label_head] = h
    st.label_head = (st.label_head + 1) % cap
    if st.label_len < cap:
        st.label_len += 1
    _tile_add(st, math.floor(ev / _DAY), 0, 1)
    if ev > st.last_fraud_ts:
        st.last_fraud_ts = ev


@njit(cache=True, inline="always")
def _terminal_one(
    st: Any, t: float, win: Any, win_delay: Any, no_fraud_days: float, update: bool, o: Any
) -> None:
    """Terminal features of one transaction (into ``o[0:]``), then (``update``) count it."""
    n_win = win.shape[0]
    d = math.floor(t / _DAY)
    tiles = st.tile_day.shape[0]
    for w in range(n_win):
        # undelayed: up to the current day; delayed: the latest day that ended >= delay ago
        hi = math.floor((t - win_delay[w]) / _DAY) - 1 if win_delay[w] > 0.0 else d
        lo = hi - win[w, 0] + 1
        n_tx = 0
        n_fraud = 0
        for day in range(lo, hi + 1):
            slot = day % tiles
            if st.tile_day[slot] == day:
                n_tx += st.tile_count[slot]
                n_fraud += st.tile_fraud[slot]
        stat = win[w, 1]
        if stat == STAT_COUNT:
            o[w] = n_tx
        elif stat == STAT_FRAUDS:
            o[w] = n_fraud
        else:
            o[w] = min(1.0, n_fraud / n_tx) if n_tx > 0 else 0.0
    if st.last_fraud_ts > -np.inf:
        o[n_win] = min(max((t - st.last_fraud_ts) / _DAY, 0.0), no_fraud_days)
    else:
        o[n_win] = no_fraud_days
    o[n_win + 1] = 1.0 if st.n_life == 0 else 0.0
    if update:
        _tile_add(st, d, 1, 0)
        st.n_life += 1


@njit(cache=True)
def terminal_kernel(
    states: Any,
    rows: Any,
    kind: Any,
    ts: Any,
    label_hash: Any,
    label_event_ts: Any,
    win: Any,
    win_delay: Any,
    params: Any,
    update: bool,
    out: Any,
) -> None:
    """Terminal features of the transactions (kind 0) of a block that also holds fraud labels (kind 1).

    ``out`` has one row per transaction, in block order. ``win[w] = (days, STAT_*)`` and ``win_delay[w]``
    (seconds) describe terminal window column ``w``. A label adds its fraud to the tile of its transaction's
    day unless its transaction-id hash is in the terminal's dedup ring (a redelivery).
    """
    no_fraud_days = params[P_NO_FRAUD_DAYS]
    i = 0
    for k in range(rows.shape[0]):
        st = states[rows[k]]
        if kind[k] != 0:
            if update:
                _terminal_label(st, label_hash[k], label_event_ts[k])
            continue
        _terminal_one(st, ts[k], win, win_delay, no_fraud_days, update, out[i])
        i += 1


@njit(cache=True)
def online_kernel(
    cards: Any,
    terminals: Any,
    ts: Any,
    amount: Any,
    tkey: Any,
    country: Any,
    channel: Any,
    spans: Any,
    prog: Any,
    win: Any,
    win_delay: Any,
    params: Any,
    out: Any,
) -> None:
    """Read only: ``out[k]`` = the whole feature vector of transaction k from ``cards[k]`` and
    ``terminals[k]`` (the API: one call, one dispatch, for both entities)."""
    n_spans = spans.shape[0]
    cnt = np.zeros(n_spans)
    small = np.zeros(n_spans)
    total = np.zeros(n_spans)
    top = np.zeros(n_spans)
    first = int(params[P_FIRST_TERMINAL])
    no_fraud_days = params[P_NO_FRAUD_DAYS]
    for k in range(ts.shape[0]):
        o = out[k]
        _card_one(
            cards[k],
            ts[k],
            amount[k],
            tkey[k],
            country[k],
            channel[k],
            spans,
            prog,
            params,
            False,
            o,
            cnt,
            small,
            total,
            top,
        )
        _terminal_one(terminals[k], ts[k], win, win_delay, no_fraud_days, False, o[first:])
