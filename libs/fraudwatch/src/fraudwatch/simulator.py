"""Transaction simulator: a card/terminal population, genuine behaviour and five labelled fraud scenarios.

It writes history for training (:func:`simulate`, ``python -m fraudwatch.simulator``) and feeds the live
producer (:class:`LiveSimulator`) from the same population and scenario code. Everything is vectorised with
numpy and deterministic for a seed.

Population
    Cards: home country (European countries, weighted) and a 2-D location in km around its centroid, a
    spending profile (amounts are lognormal with per-card ``mu``/``sigma``), an activity rate (transactions
    per day), usual hours (a per-card peak hour and spread; 10 % of activity is spread over the whole day) and
    an e-commerce share. Terminals: location, country (10 % outside Europe), merchant category and channel
    (pos, atm, ecom). Each card shops at 12 physical terminals chosen with a preference for nearby ones
    (Gumbel top-k on distance / 25 km) and 4 e-commerce merchants, with Dirichlet preference weights.

Genuine behaviour
    Daily counts are Poisson(rate x weekday factor x the card's own weekend factor); weekday factors
    (Mon..Sun) are 0.95, 0.95, 1.0, 1.05, 1.2, 1.25, 0.6. The hour of day follows the card's profile
    (UTC), so nights are quiet, except for night owls (8 % of cards, usual hours around 23 h): night use
    is a risk factor, not a rule. 0.5 % of genuine card-present use happens at a terminal elsewhere in
    Europe (cross-border shopping), and cards travel (0.2 % of card-days start a trip of 2-14 days, 40 %
    outside Europe, during which card-present use happens in the destination), so a foreign or far-away
    use alone does not give fraud away.

Fraud scenarios (``fraud_scenario`` column of the history; 0 is genuine). Rates are the defaults of
:class:`ScenarioRates`; "card-day" means one card during one simulated day.

    ==  ====================  ======================================================================
    1   amount_outlier        0.1 % of genuine transactions get an amount far above the card's habit
                              (exp(mu + 3 sigma) x lognormal(median 2.5)).
    2   compromised_terminal  0.02 % per terminal-day a terminal is compromised for 2-14 days; every
                              transaction on it during that window is fraud.
    3   account_takeover      0.02 % per card-day: a burst of 3 + Poisson(4) purchases within hours
                              (gaps ~ 20 min), at terminals the card never used (70 % ecom), amounts
                              2.5-6x the card's typical amount.
    4   card_testing          0.02 % per card-day: 5 + Poisson(5) tiny ecom amounts (0.50-2.99) at one
                              merchant within minutes (gaps ~ 40 s), then one large ecom purchase
                              (300-2500) about 5 minutes later.
    5   impossible_travel     0.05 % per card-day: a card-present use outside Europe 10-120 minutes
                              after a local card-present use (>= 2,000 km away).
    ==  ====================  ======================================================================

Labels
    Every transaction gets a label. A fraud is reported after a lognormal delay: median 3 days, sigma 1.0
    (log-days), capped at 60 days. A genuine transaction is confirmed (is_fraud false) after a fixed
    settlement delay of 7 days. Labels may be reported after the end of the simulated history: consumers
    filter on ``reported_at``. Live, labels carry their simulated ``reported_at`` too.

Live traffic (:class:`LiveSimulator`) continues a history on simulated time: the same population (the
history's seed and sizes, recorded in ``simulation.json`` by :meth:`SimulatedHistory.write`), from where
the history ends, with incidents that span simulated days. The producer's clock paces it.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = [
    "EVENT_COLUMNS",
    "LABEL_COLUMNS",
    "NIGHT_OWL_SHARE",
    "SCENARIOS",
    "SCENARIO_IDS",
    "SPEC_FILE",
    "TRANSACTION_COLUMNS",
    "LabelDelays",
    "LiveBatch",
    "LiveSimulator",
    "OpenWindows",
    "Population",
    "ScenarioRates",
    "SimulatedHistory",
    "SimulationSpec",
    "Windows",
    "build_population",
    "read_spec",
    "simulate",
]

SCENARIOS: dict[int, str] = {
    0: "genuine",
    1: "amount_outlier",
    2: "compromised_terminal",
    3: "account_takeover",
    4: "card_testing",
    5: "impossible_travel",
}
SCENARIO_IDS: dict[str, int] = {name: sid for sid, name in SCENARIOS.items()}

# What a Transaction event carries (never a label field).
EVENT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "event_time",
    "card_id",
    "terminal_id",
    "amount",
    "currency",
    "merchant_category",
    "channel",
    "country",
)
TRANSACTION_COLUMNS: tuple[str, ...] = (*EVENT_COLUMNS, "is_fraud", "fraud_scenario", "reported_at")
LABEL_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "card_id",
    "terminal_id",
    "event_time",
    "is_fraud",
    "reported_at",
)

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday: weekday seasonality lines up with day 0
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
KM_PER_DEG = 111.2
_COS_REF = float(np.cos(np.deg2rad(48.0)))  # equirectangular projection around central Europe

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Home countries of cards (and most terminals): centroid latitude, longitude, weight.
_HOME: dict[str, tuple[float, float, float]] = {
    "BE": (50.6, 4.6, 0.30),
    "NL": (52.2, 5.5, 0.15),
    "FR": (46.6, 2.4, 0.15),
    "DE": (51.1, 10.4, 0.15),
    "LU": (49.8, 6.1, 0.05),
    "ES": (40.3, -3.7, 0.06),
    "IT": (42.8, 12.6, 0.06),
    "PT": (39.6, -8.0, 0.03),
    "AT": (47.6, 14.1, 0.025),
    "CH": (46.8, 8.2, 0.025),
}
# Far-away countries: some terminals, no cards (impossible travel lands here).
_FAR: dict[str, tuple[float, float, float]] = {
    "US": (39.0, -98.0, 0.3),
    "TH": (15.0, 101.0, 0.15),
    "BR": (-10.0, -52.0, 0.15),
    "AE": (24.0, 54.0, 0.15),
    "NG": (9.0, 8.0, 0.1),
    "TR": (39.0, 35.0, 0.15),
}
_COUNTRY_CODES: tuple[str, ...] = (*_HOME, *_FAR)
_N_HOME = len(_HOME)
_WEEKDAY_FACTOR = np.array([0.95, 0.95, 1.0, 1.05, 1.2, 1.25, 0.6])
_POS_MCC: tuple[str, ...] = ("5411", "5812", "5541", "5999", "5311", "5912", "5732", "4111", "7011", "5944")
_POS_MCC_P = np.array([0.3, 0.2, 0.12, 0.1, 0.08, 0.07, 0.05, 0.04, 0.02, 0.02])
_ECOM_MCC: tuple[str, ...] = ("5969", "5732", "4722", "5815", "5999")
_ECOM_MCC_P = np.array([0.3, 0.2, 0.15, 0.2, 0.15])
_ATM_MCC = "6011"
CHANNEL_NAMES: tuple[str, ...] = ("pos", "ecom", "atm")
_POS, _ECOM, _ATM = 0, 1, 2
_K_NEAR, _K_ECOM = 12, 4
NIGHT_OWL_SHARE = 0.08  # cards whose usual hours centre on 23 h


@dataclass(frozen=True)
class ScenarioRates:
    """How often each fraud scenario starts (see the module docstring)."""

    amount_outlier: float = 0.001  # share of genuine transactions
    compromised_terminal: float = 0.0002  # windows starting per terminal-day
    compromised_min_days: float = 2.0
    compromised_max_days: float = 14.0
    account_takeover: float = 0.0002  # incidents per card-day
    card_testing: float = 0.0002  # incidents per card-day
    impossible_travel: float = 0.0005  # incidents per card-day
    genuine_cross_border: float = 0.005  # share of genuine card-present use elsewhere in Europe
    genuine_trip: float = 0.002  # trips starting per card-day (genuine travel abroad)
    trip_min_days: float = 2.0
    trip_max_days: float = 14.0
    trip_far_share: float = 0.4  # trips outside Europe (the rest: another European country)


@dataclass(frozen=True)
class LabelDelays:
    """When labels become known: lognormal for frauds, a fixed settlement delay for genuine ones."""

    fraud_median_days: float = 3.0
    fraud_sigma: float = 1.0  # of the log of the delay in days
    fraud_max_days: float = 60.0
    genuine_days: float = 7.0


@dataclass(frozen=True)
class Population:
    """Cards and terminals (index i is card ``card_ids[i]``, terminal ``terminal_ids[i]``)."""

    card_ids: npt.NDArray[np.object_]
    card_country: npt.NDArray[np.int8]
    card_xy: FloatArray  # (n, 2) km
    amount_mu: FloatArray
    amount_sigma: FloatArray
    daily_rate: FloatArray
    weekend_factor: FloatArray
    peak_hour: FloatArray
    hour_spread: FloatArray
    candidates: npt.NDArray[np.int32]  # (n_cards, K) terminal indices the card shops at
    candidate_cdf: FloatArray  # (n_cards, K) cumulative preference weights
    terminal_ids: npt.NDArray[np.object_]
    terminal_country: npt.NDArray[np.int8]
    terminal_xy: FloatArray
    terminal_channel: npt.NDArray[np.int8]
    terminal_mcc: npt.NDArray[np.object_]

    @property
    def n_cards(self) -> int:
        return len(self.card_ids)

    @property
    def n_terminals(self) -> int:
        return len(self.terminal_ids)


def _ids(prefix: str, n: int) -> npt.NDArray[np.object_]:
    width = max(6, len(str(max(n - 1, 0))))
    return np.array([f"{prefix}-{i:0{width}d}" for i in range(n)], dtype=object)


def _country_xy(
    rng: np.random.Generator, table: dict[str, tuple[float, float, float]], n: int, spread: float
) -> tuple[IntArray, FloatArray]:
    """Country index (into ``table``) and km coordinates of ``n`` places spread around the centroids."""
    weights = np.array([w for _, _, w in table.values()])
    idx = rng.choice(len(table), size=n, p=weights / weights.sum())
    lat = np.array([la for la, _, _ in table.values()])[idx] + rng.normal(0, spread, n)
    lon = np.array([lo for _, lo, _ in table.values()])[idx] + rng.normal(0, spread * 1.4, n)
    xy = np.column_stack([lon * KM_PER_DEG * _COS_REF, lat * KM_PER_DEG])
    return idx, xy


def build_population(n_cards: int, n_terminals: int, rng: np.random.Generator) -> Population:
    """Draw cards and terminals, and the terminals each card shops at."""
    if n_cards < 1 or n_terminals < 20:
        raise ValueError("need at least 1 card and 20 terminals")
    # Terminals: 20 % ecom merchants, the rest physical (85 % pos, 15 % atm); 10 % of them outside Europe.
    channel = np.where(
        rng.random(n_terminals) < 0.2, _ECOM, np.where(rng.random(n_terminals) < 0.85, _POS, _ATM)
    )
    channel[:4] = [_POS, _POS, _ATM, _ECOM]  # every channel exists even in tiny populations
    far = rng.random(n_terminals) < 0.10
    far[:4] = False
    far[4] = True  # at least one far-away terminal for impossible travel
    channel[4] = _POS
    home_idx, home_xy = _country_xy(rng, _HOME, n_terminals, 1.2)
    far_idx, far_xy = _country_xy(rng, _FAR, n_terminals, 3.0)
    t_country = np.where(far, far_idx + _N_HOME, home_idx).astype(np.int8)
    t_xy = np.where(far[:, None], far_xy, home_xy)
    mcc = np.empty(n_terminals, dtype=object)
    mcc[:] = np.array(_POS_MCC, dtype=object)[rng.choice(len(_POS_MCC), n_terminals, p=_POS_MCC_P)]
    is_ecom = channel == _ECOM
    mcc[is_ecom] = np.array(_ECOM_MCC, dtype=object)[
        rng.choice(len(_ECOM_MCC), int(is_ecom.sum()), p=_ECOM_MCC_P)
    ]
    mcc[channel == _ATM] = _ATM_MCC

    c_country, c_xy = _country_xy(rng, _HOME, n_cards, 1.2)
    amount_mu = rng.normal(np.log(35.0), 0.5, n_cards)
    amount_sigma = rng.uniform(0.35, 0.9, n_cards)
    daily_rate = rng.gamma(4.0, 0.625, n_cards)  # mean 2.5 transactions a day
    weekend_factor = rng.uniform(0.7, 1.4, n_cards)
    peak_hour = np.clip(rng.normal(13.5, 2.5, n_cards), 8.0, 20.0)
    # Night owls (shift workers, night life): their usual hours centre on 23 h, so genuine traffic has its
    # own night activity and a night transaction is unusual for most cards, not fraud by itself.
    owl = rng.random(n_cards) < NIGHT_OWL_SHARE
    peak_hour[owl] = rng.normal(23.0, 1.5, int(owl.sum()))  # taken mod 24 h when hours are drawn
    hour_spread = rng.uniform(2.0, 4.5, n_cards)

    # Shopping places: nearby physical terminals in Europe (Gumbel top-k of -distance/25 km) + ecom merchants.
    physical = np.flatnonzero((channel != _ECOM) & ~far)
    ecom = np.flatnonzero(is_ecom)
    k_near, k_ecom = min(_K_NEAR, len(physical)), min(_K_ECOM, len(ecom))
    near = np.empty((n_cards, k_near), dtype=np.int32)
    p_xy = t_xy[physical]
    for lo in range(0, n_cards, 4096):  # chunked: 4096 x n_physical distances at a time
        hi = min(lo + 4096, n_cards)
        d = np.hypot(c_xy[lo:hi, 0:1] - p_xy[None, :, 0], c_xy[lo:hi, 1:2] - p_xy[None, :, 1])
        score = -d / 25.0 + rng.gumbel(size=d.shape)
        top = np.argpartition(-score, k_near - 1, axis=1)[:, :k_near]
        near[lo:hi] = physical[top]
    ecom_pick = ecom[np.argsort(rng.random((n_cards, len(ecom))), axis=1)[:, :k_ecom]]
    candidates = np.concatenate([near, ecom_pick], axis=1).astype(np.int32)
    ecom_share = rng.beta(2.0, 6.0, n_cards)
    w_near = rng.dirichlet(np.full(k_near, 0.8), n_cards) * (1 - ecom_share)[:, None]
    w_ecom = rng.dirichlet(np.full(k_ecom, 0.8), n_cards) * ecom_share[:, None]
    cdf = np.cumsum(np.concatenate([w_near, w_ecom], axis=1), axis=1)
    cdf /= cdf[:, -1:]
    return Population(
        card_ids=_ids("card", n_cards),
        card_country=c_country.astype(np.int8),
        card_xy=c_xy,
        amount_mu=amount_mu,
        amount_sigma=amount_sigma,
        daily_rate=daily_rate,
        weekend_factor=weekend_factor,
        peak_hour=peak_hour,
        hour_spread=hour_spread,
        candidates=candidates,
        candidate_cdf=cdf,
        terminal_ids=_ids("term", n_terminals),
        terminal_country=t_country,
        terminal_xy=t_xy,
        terminal_channel=channel.astype(np.int8),
        terminal_mcc=mcc,
    )


@dataclass(frozen=True)
class Windows:
    """Time windows of entities as parallel arrays: compromised terminals (``entity`` = terminal index) or
    cards' trips abroad (``entity`` = card index, ``place`` = destination country index; -1 when unused).

    The live simulator runs a day at a time: windows still open at the end of a day (or of the history)
    are carried into the next one, so incidents and trips span days as in the history.
    """

    entity: IntArray
    start_ns: IntArray
    end_ns: IntArray
    place: IntArray

    @staticmethod
    def empty() -> Windows:
        none = np.zeros(0, dtype=np.int64)
        return Windows(none, none, none, none)

    @staticmethod
    def compromised(incidents: pd.DataFrame) -> Windows:
        """The compromised-terminal windows among ``incidents`` (as :func:`_apply_fraud` lists them)."""
        comp = incidents[incidents["scenario"] == SCENARIO_IDS["compromised_terminal"]]
        terminal = comp["terminal"].to_numpy(np.int64)
        return Windows(
            terminal,
            comp["start_ns"].to_numpy(np.int64),
            comp["end_ns"].to_numpy(np.int64),
            np.full(len(terminal), -1, np.int64),
        )

    def open_after(self, t_ns: int) -> Windows:
        """The windows still open at ``t_ns`` (they go on acting on later transactions)."""
        keep = self.end_ns > t_ns
        return Windows(self.entity[keep], self.start_ns[keep], self.end_ns[keep], self.place[keep])

    def __add__(self, other: Windows) -> Windows:
        return Windows(
            np.concatenate([self.entity, other.entity]),
            np.concatenate([self.start_ns, other.start_ns]),
            np.concatenate([self.end_ns, other.end_ns]),
            np.concatenate([self.place, other.place]),
        )

    def __len__(self) -> int:
        return len(self.entity)

    def match(self, entity: npt.NDArray[Any], time_ns: IntArray) -> IntArray:
        """For each (entity, time): the index of a window of that entity covering the time, else -1."""
        out = np.full(len(entity), -1, dtype=np.int64)
        if not len(self) or not len(entity):
            return out
        order = np.argsort(self.entity, kind="stable")
        keys = self.entity[order]
        lo = np.searchsorted(keys, entity, side="left")
        hi = np.searchsorted(keys, entity, side="right")
        has = np.flatnonzero(hi > lo)
        for j in range(int((hi - lo).max(initial=0))):  # an entity rarely has more than one or two
            k = has[lo[has] + j < hi[has]]
            w = order[lo[k] + j]
            inside = (time_ns[k] >= self.start_ns[w]) & (time_ns[k] < self.end_ns[w])
            out[k[inside]] = w[inside]
        return out


@dataclass(frozen=True)
class OpenWindows:
    """What one simulated day hands to the next: compromised terminals and trips still going on."""

    compromised: Windows = field(default_factory=Windows.empty)
    trips: Windows = field(default_factory=Windows.empty)

    def open_after(self, t_ns: int) -> OpenWindows:
        return OpenWindows(self.compromised.open_after(t_ns), self.trips.open_after(t_ns))


@dataclass
class _Columns:
    """Simulated transactions as parallel arrays (unsorted until :meth:`sorted`)."""

    time_ns: IntArray
    card: npt.NDArray[np.int32]
    terminal: npt.NDArray[np.int32]
    amount: FloatArray
    scenario: npt.NDArray[np.int8]

    @staticmethod
    def concat(parts: list[_Columns]) -> _Columns:
        return _Columns(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in _Columns.__dataclass_fields__)
        )

    def take(self, idx: npt.NDArray[Any]) -> _Columns:
        return _Columns(*(getattr(self, f)[idx] for f in _Columns.__dataclass_fields__))

    def sorted(self) -> _Columns:
        return self.take(np.argsort(self.time_ns, kind="stable"))

    def __len__(self) -> int:
        return len(self.time_ns)


def _typical_amount(pop: Population, card: npt.NDArray[Any]) -> FloatArray:
    typical: FloatArray = np.exp(pop.amount_mu[card])
    return typical


def _genuine(
    pop: Population, rng: np.random.Generator, start_ns: int, days: int, start_weekday: int
) -> _Columns:
    weekday = (start_weekday + np.arange(days)) % 7
    day_factor = _WEEKDAY_FACTOR[weekday][None, :] * np.where(weekday >= 5, pop.weekend_factor[:, None], 1.0)
    counts = rng.poisson(pop.daily_rate[:, None] * day_factor)  # (cards, days)
    flat = counts.ravel()
    n = int(flat.sum())
    cell = np.repeat(np.arange(flat.size), flat)
    card = (cell // days).astype(np.int32)
    day = cell % days
    hours = np.where(
        rng.random(n) < 0.9,
        (pop.peak_hour[card] + pop.hour_spread[card] * rng.standard_normal(n)) % 24.0,
        rng.uniform(0.0, 24.0, n),
    )
    time_ns = start_ns + day * NS_PER_DAY + (hours * 3600 * 1e6).astype(np.int64) * 1000
    # Terminal: inverse-CDF draw over the card's preference weights.
    u = rng.random(n)
    slot = (u[:, None] > pop.candidate_cdf[card]).sum(axis=1)
    terminal = pop.candidates[card, np.minimum(slot, pop.candidates.shape[1] - 1)]
    amount = np.exp(pop.amount_mu[card] + pop.amount_sigma[card] * rng.standard_normal(n))
    return _Columns(time_ns, card, terminal.astype(np.int32), amount, np.zeros(n, dtype=np.int8))


def _incident_times(rng: np.random.Generator, n: int, start_ns: int, days: int) -> IntArray:
    return start_ns + (rng.random(n) * days * NS_PER_DAY).astype(np.int64)


def _burst_offsets(rng: np.random.Generator, sizes: IntArray, mean_gap_s: float) -> tuple[IntArray, IntArray]:
    """Incident index of each event of bursts of the given sizes, and its time offset (ns) in its burst.

    The first event of a burst is at offset 0; the following ones are exponential gaps apart.
    """
    inc = np.repeat(np.arange(len(sizes)), sizes)
    if not len(inc):
        return inc, np.zeros(0, dtype=np.int64)
    gaps = (rng.exponential(mean_gap_s, len(inc)) * NS_PER_S).astype(np.int64)
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    return inc, csum - csum[first[inc]]


def _burst_end(t0: IntArray, inc: IntArray, off: IntArray) -> IntArray:
    last = np.zeros(len(t0), dtype=np.int64)
    np.maximum.at(last, inc, off)
    return t0 + last


def _travel(
    pop: Population,
    base: _Columns,
    rng: np.random.Generator,
    rates: ScenarioRates,
    start_ns: int,
    days: int,
    carried: Windows,
) -> Windows:
    """Genuine trips abroad: while a card travels, its card-present use happens in the trip's country.

    Trips start at ``rates.genuine_trip`` per card-day (at a random time), last ``U(trip_min_days,
    trip_max_days)`` days and go outside Europe with ``trip_far_share``, else to another European country.
    During a trip every card-present transaction of the card moves to a random physical terminal of the
    destination (e-commerce stays). So card-present use abroad, far from home, is a risk factor shared with
    genuine travellers, not a rule. Returns the trips started in this window (``carried`` ones act too).
    """
    country_of = pop.terminal_country.astype(np.int64)
    physical = np.flatnonzero(pop.terminal_channel != _ECOM)
    by_country = physical[np.argsort(country_of[physical], kind="stable")]
    count = np.bincount(country_of[physical], minlength=len(_COUNTRY_CODES))
    first = np.concatenate([[0], np.cumsum(count)[:-1]])
    n_trip = rng.poisson(rates.genuine_trip * pop.n_cards * days)
    card = rng.integers(0, pop.n_cards, n_trip).astype(np.int64)
    t0 = _incident_times(rng, n_trip, start_ns, days)
    length = rng.uniform(rates.trip_min_days, rates.trip_max_days, n_trip)
    # Destination: a country with physical terminals, outside Europe or elsewhere in Europe, never home.
    far = np.flatnonzero(count[_N_HOME:] > 0) + _N_HOME
    near = np.flatnonzero(count[:_N_HOME] > 0)
    go_far = rng.random(n_trip) < rates.trip_far_share
    dest = np.where(go_far, far[rng.integers(0, len(far), n_trip)], near[rng.integers(0, len(near), n_trip)])
    at_home = dest == pop.card_country[card]
    dest[at_home] = far[rng.integers(0, len(far), int(at_home.sum()))]
    trips = Windows(card, t0, t0 + (length * NS_PER_DAY).astype(np.int64), dest.astype(np.int64))
    active = carried + trips
    cp = np.flatnonzero(pop.terminal_channel[base.terminal] != _ECOM)
    w = active.match(base.card[cp], base.time_ns[cp])
    away, w = cp[w >= 0], w[w >= 0]
    c = active.place[w]
    base.terminal[away] = by_country[first[c] + (rng.random(len(away)) * count[c]).astype(np.int64)]
    return trips


def _apply_fraud(
    pop: Population,
    base: _Columns,
    rng: np.random.Generator,
    rates: ScenarioRates,
    start_ns: int,
    days: int,
    carried: Windows | None = None,
) -> tuple[_Columns, pd.DataFrame]:
    """Turn some genuine transactions into fraud and inject fraud bursts; returns rows and incidents.

    ``carried`` are compromised-terminal windows opened before ``start_ns`` and still open: the live
    simulator runs a day at a time, and an incident of 2-14 days must keep hitting the following days
    (they are applied here but not listed again among the incidents).
    """
    incidents: list[pd.DataFrame] = []
    ecom = np.flatnonzero(pop.terminal_channel == _ECOM)
    home_term = pop.terminal_country < _N_HOME
    physical_home = np.flatnonzero((pop.terminal_channel != _ECOM) & home_term)
    physical_far = np.flatnonzero((pop.terminal_channel != _ECOM) & ~home_term)
    n_base = len(base)

    # Genuine cross-border shopping (not fraud): blurs "foreign use" as a fraud signal.
    cp = pop.terminal_channel[base.terminal] != _ECOM
    move = cp & (rng.random(n_base) < rates.genuine_cross_border)
    base.terminal[move] = physical_home[rng.integers(0, len(physical_home), int(move.sum()))]

    # (2) compromised terminals: every transaction inside a window is fraud.
    n_comp = rng.poisson(rates.compromised_terminal * pop.n_terminals * days)
    c_term = rng.integers(0, pop.n_terminals, n_comp)
    c_start = _incident_times(rng, n_comp, start_ns, days)
    c_len = rng.uniform(rates.compromised_min_days, rates.compromised_max_days, n_comp)
    c_end = c_start + (c_len * NS_PER_DAY).astype(np.int64)
    windows = Windows(c_term.astype(np.int64), c_start, c_end, np.full(n_comp, -1, np.int64))
    if carried is not None:
        windows = carried + windows
    hit = windows.match(base.terminal, base.time_ns) >= 0
    base.scenario[hit] = SCENARIO_IDS["compromised_terminal"]
    incidents.append(
        pd.DataFrame({"scenario": 2, "card": -1, "terminal": c_term, "start_ns": c_start, "end_ns": c_end})
    )

    # (1) amount far above the card's habit, on genuine transactions.
    out = (base.scenario == 0) & (rng.random(n_base) < rates.amount_outlier)
    k = np.flatnonzero(out)
    c = base.card[k]
    base.amount[k] = np.exp(pop.amount_mu[c] + 3.0 * pop.amount_sigma[c]) * rng.lognormal(
        np.log(2.5), 0.4, len(k)
    )
    base.scenario[k] = SCENARIO_IDS["amount_outlier"]
    incidents.append(
        pd.DataFrame(
            {
                "scenario": 1,
                "card": c,
                "terminal": base.terminal[k],
                "start_ns": base.time_ns[k],
                "end_ns": base.time_ns[k],
            }
        )
    )

    injected: list[_Columns] = []

    # (3) account takeover: bursts at never-used terminals, mostly ecom, higher amounts.
    n_ato = rng.poisson(rates.account_takeover * pop.n_cards * days)
    a_card = rng.integers(0, pop.n_cards, n_ato).astype(np.int32)
    a_t0 = _incident_times(rng, n_ato, start_ns, days)
    sizes = 3 + rng.poisson(4.0, n_ato)
    inc, off = _burst_offsets(rng, sizes, 20 * 60)
    m = len(inc)
    card = a_card[inc]
    term = np.where(
        rng.random(m) < 0.7,
        ecom[rng.integers(0, len(ecom), m)],
        physical_home[rng.integers(0, len(physical_home), m)],
    )
    amount = _typical_amount(pop, card) * rng.uniform(2.5, 6.0, m)
    injected.append(_Columns(a_t0[inc] + off, card, term.astype(np.int32), amount, np.full(m, 3, np.int8)))
    incidents.append(
        pd.DataFrame(
            {
                "scenario": 3,
                "card": a_card,
                "terminal": -1,
                "start_ns": a_t0,
                "end_ns": _burst_end(a_t0, inc, off),
            }
        )
    )

    # (4) card testing: tiny ecom amounts at one merchant within minutes, then a large purchase.
    n_ct = rng.poisson(rates.card_testing * pop.n_cards * days)
    t_card = rng.integers(0, pop.n_cards, n_ct).astype(np.int32)
    t_t0 = _incident_times(rng, n_ct, start_ns, days)
    t_merchant = ecom[rng.integers(0, len(ecom), n_ct)]
    sizes = 5 + rng.poisson(5.0, n_ct)
    inc, off = _burst_offsets(rng, sizes, 40.0)
    m = len(inc)
    tiny = _Columns(
        t_t0[inc] + off,
        t_card[inc],
        t_merchant[inc].astype(np.int32),
        rng.uniform(0.5, 2.99, m),
        np.full(m, 4, np.int8),
    )
    big_t = _burst_end(t_t0, inc, off) + (rng.exponential(300.0, n_ct) * NS_PER_S).astype(np.int64) + NS_PER_S
    big = _Columns(
        big_t,
        t_card,
        ecom[rng.integers(0, len(ecom), n_ct)].astype(np.int32),
        rng.uniform(300.0, 2500.0, n_ct),
        np.full(n_ct, 4, np.int8),
    )
    injected += [tiny, big]
    incidents.append(
        pd.DataFrame(
            {"scenario": 4, "card": t_card, "terminal": t_merchant, "start_ns": t_t0, "end_ns": big_t}
        )
    )

    # (5) impossible travel: a card-present use far away shortly after a local card-present use.
    n_it = rng.poisson(rates.impossible_travel * pop.n_cards * days)
    local = np.flatnonzero((pop.terminal_channel[base.terminal] != _ECOM) & home_term[base.terminal])
    if len(local) and n_it:
        anchor = local[rng.integers(0, len(local), n_it)]
        i_card = base.card[anchor]
        i_time = base.time_ns[anchor] + (rng.uniform(10, 120, n_it) * 60 * NS_PER_S).astype(np.int64)
        i_term = physical_far[rng.integers(0, len(physical_far), n_it)].astype(np.int32)
        amount = _typical_amount(pop, i_card) * rng.uniform(1.5, 4.0, n_it)
        injected.append(_Columns(i_time, i_card, i_term, amount, np.full(n_it, 5, np.int8)))
        incidents.append(
            pd.DataFrame(
                {
                    "scenario": 5,
                    "card": i_card,
                    "terminal": i_term,
                    "start_ns": base.time_ns[anchor],
                    "end_ns": i_time,
                }
            )
        )

    cols = _Columns.concat([base, *injected])
    # ATMs dispense round amounts.
    atm = pop.terminal_channel[cols.terminal] == _ATM
    cols.amount[atm] = np.maximum(20.0, np.round(cols.amount[atm] / 10.0) * 10.0)
    cols.amount = np.round(cols.amount, 2)
    cols.time_ns -= cols.time_ns % 1000  # microsecond precision (what Parquet readers and Spark keep)
    return cols, pd.concat(incidents, ignore_index=True)


def _label_delays(
    rng: np.random.Generator, is_fraud: npt.NDArray[np.bool_], delays: LabelDelays
) -> FloatArray:
    """Reporting delay of each transaction's label, in days."""
    fraud_delay = np.minimum(
        rng.lognormal(np.log(delays.fraud_median_days), delays.fraud_sigma, len(is_fraud)),
        delays.fraud_max_days,
    )
    return np.where(is_fraud, fraud_delay, delays.genuine_days)


