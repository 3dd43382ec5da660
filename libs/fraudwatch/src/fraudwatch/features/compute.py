"""The one feature implementation: feature blocks over (transaction, entity state) and state updates.

Every consumer calls these functions: the offline training-set builder (:mod:`.offline`) replays history
through them, the stream job calls the ``*_step`` functions inside Spark state, and the API calls the
read-only ``*_block`` functions on state read from the online store. Features of a transaction are always
computed from the state *before* that transaction, so a transaction never sees itself or its own label.

Times are epoch seconds computed as integer microseconds / 1e6 (what ``datetime.timestamp()`` and
``Timestamp.value // 1000 / 1e6`` both give), so every path sees bit-identical inputs.
"""

from __future__ import annotations

import math

from fraudwatch.features.state import (
    CARD_COUNTRIES_KEPT,
    CARD_DAYS_KEPT,
    CARD_HOURS_KEPT,
    CARD_M5_KEPT,
    CARD_TERMINALS_KEPT,
    DAY,
    HOUR,
    LABEL_IDS_KEPT,
    M5,
    SMALL_AMOUNT,
    TERMINAL_DAYS_KEPT,
    CardState,
    TerminalState,
    terminal_key,
)

__all__ = [
    "CARD_FEATURES",
    "FEATURE_NAMES",
    "TERMINAL_FEATURES",
    "TX_FEATURES",
    "apply_label",
    "card_block",
    "card_step",
    "feature_vector",
    "terminal_block",
    "terminal_step",
    "update_card",
    "update_terminal",
]

TX_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "hour_of_day",
    "is_night",
    "is_weekend",
    "is_ecom",
    "is_atm",
)
CARD_FEATURES: tuple[str, ...] = (
    "card_count_1h",
    "card_small_count_1h",
    "card_sum_amount_1h",
    "card_count_1d",
    "card_sum_amount_1d",
    "card_mean_amount_1d",
    "card_max_amount_1d",
    "card_count_7d",
    "card_mean_amount_7d",
    "card_max_amount_7d",
    "card_count_30d",
    "card_mean_amount_30d",
    "card_max_amount_30d",
    "amount_to_card_mean_30d",
    "amount_to_card_max_30d",
    "amount_to_card_mean_life",
    "card_log_seconds_since_prev",
    "card_log_count_life",
    "card_is_new",
    "card_terminal_is_new",
    "card_country_is_new",
    "card_country_changed_6h",
    "card_abroad",
)
TERMINAL_FEATURES: tuple[str, ...] = (
    "terminal_count_1d",
    "terminal_count_7d",
    "terminal_count_30d",
    "terminal_fraud_count_7d",
    "terminal_fraud_count_30d",
    "terminal_risk_7d",
    "terminal_risk_30d",
    "terminal_count_delayed_1d",
    "terminal_count_delayed_7d",
    "terminal_count_delayed_30d",
    "terminal_risk_delayed_1d",
    "terminal_risk_delayed_7d",
    "terminal_risk_delayed_30d",
    "terminal_days_since_fraud",
    "terminal_is_new",
)
FEATURE_NAMES: tuple[str, ...] = TX_FEATURES + CARD_FEATURES + TERMINAL_FEATURES

NO_PREVIOUS_SECONDS = 30.0 * DAY  # "time since previous transaction" of a card never seen
NO_FRAUD_DAYS = 365.0  # "days since the terminal's latest reported fraud" when it never had one
RATIO_FLOOR = 1.0  # amounts are compared with averages floored at 1 currency unit (no blow-ups near 0)
COUNTRY_CHANGE_SECONDS = 6 * HOUR
DELAY_DAYS = 7  # the Handbook's feedback delay for the delayed terminal windows