def _window(
    pop: Population,
    rng: np.random.Generator,
    rates: ScenarioRates,
    start_ns: int,
    days: int,
    carried: OpenWindows | None = None,
) -> tuple[_Columns, pd.DataFrame, OpenWindows]:
    """Simulate ``days`` days from ``start_ns``: sorted rows, fraud incidents, and every compromised
    terminal and trip that acted in the window (carried or new; :meth:`OpenWindows.open_after` keeps
    those that go on)."""
    carried = carried or OpenWindows()
    start_weekday = datetime.fromtimestamp(start_ns / NS_PER_S, UTC).weekday()
    base = _genuine(pop, rng, start_ns, days, start_weekday)
    trips = carried.trips + _travel(pop, base, rng, rates, start_ns, days, carried.trips)
    cols, incidents = _apply_fraud(pop, base, rng, rates, start_ns, days, carried.compromised)
    return cols.sorted(), incidents, OpenWindows(carried.compromised + Windows.compromised(incidents), trips)


SPEC_FILE = "simulation.json"


def _id_index(entity_id: str) -> int:
    """``term-000042`` -> 42 (ids are the zero-padded index, see :func:`_ids`)."""
    return int(entity_id.rpartition("-")[2])


def _id(prefix: str, index: int, n: int) -> str:
    return f"{prefix}-{index:0{max(6, len(str(max(n - 1, 0))))}d}"