def _tx_block(ts: float, amount: float, channel: str | None) -> list[float]:
    seconds_of_day = ts % DAY
    hour = float(int(seconds_of_day // HOUR))
    weekday = (int(ts // DAY) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return [
        amount,
        math.log1p(amount),
        hour,
        1.0 if hour < 6 else 0.0,
        1.0 if weekday >= 5 else 0.0,
        1.0 if channel == "ecom" else 0.0,
        1.0 if channel == "atm" else 0.0,
    ]


def card_block(
    state: CardState | None,
    ts: float,
    amount: float,
    terminal_id: str,
    country: str | None,
    channel: str | None,
) -> list[float]:
    """Transaction and card features for one transaction, from the card's state before it (read only)."""
    out = _tx_block(ts, amount, channel)
    if state is None or state.n_life == 0:
        out.extend(
            [
                0.0, 0.0, 0.0,  # 1 h
                0.0, 0.0, 0.0, 0.0,  # 1 d
                0.0, 0.0, 0.0,  # 7 d
                0.0, 0.0, 0.0,  # 30 d
                1.0, 1.0, 1.0,  # ratios: neutral
                math.log1p(NO_PREVIOUS_SECONDS),
                0.0,
                1.0,  # card_is_new
                1.0,  # terminal new for card
                1.0 if country else 0.0,
                0.0,
                0.0,
            ]
        )  # fmt: skip
        return out

    m = int(ts // M5)
    c1h = s1h = 0.0
    small1h = 0.0
    lo = m - CARD_M5_KEPT + 1
    for i, n, s, _, sm in state.m5:
        if lo <= i <= m:
            c1h += n
            s1h += s
            small1h += sm

    h = int(ts // HOUR)
    c1d = s1d = mx1d = 0.0
    lo = h - CARD_HOURS_KEPT + 1
    for i, n, s, mx, _ in state.hours:
        if lo <= i <= h:
            c1d += n
            s1d += s
            if mx > mx1d:
                mx1d = mx

    d = int(ts // DAY)
    c7 = s7 = mx7 = c30 = s30 = mx30 = 0.0
    lo7 = d - 6
    lo30 = d - CARD_DAYS_KEPT + 1
    for i, n, s, mx, _ in state.days:
        if lo30 <= i <= d:
            c30 += n
            s30 += s
            if mx > mx30:
                mx30 = mx
            if i >= lo7:
                c7 += n
                s7 += s
                if mx > mx7:
                    mx7 = mx

    mean1d = s1d / c1d if c1d else 0.0
    mean7 = s7 / c7 if c7 else 0.0
    mean30 = s30 / c30 if c30 else 0.0
    mean_life = state.sum_life / state.n_life
    ref_mean = mean30 if c30 else mean_life
    ref_max = mx30 if c30 else mean_life
    since = ts - state.last_ts if state.last_ts >= 0 else NO_PREVIOUS_SECONDS
    since = min(max(since, 0.0), NO_PREVIOUS_SECONDS)
    country_is_new = 1.0 if country and country not in state.countries else 0.0
    changed = (
        1.0
        if country and state.last_country and country != state.last_country and since < COUNTRY_CHANGE_SECONDS
        else 0.0
    )
    abroad = 1.0 if country and state.home_country and country != state.home_country else 0.0
    out.extend(
        [
            c1h,
            small1h,
            s1h,
            c1d,
            s1d,
            mean1d,
            mx1d,
            c7,
            mean7,
            mx7,
            c30,
            mean30,
            mx30,
            amount / max(ref_mean, RATIO_FLOOR),
            amount / max(ref_max, RATIO_FLOOR),
            amount / max(mean_life, RATIO_FLOOR),
            math.log1p(since),
            math.log1p(state.n_life),
            0.0,
            0.0 if terminal_key(terminal_id) in state.terminals else 1.0,
            country_is_new,
            changed,
            abroad,
        ]
    )
    return out


def terminal_block(state: TerminalState | None, ts: float) -> list[float]:
    """Terminal features for a transaction at ``ts``, from the terminal's state before it (read only).

    Fraud counts use only labels already applied to the state, i.e. reported before the transaction.
    """
    if state is None or (state.n_life == 0 and not state.days):
        return [0.0] * 13 + [NO_FRAUD_DAYS, 1.0]
    d = int(ts // DAY)
    c1 = c7 = c30 = f7 = f30 = 0
    dc1 = dc7 = dc30 = df1 = df7 = df30 = 0
    dd = d - DELAY_DAYS
    for i, n, f in state.days:
        if i > d:
            continue
        if i >= d - 29:
            c30 += n
            f30 += f
            if i >= d - 6:
                c7 += n
                f7 += f
                if i == d:
                    c1 += n
        if dd - 29 <= i <= dd:
            dc30 += n
            df30 += f
            if i >= dd - 6:
                dc7 += n
                df7 += f
                if i == dd:
                    dc1 += n
                    df1 += f
    since_fraud = (ts - state.last_fraud_ts) / DAY if state.last_fraud_ts >= 0 else NO_FRAUD_DAYS
    since_fraud = min(max(since_fraud, 0.0), NO_FRAUD_DAYS)
    return [
        float(c1),
        float(c7),
        float(c30),
        float(f7),
        float(f30),
        min(1.0, f7 / c7) if c7 else 0.0,
        min(1.0, f30 / c30) if c30 else 0.0,
        float(dc1),
        float(dc7),
        float(dc30),
        min(1.0, df1 / dc1) if dc1 else 0.0,
        min(1.0, df7 / dc7) if dc7 else 0.0,
        min(1.0, df30 / dc30) if dc30 else 0.0,
        since_fraud,
        0.0 if state.n_life else 1.0,
    ]


def feature_vector(
    card_state: CardState | None,
    terminal_state: TerminalState | None,
    ts: float,
    amount: float,
    terminal_id: str,
    country: str | None,
    channel: str | None,
) -> list[float]:
    """The whole feature vector (in FEATURE_NAMES order) of one transaction, read only."""
    return card_block(card_state, ts, amount, terminal_id, country, channel) + terminal_block(
        terminal_state, ts
    )


def _add_bucket(buckets: list[list[float]], idx: int, keep: int, amount: float, small: int) -> None:
    newest = int(buckets[-1][0]) if buckets else idx
    lo = max(idx, newest) - keep + 1
    if buckets and buckets[0][0] < lo:
        buckets[:] = [b for b in buckets if b[0] >= lo]
    if idx < lo:
        return  # older than the window kept: only lifetime aggregates change
    for pos in range(len(buckets) - 1, -1, -1):
        b = buckets[pos]
        if b[0] == idx:
            b[1] += 1
            b[2] += amount
            if amount > b[3]:
                b[3] = amount
            b[4] += small
            return
        if b[0] < idx:
            buckets.insert(pos + 1, [idx, 1, amount, amount, small])
            return
    buckets.insert(0, [idx, 1, amount, amount, small])


def update_card(
    state: CardState, ts: float, amount: float, terminal_id: str, country: str | None
) -> CardState:
    """Add one transaction to a card's state (in place; returns it)."""
    small = 1 if amount < SMALL_AMOUNT else 0
    _add_bucket(state.m5, int(ts // M5), CARD_M5_KEPT, amount, small)
    _add_bucket(state.hours, int(ts // HOUR), CARD_HOURS_KEPT, amount, small)
    _add_bucket(state.days, int(ts // DAY), CARD_DAYS_KEPT, amount, small)
    state.n_life += 1
    state.sum_life += amount
    if ts >= state.last_ts:
        state.last_ts = ts
        if country:
            state.last_country = country
    if country:
        if not state.home_country:
            state.home_country = country
        if country in state.countries:
            state.countries.remove(country)
        state.countries.append(country)
        if len(state.countries) > CARD_COUNTRIES_KEPT:
            del state.countries[0]
    key = terminal_key(terminal_id)
    if key in state.terminals:
        state.terminals.remove(key)
    state.terminals.append(key)
    if len(state.terminals) > CARD_TERMINALS_KEPT:
        del state.terminals[0]
    return state


def _terminal_bucket(state: TerminalState, day: int, create: bool) -> list[int] | None:
    days = state.days
    newest = days[-1][0] if days else day
    lo = max(day, newest) - TERMINAL_DAYS_KEPT + 1
    if days and days[0][0] < lo:
        days[:] = [b for b in days if b[0] >= lo]
    if day < lo:
        return None
    for pos in range(len(days) - 1, -1, -1):
        b = days[pos]
        if b[0] == day:
            return b
        if b[0] < day:
            if not create:
                return None
            nb = [day, 0, 0]
            days.insert(pos + 1, nb)
            return nb
    if not create:
        return None
    nb = [day, 0, 0]
    days.insert(0, nb)
    return nb


def update_terminal(state: TerminalState, ts: float) -> TerminalState:
    """Add one transaction to a terminal's state (in place; returns it)."""
    b = _terminal_bucket(state, int(ts // DAY), create=True)
    if b is not None:
        b[1] += 1
    state.n_life += 1
    if ts > state.last_ts:
        state.last_ts = ts
    return state


def apply_label(state: TerminalState, transaction_id: str, event_ts: float, is_fraud: bool) -> TerminalState:
    """Apply a reported label to the terminal of its transaction (in place; returns it).

    Genuine labels change nothing; a label already applied (redelivered) is not counted twice.
    """
    if not is_fraud or transaction_id in state.label_ids:
        return state
    state.label_ids.append(transaction_id)
    if len(state.label_ids) > LABEL_IDS_KEPT:
        del state.label_ids[0]
    b = _terminal_bucket(state, int(event_ts // DAY), create=True)
    if b is not None:
        b[2] += 1
    if event_ts > state.last_fraud_ts:
        state.last_fraud_ts = event_ts
    return state


def card_step(
    state: CardState,
    ts: float,
    amount: float,
    terminal_id: str,
    country: str | None,
    channel: str | None,
) -> list[float]:
    """Card features of a transaction, then the card's state updated with it (stream and replay)."""
    out = card_block(state, ts, amount, terminal_id, country, channel)
    update_card(state, ts, amount, terminal_id, country)
    return out


def terminal_step(state: TerminalState, ts: float) -> list[float]:
    """Terminal features of a transaction, then the terminal's state updated with it (stream and replay)."""
    out = terminal_block(state, ts)
    update_terminal(state, ts)
    return out