@dataclass(frozen=True)
class SimulationSpec:
    """What a history was simulated from: enough to rebuild its population and to continue it live.

    :meth:`SimulatedHistory.write` saves it as ``simulation.json`` next to the Parquet files; the live
    producer reads it so that its cards and terminals are the trained population (same seed and sizes),
    its simulated clock starts where the history ends, and terminals compromised (cards travelling) at the
    end of the history stay so until their window ends. Non-default :class:`ScenarioRates` are not recorded.
    """

    seed: int = 0
    n_cards: int = 5_000
    n_terminals: int = 2_000
    start: datetime = DEFAULT_START
    days: int = 60
    open_windows: OpenWindows = field(default_factory=OpenWindows, repr=False)

    @property
    def end(self) -> datetime:
        """Where the history's simulated time ends and live simulated time begins."""
        return self.start + timedelta(days=self.days)

    def to_json(self) -> bytes:
        comp, trips = self.open_windows.compromised, self.open_windows.trips
        doc = {
            "seed": self.seed,
            "cards": self.n_cards,
            "terminals": self.n_terminals,
            "start": self.start.isoformat(),
            "days": self.days,
            "end": self.end.isoformat(),
            "open_compromised": [
                {"terminal_id": _id("term", t, self.n_terminals), "start_ns": s, "end_ns": e}
                for t, s, e in zip(
                    comp.entity.tolist(), comp.start_ns.tolist(), comp.end_ns.tolist(), strict=True
                )
            ],
            "open_trips": [
                {
                    "card_id": _id("card", c, self.n_cards),
                    "country": _COUNTRY_CODES[p],
                    "start_ns": s,
                    "end_ns": e,
                }
                for c, p, s, e in zip(
                    trips.entity.tolist(),
                    trips.place.tolist(),
                    trips.start_ns.tolist(),
                    trips.end_ns.tolist(),
                    strict=True,
                )
            ],
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @staticmethod
    def from_json(raw: bytes | str) -> SimulationSpec:
        doc = json.loads(raw)

        def windows(items: list[dict[str, Any]], key: str) -> Windows:
            return Windows(
                np.array([_id_index(w[key]) for w in items], dtype=np.int64),
                np.array([int(w["start_ns"]) for w in items], dtype=np.int64),
                np.array([int(w["end_ns"]) for w in items], dtype=np.int64),
                np.array(
                    [_COUNTRY_CODES.index(w["country"]) if "country" in w else -1 for w in items],
                    dtype=np.int64,
                ),
            )

        return SimulationSpec(
            seed=int(doc["seed"]),
            n_cards=int(doc["cards"]),
            n_terminals=int(doc["terminals"]),
            start=datetime.fromisoformat(doc["start"]),
            days=int(doc["days"]),
            open_windows=OpenWindows(
                windows(doc.get("open_compromised", []), "terminal_id"),
                windows(doc.get("open_trips", []), "card_id"),
            ),
        )


def read_spec(data_dir: Path) -> SimulationSpec | None:
    """The spec of the history written to ``data_dir``, or None when there is none (or no such directory)."""
    path = data_dir / SPEC_FILE
    return SimulationSpec.from_json(path.read_bytes()) if path.is_file() else None


@dataclass(frozen=True)
class SimulatedHistory:
    """A simulated history: transactions (with label columns), labels, the fraud incidents behind them, and
    the genuine trips abroad."""

    transactions: pd.DataFrame
    labels: pd.DataFrame
    incidents: pd.DataFrame
    population: Population = field(repr=False)
    spec: SimulationSpec = field(default_factory=SimulationSpec)
    trips: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)  # card_id, country, start, end

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``transactions.parquet`` and ``labels.parquet`` (microsecond UTC timestamps), and the spec
        (``simulation.json``) the live producer continues from."""
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = out_dir / "transactions.parquet", out_dir / "labels.parquet"
        for frame, path in zip((self.transactions, self.labels), paths, strict=True):
            frame.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
        (out_dir / SPEC_FILE).write_bytes(self.spec.to_json())
        return paths


def _utc_index(ns: IntArray) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(ns.view("datetime64[ns]")).tz_localize("UTC")


def _utc_ns(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    return int(pd.Timestamp(value).tz_convert("UTC").value)


def simulate(
    days: int,
    n_cards: int = 5_000,
    n_terminals: int = 2_000,
    seed: int = 0,
    start: datetime = DEFAULT_START,
    rates: ScenarioRates | None = None,
    delays: LabelDelays | None = None,
) -> SimulatedHistory:
    """Simulate ``days`` days of history from ``start`` (UTC), deterministic for ``seed``."""
    if days < 1:
        raise ValueError("days must be >= 1")
    rates, delays = rates or ScenarioRates(), delays or LabelDelays()
    rng = np.random.default_rng(seed)
    pop = build_population(n_cards, n_terminals, rng)
    start_ns = _utc_ns(start)
    cols, incidents, windows = _window(pop, rng, rates, start_ns, days)
    spec = SimulationSpec(
        seed, n_cards, n_terminals, start, days, windows.open_after(start_ns + days * NS_PER_DAY)
    )
    n = len(cols)
    is_fraud = cols.scenario > 0
    reported_ns = cols.time_ns + (_label_delays(rng, is_fraud, delays) * NS_PER_DAY).astype(np.int64)
    reported_ns -= reported_ns % 1000
    width = max(9, len(str(n)))
    tx_ids = pd.Series(np.arange(n)).astype(str).str.zfill(width).radd("tx-").to_numpy(dtype=object)
    event_time = _utc_index(cols.time_ns)
    reported_at = _utc_index(reported_ns)
    card_id = pop.card_ids[cols.card]
    terminal_id = pop.terminal_ids[cols.terminal]
    transactions = pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "event_time": event_time,
            "card_id": card_id,
            "terminal_id": terminal_id,
            "amount": cols.amount,
            "currency": np.full(n, "EUR", dtype=object),
            "merchant_category": pop.terminal_mcc[cols.terminal],
            "channel": np.array(CHANNEL_NAMES, dtype=object)[pop.terminal_channel[cols.terminal]],
            "country": np.array(_COUNTRY_CODES, dtype=object)[pop.terminal_country[cols.terminal]],
            "is_fraud": is_fraud,
            "fraud_scenario": cols.scenario,
            "reported_at": reported_at,
        }
    )
    labels = pd.DataFrame(
        {
            "transaction_id": tx_ids,
            "card_id": card_id,
            "terminal_id": terminal_id,
            "event_time": event_time,
            "is_fraud": is_fraud,
            "reported_at": reported_at,
        }
    )
    inc_card = incidents["card"].to_numpy(np.int64)
    inc_term = incidents["terminal"].to_numpy(np.int64)
    none = np.array(None, dtype=object)
    incidents = incidents.assign(
        scenario_name=incidents["scenario"].map(SCENARIOS),
        card_id=np.where(inc_card >= 0, pop.card_ids[np.maximum(inc_card, 0)], none),
        terminal_id=np.where(inc_term >= 0, pop.terminal_ids[np.maximum(inc_term, 0)], none),
        start=_utc_index(incidents["start_ns"].to_numpy(np.int64)),
        end=_utc_index(incidents["end_ns"].to_numpy(np.int64)),
    )
    trips = pd.DataFrame(
        {
            "card_id": pop.card_ids[windows.trips.entity],
            "country": np.array(_COUNTRY_CODES, dtype=object)[windows.trips.place],
            "start": _utc_index(windows.trips.start_ns),
            "end": _utc_index(windows.trips.end_ns),
        }
    )
    return SimulatedHistory(transactions, labels, incidents, pop, spec, trips)


@dataclass(frozen=True)
class LiveBatch:
    """Transactions in simulated event-time order, and their labels with the simulated time they are reported.

    ``transactions`` are Transaction-shaped dicts (no label fields); ``labels`` are Label-shaped dicts, their
    ``reported_at`` on the same simulated clock as ``event_time``: send each once the clock passes it.
    ``card_ids`` parallels ``transactions`` (the Kafka key); ``scenarios`` is kept for metrics and tests only.
    """

    transactions: list[dict[str, Any]]
    card_ids: list[str]
    labels: list[dict[str, Any]]
    event_time_ns: IntArray
    reported_at_ns: IntArray
    scenarios: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return len(self.transactions)


def _no_columns() -> _Columns:
    return _Columns(
        np.zeros(0, np.int64),
        np.zeros(0, np.int32),
        np.zeros(0, np.int32),
        np.zeros(0, np.float64),
        np.zeros(0, np.int8),
    )


_LIVE_STREAM = 1  # spawn key of the live random stream: the history's own draws are not repeated


class LiveSimulator:
    """Endless transactions from the same population and scenarios as :func:`simulate`, on simulated time.

    With the history's seed and sizes the population is the history's (the same draws, see
    :meth:`continuing`); the world then goes on from ``start`` (the end of the history) one simulated day
    at a time with its own random stream. Events come out in event-time order, stamped with simulated
    ``event_time``, and every label carries its simulated ``reported_at``: how fast simulated time passes
    is the caller's business (the producer's clock), so per-card inter-arrival times, hours of day and
    weekdays are those of the history. Incidents span days as in the history: compromised terminals stay
    compromised across simulated midnights (those open at the end of the history carry on), and bursts
    that cross midnight are merged into the next day in order. The stream of events and labels depends
    only on the seed (and ``id_prefix``), never on batch sizes or pacing.
    """

    def __init__(
        self,
        n_cards: int = 5_000,
        n_terminals: int = 2_000,
        seed: int = 0,
        start: datetime | None = None,
        rates: ScenarioRates | None = None,
        delays: LabelDelays | None = None,
        id_prefix: str | None = None,
        open_windows: OpenWindows | None = None,
    ) -> None:
        self.seed = seed
        self.population = build_population(n_cards, n_terminals, np.random.default_rng(seed))
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LIVE_STREAM,)))
        self._rates, self._delays = rates or ScenarioRates(), delays or LabelDelays()
        self._prefix = id_prefix or f"tx-{uuid.uuid4().hex[:8]}-"
        self.start_ns = _utc_ns(start or SimulationSpec().end)
        self._horizon_ns = self.start_ns  # everything before it is simulated and final
        self._open = open_windows or OpenWindows()
        self._spill = _no_columns()  # simulated events at or after the horizon (bursts crossing midnight)
        self._ready = _no_columns()  # final events in event-time order; the next one is at _pos
        self._ready_reported = np.zeros(0, np.int64)
        self._pos = 0
        self._serial = 0

    @classmethod
    def continuing(cls, spec: SimulationSpec, **kwargs: Any) -> LiveSimulator:
        """The live continuation of the history ``spec`` describes (its population, from its end on)."""
        return cls(
            spec.n_cards,
            spec.n_terminals,
            spec.seed,
            start=spec.end,
            open_windows=spec.open_windows,
            **kwargs,
        )

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.start_ns / NS_PER_S, UTC)

    def expected_per_day(self) -> float:
        """Mean transactions per simulated day over a week: the population's activity plus injected fraud.

        The producer turns a speed-up into an event rate (and a rate into a speed-up) with it.
        """
        pop, r = self.population, self._rates
        week = _WEEKDAY_FACTOR[:5].sum() + _WEEKDAY_FACTOR[5:].sum() * pop.weekend_factor
        genuine = float((pop.daily_rate * week).sum() / 7.0)
        injected = pop.n_cards * (r.account_takeover * 7.0 + r.card_testing * 11.0 + r.impossible_travel)
        return genuine + injected

    def next_time_ns(self) -> int:
        """Simulated event_time of the next transaction."""
        while self._pos >= len(self._ready):
            self._simulate_day()
        return int(self._ready.time_ns[self._pos])

    def _simulate_day(self) -> None:
        cols, _, windows = _window(self.population, self._rng, self._rates, self._horizon_ns, 1, self._open)
        self._horizon_ns += NS_PER_DAY
        self._open = windows.open_after(self._horizon_ns)
        merged = _Columns.concat([self._spill, cols]).sorted()
        cut = int(np.searchsorted(merged.time_ns, self._horizon_ns, side="left"))
        final, self._spill = merged.take(np.arange(cut)), merged.take(np.arange(cut, len(merged)))
        delay_ns = (_label_delays(self._rng, final.scenario > 0, self._delays) * NS_PER_DAY).astype(np.int64)
        reported = final.time_ns + delay_ns
        reported -= reported % 1000
        rest = np.arange(self._pos, len(self._ready))
        self._ready = _Columns.concat([self._ready.take(rest), final])
        self._ready_reported = np.concatenate([self._ready_reported[rest], reported])
        self._pos = 0

    def next_batch(self, n: int, until_ns: int | None = None) -> LiveBatch:
        """The next transactions in event-time order: at most ``n``, and with ``until_ns`` only those whose
        simulated event_time is not after it (possibly none)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        # Simulate until n events are final, or until everything up to until_ns is (later days start later).
        while len(self._ready) - self._pos < n and (until_ns is None or self._horizon_ns <= until_ns):
            self._simulate_day()
        end = min(self._pos + n, len(self._ready))
        if until_ns is not None:
            end = max(self._pos, min(end, int(np.searchsorted(self._ready.time_ns, until_ns, side="right"))))
        idx = np.arange(self._pos, end)
        self._pos = end
        return self._to_batch(self._ready.take(idx), self._ready_reported[idx])

    def _to_batch(self, cols: _Columns, reported_ns: IntArray) -> LiveBatch:
        pop, n = self.population, len(cols)
        serial = np.arange(self._serial, self._serial + n)
        self._serial += n
        tx_ids = [self._prefix + str(s) for s in serial.tolist()]
        times = _rfc3339(cols.time_ns)
        reported = _rfc3339(reported_ns)
        card_ids = pop.card_ids[cols.card].tolist()
        terminal_ids = pop.terminal_ids[cols.terminal].tolist()
        amounts = cols.amount.tolist()
        mcc = pop.terminal_mcc[cols.terminal].tolist()
        channel = np.array(CHANNEL_NAMES, dtype=object)[pop.terminal_channel[cols.terminal]].tolist()
        country = np.array(_COUNTRY_CODES, dtype=object)[pop.terminal_country[cols.terminal]].tolist()
        transactions = [
            {
                "transaction_id": t,
                "event_time": et,
                "card_id": c,
                "terminal_id": term,
                "amount": a,
                "currency": "EUR",
                "merchant_category": m,
                "channel": ch,
                "country": co,
            }
            for t, et, c, term, a, m, ch, co in zip(
                tx_ids, times, card_ids, terminal_ids, amounts, mcc, channel, country, strict=True
            )
        ]
        labels = [
            {
                "transaction_id": t,
                "card_id": c,
                "terminal_id": term,
                "event_time": et,
                "is_fraud": f,
                "reported_at": r,
            }
            for t, c, term, et, f, r in zip(
                tx_ids, card_ids, terminal_ids, times, (cols.scenario > 0).tolist(), reported, strict=True
            )
        ]
        return LiveBatch(
            transactions=transactions,
            card_ids=card_ids,
            labels=labels,
            event_time_ns=cols.time_ns,
            reported_at_ns=reported_ns,
            scenarios=cols.scenario,
        )


def _rfc3339(ns: IntArray) -> list[str]:
    """RFC 3339 UTC strings with microseconds (what Parquet, Spark and the events keep)."""
    return [s + "Z" for s in np.datetime_as_string(ns.view("datetime64[ns]"), unit="us").tolist()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fraudwatch.simulator",
        description="Write simulated transaction history (transactions.parquet, labels.parquet).",
    )
    parser.add_argument("--days", type=int, default=60, help="simulated days (default 60)")
    parser.add_argument("--out", type=Path, default=Path(".local/data"), help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cards", type=int, default=5_000)
    parser.add_argument("--terminals", type=int, default=2_000)
    parser.add_argument(
        "--start",
        type=datetime.fromisoformat,
        default=DEFAULT_START,
        help="first day, ISO 8601 (UTC if no offset)",
    )
    args = parser.parse_args(argv)
    start = args.start if args.start.tzinfo else args.start.replace(tzinfo=UTC)
    t0 = time.perf_counter()
    history = simulate(args.days, args.cards, args.terminals, args.seed, start)
    paths = history.write(args.out)
    tx = history.transactions
    per = np.bincount(tx["fraud_scenario"].to_numpy(), minlength=len(SCENARIOS))
    mix = ", ".join(f"{SCENARIOS[k]}={int(v)}" for k, v in enumerate(per))
    end = (start + timedelta(days=args.days)).date()
    print(
        f"{len(tx):,} transactions ({tx['is_fraud'].mean():.3%} fraud: {mix}) over {args.days} days "
        f"from {start.date()} to {end} in {time.perf_counter() - t0:.1f}s"
    )
    for p in (*paths, args.out / SPEC_FILE):
        print(p)
    return 0


if __name__ == "__main__":  # pragma: no cover - CLI
    raise SystemExit(main())
