"""`make demo`: the whole pipeline on this machine, then a summary of this run's traffic.

Services up (Kafka, MLflow, Redis and Prometheus where installed) -> simulated history (its own population
under <local>/demo/data) -> train and promote -> warm start: the states the history ends with
(fraudwatch.bootstrap) into the online store and, through the stream's initial state, into a fresh checkpoint
-> scorer API, stream job and analyst review queue started -> a few malformed records
-> the stream catches up with any backlog -> live traffic for --duration seconds: the history's cards on a
simulated clock continuing from its end (--speedup) -> wait until the stream scored it all -> summary.

The summary counts only this run's records (the topics' end offsets are recorded at the start; earlier
traffic is reported, not counted): events produced, scored and alerted, dead letters, alert precision and
recall at both thresholds against the simulator's ground truth (the labels topic) next to the same model's
offline figures: the test window `make train` logged, and the model's per-scenario figures on the held-out
history re-weighted to this run's fraud mix, with its own 95% interval; the tolerance is the 95% interval of
the difference live - reference, which counts the sampling spread of both (README, "What the demo shows";
docs/demo.md); stream latency from Kafka timestamps (input record -> scored record, never event_time); API
latency; the share of live rows whose card (or card-terminal pair) is new, next to what a cold start would have given on the same rows; the review queue's address and open
alerts. The API, the stream and the queue keep running until `make down` (or stop at the end with --stop).

Every address comes from FRAUDWATCH_* settings, so the smoke test runs it on other ports in a temp dir.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
#: what the demo starts and stops (`make down` too): the scorer API, the stream job and the review queue
APPS = ("stream", "api", "review")
#: the demo's population and pace: one simulated day every 5 s, so that in a 60 s run the genuine labels
#: (confirmed 7 simulated days after their transaction) arrive for the first ~25 s of traffic, and 1,000
#: cards (2,540 transactions a simulated day) make that about 500 transactions a second on average
DEMO_SPEEDUP = 17_280.0
DEMO_CARDS = 1_000
DEMO_TERMINALS = 400


def _services_module() -> Any:
    name = "fraudwatch_services"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "services.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def say(message: str) -> None:
    print(f"[{datetime.now(UTC).strftime('%H:%M:%S')}] {message}", flush=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL from settings
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_text(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - local URL from settings
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return ""


class Apps:
    """The API and stream processes the demo starts; PID files under <local_dir>/run/apps/."""

    def __init__(self, local_dir: Path) -> None:
        self.dir = local_dir / "run" / "apps"
        self.logs = local_dir / "logs"

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.stop(name)
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        create = psutil.Process(proc.pid).create_time()
        (self.dir / f"{name}.pid").write_text(json.dumps({"pid": proc.pid, "create_time": create}))
        return proc

    def alive(self, name: str) -> psutil.Process | None:
        try:
            rec = json.loads((self.dir / f"{name}.pid").read_text())
            proc = psutil.Process(int(rec["pid"]))
            if (
                abs(proc.create_time() - float(rec["create_time"])) > 1
                or proc.status() == psutil.STATUS_ZOMBIE
            ):
                return None
            return proc
        except (OSError, ValueError, KeyError, psutil.Error):
            return None

    def stop(self, name: str) -> None:
        proc = self.alive(name)
        if proc is not None:
            procs = [proc, *proc.children(recursive=True)]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            _, left = psutil.wait_procs(procs, timeout=30)
            for p in left:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(left, timeout=10)
            say(f"stopped {name} (pid {proc.pid})")
        (self.dir / f"{name}.pid").unlink(missing_ok=True)

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


Offsets = dict[int, int]  # partition -> offset


def end_offsets(bootstrap: str, topics: list[str]) -> dict[str, Offsets]:
    """The current end offset of every partition of ``topics`` (where this run's records will start)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4()}"})
    try:
        out: dict[str, Offsets] = {}
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10)
            out[topic] = {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in meta.topics[topic].partitions
            }
        return out
    finally:
        consumer.close()


def consume_all(
    bootstrap: str, topic: str, start: Offsets | None = None, idle_seconds: float = 3.0
) -> list[Any]:
    """Every record on ``topic`` from ``start`` (default: the beginning) to its current end (confluent-kafka)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"demo-{uuid.uuid4()}", "enable.auto.commit": False}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, (start or {}).get(p, 0)) for p in meta.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        consumer.assign(parts)
        records: list[Any] = []
        done = {p.partition for p in parts if ends[p.partition] <= p.offset}
        last = time.monotonic()
        while len(done) < len(ends) and time.monotonic() - last < idle_seconds:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            records.append(msg)
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
        return records
    finally:
        consumer.close()


def history_spec(data: Path, population: dict[str, int]) -> dict[str, Any] | None:
    """The demo history's simulation.json when it was written for ``population`` (else it is rewritten)."""
    try:
        spec: dict[str, Any] = json.loads((data / "simulation.json").read_text())
    except (OSError, ValueError):
        return None
    if not (data / "transactions.parquet").exists():
        return None
    return spec if all(spec.get(k) == v for k, v in population.items()) else None


def backlog(start: dict[str, Offsets], topic: str) -> int:
    """Records already on ``topic`` when the demo started (earlier runs' traffic)."""
    return sum(start.get(topic, {}).values())


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ------------------------------------------------------------------------------------------ live vs offline
#: the confidence of every interval in the comparison (z = 1.96: 95 %): the live figure's Wilson interval,
#: the mix-adjusted reference's simulated interval and the interval of their difference
WILSON_Z = 1.96
#: simulated draws of the offline proportions behind the mix-adjusted reference, and their fixed seed
REFERENCE_DRAWS = 2_000
REFERENCE_SEED = 20_261_203
#: below this many labels behind a live figure the demo does not compare it at all (the interval spans most
#: of [0, 1]): it says how many it would need instead
MIN_LABELS = 5
#: the offline figures of a logged model: name in the summary -> MLflow metric of its training run (the
#: held-out test period, scored with the thresholds tuned on validation, i.e. what the model will do live)
OFFLINE_METRICS = {
    "precision at review": "test_precision_at_review",
    "recall at review": "test_recall_at_review",
    "precision at decline": "test_precision_at_decline",
    "recall at decline": "test_recall_at_decline",
}
#: each alert level and the decisions it counts as flagged
LEVELS: dict[str, tuple[str, ...]] = {"review": ("review", "decline"), "decline": ("decline",)}


def ground_truth(records: Iterable[dict[str, Any]], transaction_ids: Container[str]) -> dict[str, bool]:
    """is_fraud of each of ``transaction_ids`` from the labels topic's records, the simulator's only: an
    analyst's decision in the review queue (``source`` "analyst:...") is a label for the stream and the next
    training run, not the truth the alerts are measured against."""
    out: dict[str, bool] = {}
    for rec in records:
        if rec["transaction_id"] in transaction_ids and not rec.get("source"):
            out[rec["transaction_id"]] = bool(rec["is_fraud"])
    return out


def wilson(successes: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion: honest for small ``n`` and for p near 0 or 1."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def newcombe_difference(
    p1: float, ci1: tuple[float, float], p2: float, ci2: tuple[float, float]
) -> tuple[float, float]:
    """95% interval of the difference p1 - p2 of two independent proportions from each one's own interval:
    Newcombe's hybrid score method (Newcombe 1998, method 10), with Wilson intervals on both sides a
    standard, well-covering interval for a difference. Any interval for p2 may stand in for its Wilson one
    (here the reference's simulated interval): the method only combines each side's distance to its limits."""
    (l1, u1), (l2, u2) = ci1, ci2
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


#: fraud scenarios whose frauds come in incidents: a compromised terminal's window (every transaction at the
#: terminal), one card's takeover burst, card test or impossible trip; other frauds (amount outliers) and
#: genuine rows are each their own incident
TERMINAL_INCIDENTS = frozenset({2})
CARD_INCIDENTS = frozenset({3, 4, 5})


def incident_key(scenario: int, transaction_id: str, card_id: str, terminal_id: str) -> str:
    """The incident a transaction belongs to (docs/demo.md, "Incidents, not frauds"): its terminal for a
    compromised-terminal fraud, its card and scenario for a card's burst, else the transaction itself."""
    if scenario in TERMINAL_INCIDENTS:
        return f"terminal:{terminal_id}"
    if scenario in CARD_INCIDENTS:
        return f"card:{card_id}:{scenario}"
    return f"tx:{transaction_id}"


def design_effect(clusters: Iterable[tuple[float, float]]) -> float:
    """Kish's design effect of a proportion pooled over clusters, from (successes, size) per cluster: how
    many times its variance exceeds the binomial variance of as many independent rows, at least 1.

    The clustered variance is the linearised (ratio-estimator) one, m/(m-1) x sum (k_j - p n_j)^2 / N^2 over
    the m clusters, N = sum n_j; the binomial one p(1-p)/N. N / deff is then the effective number of
    independent rows. One cluster is one observation (deff = N); a proportion of 0 or 1 has no spread
    to inflate (deff = 1)."""
    pairs = [(float(k), float(n)) for k, n in clusters if n > 0]
    total = sum(n for _, n in pairs)
    if total <= 0:
        return 1.0
    if len(pairs) == 1:
        return max(1.0, total)
    p = sum(k for k, _ in pairs) / total
    if p <= 0.0 or p >= 1.0:
        return 1.0
    m = len(pairs)
    clustered = m / (m - 1) * sum((k - p * n) ** 2 for k, n in pairs) / total**2
    return max(1.0, clustered / (p * (1 - p) / total))


def _clusters(
    rows: Iterable[str], hit: Callable[[str], bool], incident_of: dict[str, str]
) -> tuple[float, int]:
    """The design effect and the number of incidents of a proportion over ``rows`` (hit: a success)."""
    counts: dict[str, list[int]] = {}
    for t in rows:
        c = counts.setdefault(incident_of.get(t, f"tx:{t}"), [0, 0])
        c[0] += hit(t)
        c[1] += 1
    return design_effect((k, n) for k, n in counts.values()), len(counts)


@dataclass(frozen=True)
class Figure:
    """One live proportion (precision or recall at a threshold) and how it compares with the offline one.

    ``offline`` is the raw offline figure (the test window `make train` logged); ``adjusted`` the same
    model's offline figure re-weighted to this run's fraud mix (:func:`mix_adjusted`), when known, and
    ``adjusted_interval`` its 95% interval (:func:`reference_intervals`). The tolerance applies to the
    adjusted figure when there is one, else to the raw one, by one of two rules:

    * two-sided, when the reference has an interval: within when the 95% interval of the difference
      live - reference (:func:`newcombe_difference`) contains 0, so the sampling spread of both sides counts;
    * one-sided, when it has none (the raw test figure): within when the reference lies in the live
      figure's 95% Wilson interval, as if the reference were exact.

    Frauds come in incidents (:func:`incident_key`): ``design_effect`` (>= 1, :func:`design_effect`) over the
    ``incidents`` behind the live figure shrinks its Wilson interval's sample to ``n / design_effect``
    effective rows, and ``adjusted_interval`` counts the offline incidents the same way. The ``independent_*``
    figures are the same comparison with every row independent (``adjusted_interval_independent`` the
    reference's interval so), shown beside it.
    """

    name: str
    hits: int
    n: int
    offline: float | None
    adjusted: float | None = None
    adjusted_interval: tuple[float, float] | None = None
    design_effect: float = 1.0
    incidents: int | None = None
    adjusted_interval_independent: tuple[float, float] | None = None

    @property
    def value(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @property
    def interval(self) -> tuple[float, float]:
        """The live figure's 95% Wilson interval on its effective sample (incidents counted)."""
        return wilson(self.hits / self.design_effect, self.n / self.design_effect)

    @property
    def independent_interval(self) -> tuple[float, float]:
        """The live figure's 95% Wilson interval with every row independent."""
        return wilson(self.hits, self.n)

    @property
    def clustered(self) -> bool:
        """Whether incidents widen either side's interval beyond the independent-row one."""
        return self.design_effect > 1.0 or (
            self.adjusted_interval_independent is not None
            and self.adjusted_interval != self.adjusted_interval_independent
        )

    @property
    def independent_difference(self) -> tuple[float, float, float] | None:
        """live - reference and its 95% interval with every row on both sides independent."""
        ref = self.adjusted_interval_independent or self.adjusted_interval
        if not self.two_sided or not self.n or self.adjusted is None or ref is None:
            return None
        lo, hi = newcombe_difference(self.value, self.independent_interval, self.adjusted, ref)
        return self.value - self.adjusted, lo, hi

    @property
    def independent_verdict(self) -> str:
        """The two-sided verdict with every row independent (or the plain verdict when it does not apply)."""
        diff = self.independent_difference
        if diff is None or self.verdict not in ("within", "outside"):
            return self.verdict
        return "within" if diff[1] <= 0 <= diff[2] else "outside"

    @property
    def reference(self) -> float | None:
        """The offline figure the tolerance applies to."""
        return self.adjusted if _finite(self.adjusted) else self.offline

    @property
    def reference_name(self) -> str:
        return "mix-adjusted offline" if _finite(self.adjusted) else "offline test"

    @property
    def two_sided(self) -> bool:
        """Whether the reference has an interval of its own, so the two-sided rule applies."""
        return _finite(self.adjusted) and self.adjusted_interval is not None

    @property
    def rule(self) -> str:
        return "two-sided" if self.two_sided else "one-sided"

    @property
    def difference(self) -> tuple[float, float, float] | None:
        """live - reference and its 95% interval (Newcombe), when both sides have an interval."""
        if not self.two_sided or not self.n or self.adjusted is None or self.adjusted_interval is None:
            return None
        lo, hi = newcombe_difference(self.value, self.interval, self.adjusted, self.adjusted_interval)
        return self.value - self.adjusted, lo, hi

    def _one_sided(self, reference: float | None) -> str:
        if reference is None or not math.isfinite(reference):
            return "no offline figure"
        if self.n < MIN_LABELS:
            return f"too few labels ({self.n} < {MIN_LABELS})"
        lo, hi = self.interval
        return "within" if lo <= reference <= hi else "outside"

    @property
    def verdict(self) -> str:
        """within / outside the tolerance of the reference figure (by :attr:`rule`), or why there is no
        comparison."""
        one_sided = self._one_sided(self.reference)
        diff = self.difference
        if one_sided not in ("within", "outside") or diff is None:
            return one_sided
        _, lo, hi = diff
        return "within" if lo <= 0 <= hi else "outside"

    @property
    def one_sided_verdict(self) -> str:
        """The one-sided rule against the reference figure, as if it were exact."""
        return self._one_sided(self.reference)

    @property
    def raw_verdict(self) -> str:
        """The one-sided rule against the raw offline test figure (which has no interval)."""
        return self._one_sided(self.offline)

    def row(self) -> tuple[str, str]:
        lo, hi = self.interval
        live = f"{self.value:.3f} [{lo:.3f}, {hi:.3f}] n={self.n:,}" if self.n else "n/a (no labels yet)"
        if self.n and self.incidents is not None and self.incidents < self.n:
            live += f" in {self.incidents:,} incidents"
        offline = f"{self.offline:.3f}" if _finite(self.offline) else "n/a"
        text = f"{live:<32} offline test {offline}"
        if _finite(self.adjusted):
            text += f", mix-adjusted {self.adjusted:.3f}"
            if self.adjusted_interval is not None:
                text += f" [{self.adjusted_interval[0]:.2f}, {self.adjusted_interval[1]:.2f}]"
        return self.name, f"{text}  {self.verdict}"


# ------------------------------------------------------------------------- the like-for-like reference
@dataclass(frozen=True)
class ScenarioRates:
    """What the model does offline on each fraud scenario and on genuine traffic, at both alert levels:
    counts over a held-out window of the history (what a live run's mix is re-weighted with)."""

    window: str  # which rows, in words
    frauds: dict[int, int]  # fraud scenario id -> frauds in the window
    caught: dict[str, dict[int, int]]  # level -> scenario id -> frauds flagged at that level
    genuine: int
    flagged_genuine: dict[str, int]  # level -> genuine transactions flagged at that level
    incidents: dict[int, int] = field(default_factory=dict)  # fraud scenario id -> incidents in the window
    design: dict[str, dict[int, float]] = field(default_factory=dict)  # level -> scenario -> design effect

    @classmethod
    def count(
        cls, scenario: Any, decisions: Any, window: str, incidents: Iterable[str] | None = None
    ) -> ScenarioRates:
        """From each row's fraud scenario (0: genuine) and the model's decision on it, and optionally each
        row's incident (:func:`incident_key`; without them every fraud is its own incident)."""
        pairs = list(zip((int(s) for s in scenario), decisions, strict=True))
        frauds = Counter(s for s, _ in pairs if s)
        caught = {
            level: dict(Counter(s for s, d in pairs if s and d in flagged))
            for level, flagged in LEVELS.items()
        }
        genuine = sum(1 for s, _ in pairs if not s)
        flagged_genuine = {
            level: sum(1 for s, d in pairs if not s and d in flagged) for level, flagged in LEVELS.items()
        }
        if incidents is None:
            return cls(window, dict(frauds), caught, genuine, flagged_genuine, dict(frauds))
        keys = list(incidents)
        if len(keys) != len(pairs):
            raise ValueError(f"{len(keys)} incident keys for {len(pairs)} rows")
        by_incident: dict[int, dict[str, list[str]]] = {}
        for (s, d), key in zip(pairs, keys, strict=True):
            if s:
                by_incident.setdefault(s, {}).setdefault(key, []).append(d)
        design = {
            level: {
                s: design_effect((sum(d in flagged for d in ds), len(ds)) for ds in groups.values())
                for s, groups in by_incident.items()
            }
            for level, flagged in LEVELS.items()
        }
        counted = {s: len(groups) for s, groups in by_incident.items()}
        return cls(window, dict(frauds), caught, genuine, flagged_genuine, counted, design)

    def recall(self, level: str, scenario: int) -> float | None:
        n = self.frauds.get(scenario, 0)
        return self.caught[level].get(scenario, 0) / n if n else None

    def pooled_recall(self, level: str) -> float:
        n = sum(self.frauds.values())
        return sum(self.caught[level].values()) / n if n else float("nan")

    def false_positive_rate(self, level: str) -> float:
        return self.flagged_genuine[level] / self.genuine if self.genuine else float("nan")


@dataclass(frozen=True)
class LiveMix:
    """This run's labelled transactions by the simulator's fraud scenario: whom each live figure is about."""

    frauds: Counter[int]  # labelled frauds per scenario: the recall figures
    matured_frauds: Counter[int]  # labelled frauds of the matured window per scenario: the precision figures
    matured_genuine: int  # labelled genuine transactions of the matured window
    caught: dict[str, Counter[int]] = field(default_factory=dict)  # level -> labelled frauds flagged there
    incidents: Counter[int] = field(default_factory=Counter)  # the incidents behind ``frauds``, when known


def mix_adjusted(rates: ScenarioRates, mix: LiveMix) -> tuple[dict[str, float], list[int]]:
    """The offline figures re-weighted to this run's mix, and the live scenarios the window has no fraud of.

    recall at a level = sum over scenarios s of w_s x recall_s, w_s the share of s among this run's labelled
    frauds; precision = TP / (TP + FP) over exactly the labelled rows the live precision counts (the matured
    window): TP = sum of n_s x recall_s over its frauds, FP = its genuine count x the offline false-positive
    rate. So both the scenario mix and the fraud rate are this run's, and only the per-scenario behaviour
    is the model's offline one. A scenario the window holds no fraud of takes the pooled offline recall.
    """
    missing = sorted(s for s in (mix.frauds | mix.matured_frauds) if rates.recall("review", s) is None)

    def recall_of(level: str, scenario: int) -> float:
        r = rates.recall(level, scenario)
        return rates.pooled_recall(level) if r is None else r

    out: dict[str, float] = {}
    for level in LEVELS:
        n = sum(mix.frauds.values())
        if n:
            out[f"recall at {level}"] = sum(k * recall_of(level, s) for s, k in mix.frauds.items()) / n
        tp = sum(k * recall_of(level, s) for s, k in mix.matured_frauds.items())
        fp = mix.matured_genuine * rates.false_positive_rate(level)
        if tp + fp > 0:
            out[f"precision at {level}"] = tp / (tp + fp)
    return out, missing


def reference_intervals(
    rates: ScenarioRates,
    mix: LiveMix,
    draws: int = REFERENCE_DRAWS,
    seed: int = REFERENCE_SEED,
    incidents: bool = True,
) -> dict[str, tuple[float, float]]:
    """95% interval of each mix-adjusted figure (:func:`mix_adjusted`) from the sampling error of the offline
    counts it is built from, with this run's mix held fixed. Each draw redraws, at each level, every
    scenario's offline recall from k of n flagged as Beta(k + 1/2, n - k + 1/2) (Jeffreys) and the offline
    false-positive rate likewise, and recomputes the figure exactly as :func:`mix_adjusted` does (a scenario
    the window lacks takes the drawn pooled recall); the interval is the 2.5th to 97.5th percentile of the
    draws, widened to hold the point estimate (a draw with no flagged row has no precision and is left out).
    For a single proportion this is the Jeffreys interval, close to Wilson's; unlike a bootstrap of
    Binomial(n, k/n), it keeps a spread when a scenario was caught never or every time offline (0/18 is not
    an exact 0).

    With ``incidents`` (the default) a scenario whose offline frauds come in incidents draws from its
    effective counts instead, k / deff of n / deff (``rates.design``, :func:`design_effect`): 18 frauds
    from 3 compromised terminals weigh about as much as the few independent observations they are.
    ``incidents=False`` treats every offline fraud as independent."""
    rng = np.random.default_rng(seed)
    scenarios = sorted(rates.frauds)
    n_off = np.array([rates.frauds[s] for s in scenarios], dtype=float)
    index = {s: i for i, s in enumerate(scenarios)}
    point, _ = mix_adjusted(rates, mix)
    out: dict[str, tuple[float, float]] = {}

    def interval(name: str, values: Any) -> None:
        lo, hi = np.percentile(values, [2.5, 97.5])
        out[name] = (min(float(lo), point[name]), max(float(hi), point[name]))

    for level in LEVELS:
        if not scenarios:
            break
        k = np.array([rates.caught[level].get(s, 0) for s in scenarios], dtype=float)
        deff = np.array(
            [rates.design.get(level, {}).get(s, 1.0) if incidents else 1.0 for s in scenarios], dtype=float
        )
        k_eff, n_eff = k / deff, n_off / deff
        recall = rng.beta(k_eff + 0.5, n_eff - k_eff + 0.5, size=(draws, len(scenarios)))  # draws x scenarios
        pooled = recall @ n_off / n_off.sum()

        def weighted(counts: Counter[int], recall: Any = recall, pooled: Any = pooled) -> Any:
            total = np.zeros(draws)
            for s, k in counts.items():
                total += k * (recall[:, index[s]] if s in index else pooled)
            return total

        n = sum(mix.frauds.values())
        if n and f"recall at {level}" in point:
            interval(f"recall at {level}", weighted(mix.frauds) / n)
        if rates.genuine and f"precision at {level}" in point:
            flagged = rates.flagged_genuine[level]
            fp = mix.matured_genuine * rng.beta(flagged + 0.5, rates.genuine - flagged + 0.5, size=draws)
            tp = weighted(mix.matured_frauds)
            defined = tp + fp > 0
            if defined.any():
                interval(f"precision at {level}", tp[defined] / (tp[defined] + fp[defined]))
    return out


@dataclass(frozen=True)
class Quality:
    """Alert quality of this run against the labels seen so far, at both thresholds."""

    figures: list[Figure]
    labelled: int
    labelled_frauds: int
    matured: int  # transactions old enough that a genuine label would have arrived
    matured_labelled: int
    unlabelled_genuine_window: bool  # no genuine label yet: precision cannot be estimated
    mix: LiveMix | None = None  # this run's labelled rows by scenario, when the scenarios are known
    rates: ScenarioRates | None = None  # the offline per-scenario reference, when computed
    no_offline_scenario: list[int] = field(default_factory=list)  # live scenarios the window lacks


def alert_quality(
    scored: dict[str, dict[str, Any]],
    labels: dict[str, bool],
    offline: dict[str, float],
    scenario_of: dict[str, int] | None = None,
    rates: ScenarioRates | None = None,
    incident_of: dict[str, str] | None = None,
) -> Quality:
    """Precision and recall of the live decisions at both thresholds against the labels that arrived.

    Labels arrive late, and not at the same pace for both classes (a fraud is reported after days, a genuine
    transaction is confirmed at settlement), so the labels seen at any moment are not a random sample:
    * recall (flagged frauds / labelled frauds) uses every labelled fraud;
    * precision (frauds / flagged) uses only the *matured* window, the transactions no later (event time)
      than the latest one with a genuine label: there both classes had the time to be labelled. Frauds of
      that window whose report is still pending are missing, which can only lower the live precision.

    With each live transaction's fraud scenario (``scenario_of``) and the model's offline per-scenario
    counts (``rates``), each figure also gets its offline reference re-weighted to this run's mix. With each
    live transaction's incident (``incident_of``, :func:`incident_key`) the live intervals count incidents,
    not rows (:func:`design_effect`); the offline intervals do when ``rates`` holds its incidents.
    """
    when = {t: datetime.fromisoformat(r["event_time"]) for t, r in scored.items()}
    labelled = [t for t in scored if t in labels]
    frauds = [t for t in labelled if labels[t]]
    genuine_times = [when[t] for t in labelled if not labels[t]]
    frontier = max(genuine_times) if genuine_times else None
    matured = [t for t in scored if frontier is not None and when[t] <= frontier]
    matured_labelled = [t for t in matured if t in labels]
    mix = None
    if scenario_of is not None and all(scenario_of.get(t, 0) > 0 for t in frauds):
        mix = LiveMix(
            frauds=Counter(scenario_of[t] for t in frauds),
            matured_frauds=Counter(scenario_of[t] for t in matured_labelled if labels[t]),
            matured_genuine=sum(1 for t in matured_labelled if not labels[t]),
            caught={
                level: Counter(scenario_of[t] for t in frauds if scored[t]["decision"] in flagged)
                for level, flagged in LEVELS.items()
            },
            incidents=Counter(
                scenario_of[t] for t in {(incident_of or {}).get(t, f"tx:{t}"): t for t in frauds}.values()
            ),
        )
    adjusted, missing = mix_adjusted(rates, mix) if mix is not None and rates is not None else ({}, [])
    spread = reference_intervals(rates, mix) if mix is not None and rates is not None else {}
    independent = (
        reference_intervals(rates, mix, incidents=False) if mix is not None and rates is not None else {}
    )
    figures = []
    for level, flagged_decisions in LEVELS.items():
        flagged = [t for t in matured_labelled if scored[t]["decision"] in flagged_decisions]
        tp = sum(1 for t in flagged if labels[t])
        caught = sum(1 for t in frauds if scored[t]["decision"] in flagged_decisions)
        for name, hits, rows, hit in (
            (f"precision at {level}", tp, flagged, lambda t: labels[t]),
            (f"recall at {level}", caught, frauds, lambda t, f=flagged_decisions: scored[t]["decision"] in f),
        ):
            deff, count = _clusters(rows, hit, incident_of) if incident_of is not None else (1.0, None)
            figures.append(
                Figure(
                    name,
                    hits,
                    len(rows),
                    offline.get(name),
                    adjusted.get(name),
                    spread.get(name),
                    design_effect=deff,
                    incidents=count,
                    adjusted_interval_independent=independent.get(name),
                )
            )
    return Quality(
        figures=figures,
        labelled=len(labelled),
        labelled_frauds=len(frauds),
        matured=len(matured),
        matured_labelled=len(matured_labelled),
        unlabelled_genuine_window=frontier is None,
        mix=mix,
        rates=rates,
        no_offline_scenario=missing,
    )


def scenario_name(scenario: int) -> str:
    from fraudwatch.simulator import SCENARIOS

    return str(SCENARIOS.get(scenario, scenario))


def mix_table(quality: Quality) -> list[str]:
    """This run's labelled frauds by scenario next to the offline window's, with the recall at review and
    decline of each (the offline ones with their 95% interval): what the mix-adjusted figures are made of."""
    mix, rates = quality.mix, quality.rates
    if mix is None or rates is None:
        return []
    lines = [
        f"fraud mix: this run's labelled frauds vs the offline reference window ({rates.window})",
        f"  {'scenario':<22} {'live':>6}  {'recall review / decline':<24} {'offline':>7}  recall review [95%] / decline",
    ]
    for s in sorted(set(mix.frauds) | set(rates.frauds), key=lambda s: (-mix.frauds.get(s, 0), s)):
        n_live, n_off = mix.frauds.get(s, 0), rates.frauds.get(s, 0)
        live = (
            f"{mix.caught['review'][s] / n_live:.2f} / {mix.caught['decline'][s] / n_live:.2f}"
            if n_live and mix.caught
            else "-"
        )
        if n_off:
            lo, hi = wilson(rates.caught["review"].get(s, 0), n_off)
            off = f"{rates.recall('review', s):.2f} [{lo:.2f}, {hi:.2f}] / {rates.recall('decline', s):.2f}"
        else:
            off = "none in the window: the pooled recall stands in"
        lines.append(f"  {scenario_name(s):<22} {n_live:>6,}  {live:<24} {n_off:>7,}  {off}")
    fpr = f"{rates.false_positive_rate('review'):.4f} / {rates.false_positive_rate('decline'):.4f}"
    lines.append(
        f"  {'genuine (matured)':<22} {mix.matured_genuine:>6,}  {'':<24} {rates.genuine:>7,}  "
        f"false-positive rate {fpr}"
    )
    clustered = sorted(
        s for s in set(mix.frauds) | set(rates.frauds) if s in TERMINAL_INCIDENTS | CARD_INCIDENTS
    )
    if mix.incidents and clustered:
        counts = ", ".join(
            f"{scenario_name(s)} {mix.incidents.get(s, 0)} / {rates.incidents.get(s, 0)}" for s in clustered
        )
        lines.append(f"  incidents behind those frauds (live / offline): {counts}")
    return lines


#: an offline scenario recall resting on fewer frauds than this is called out when it carries weight
FEW_OFFLINE_FRAUDS = 30


def thin_reference(quality: Quality) -> list[str]:
    """The scenarios that carry at least a tenth of this run's labelled frauds while the offline window
    holds fewer than :data:`FEW_OFFLINE_FRAUDS` of them: the mix-adjusted figure leans on a thin estimate."""
    mix, rates = quality.mix, quality.rates
    if mix is None or rates is None or not mix.frauds:
        return []
    total = sum(mix.frauds.values())
    out = []
    for s, k in mix.frauds.most_common():
        n = rates.frauds.get(s, 0)
        if k / total >= 0.1 and 0 < n < FEW_OFFLINE_FRAUDS:
            hits = rates.caught["review"].get(s, 0)
            lo, hi = wilson(hits, n)
            out.append(
                f"{scenario_name(s)} ({k / total:.0%} of this run's frauds): offline recall at review "
                f"{hits}/{n} = {hits / n:.2f}, 95% interval [{lo:.2f}, {hi:.2f}]"
            )
    return out


def explain(quality: Quality) -> list[str]:
    """Why live figures differ from the offline ones (printed when one is outside or not comparable)."""
    lines: list[str] = []
    for f in quality.figures:
        if f.verdict == "no offline figure":
            continue
        lo, hi = f.interval
        diff = f.difference
        spread = (
            f" [{f.adjusted_interval[0]:.2f}, {f.adjusted_interval[1]:.2f}]" if f.adjusted_interval else ""
        )
        if f.verdict == "within":
            idiff = f.independent_difference
            if idiff is not None and diff is not None and f.clustered and f.independent_verdict == "outside":
                lines.append(
                    f"{f.name}: as {f.n} independent rows the difference {idiff[0]:+.3f} would have a 95% "
                    f"interval [{idiff[1]:+.3f}, {idiff[2]:+.3f}] that excludes 0; they are {f.incidents} "
                    f"incidents (design effect {f.design_effect:.1f} live, the reference's per scenario "
                    f"likewise), and counted so the interval is [{diff[1]:+.3f}, {diff[2]:+.3f}]: within. "
                    "Too few incidents on either side to tell the two apart; a longer run (DURATION=) meets more"
                )
            if _finite(f.adjusted) and f.raw_verdict == "outside":
                lines.append(
                    f"{f.name}: outside the interval of the raw test figure {f.offline:.3f} (one-sided: it has "
                    f"no interval), within the tolerance of the mix-adjusted {f.adjusted:.3f} ({f.rule}): the "
                    "gap to the test window is this run's fraud mix"
                )
            if diff is not None and f.one_sided_verdict == "outside":
                lines.append(
                    f"{f.name}: the mix-adjusted {f.adjusted:.3f} lies outside the live interval [{lo:.3f}, "
                    f"{hi:.3f}] (one-sided rule), but it has a spread of its own,{spread}: the difference "
                    f"{diff[0]:+.3f} has a 95% interval [{diff[1]:+.3f}, {diff[2]:+.3f}] that contains 0 "
                    "(two-sided rule): within"
                )
            continue
        if f.verdict.startswith("too few"):
            lines.append(
                f"{f.name}: {f.n} labels behind it; with so few, the 95% interval is [{lo:.2f}, {hi:.2f}]: "
                f"run longer (DURATION=) to see at least {MIN_LABELS}"
            )
        elif diff is not None:
            lines.append(
                f"{f.name}: {f.value:.3f} from {f.hits}/{f.n} [{lo:.3f}, {hi:.3f}] vs mix-adjusted offline "
                f"{f.adjusted:.3f}{spread}: the difference {diff[0]:+.3f} has a 95% interval "
                f"[{diff[1]:+.3f}, {diff[2]:+.3f}] that excludes 0 (two-sided rule): not explained by the "
                "number of labels on either side or the fraud mix"
            )
        elif _finite(f.adjusted):
            lines.append(
                f"{f.name}: {f.value:.3f} from {f.hits}/{f.n}; 95% interval [{lo:.3f}, {hi:.3f}] excludes the "
                f"mix-adjusted offline {f.adjusted:.3f} (one-sided rule: the reference has no interval): not "
                "explained by the number of labels or the fraud mix"
            )
        else:
            lines.append(
                f"{f.name}: {f.value:.3f} from {f.hits}/{f.n}; 95% interval [{lo:.3f}, {hi:.3f}] excludes the "
                f"offline {f.offline:.3f}: not explained by the number of labels alone"
            )
    if quality.unlabelled_genuine_window:
        lines.append(
            "no genuine label has arrived yet (genuine transactions are confirmed at settlement, later than "
            "most frauds are reported): precision cannot be estimated from this run's labels"
        )
    if quality.no_offline_scenario:
        names = ", ".join(scenario_name(s) for s in quality.no_offline_scenario)
        lines.append(
            f"the offline window holds no fraud of {names}: the mix-adjusted figures use the pooled offline "
            "recall for it"
        )
    outside = [f for f in quality.figures if f.verdict == "outside"]
    if any(not _finite(f.adjusted) for f in outside):
        lines.append(
            "a real gap means the live traffic is unlike the model's test period (docs/simulator.md: live vs "
            "history scenario rates) or the model in production is not the one compared (see its version)"
        )
    thin = thin_reference(quality)
    rescued = [f for f in quality.figures if f.verdict == "within" and f.one_sided_verdict == "outside"]
    if thin and (rescued or any(_finite(f.adjusted) for f in outside)):
        counted = any(f.clustered for f in quality.figures)
        lines.append(
            "the mix-adjusted reference leans on few offline frauds of " + "; ".join(thin) + "; its interval "
            "counts that, and these frauds come in incidents (several at one terminal), fewer independent "
            + (
                "observations than their count: the intervals count incidents, not frauds (design effect)"
                if counted
                else "observations than their count, so even the two-sided binomial intervals understate the "
                "spread"
            )
        )
    if any(_finite(f.adjusted) for f in outside):
        lines.append(
            "with this run's fraud mix and fraud rate taken into account, a remaining gap lies within the "
            "scenarios: this run's frauds of a scenario are harder (or easier) than the offline window's, e.g. "
            "compromised terminals met earlier in their incident, before any of their frauds was reported; or "
            "the model in production is not the one compared (see its version)"
        )
    return lines


def offline_figures(tracking_uri: str, model_name: str, version: str) -> dict[str, float]:
    """The held-out figures `make train` logged for this model version (its run's metrics)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    run_id = client.get_model_version(model_name, version).run_id
    if not run_id:
        return {}
    metrics = client.get_run(run_id).data.metrics
    return {name: float(metrics[key]) for name, key in OFFLINE_METRICS.items() if key in metrics}


def offline_scenario_rates(
    data: Path, review_db: Path, tracking_uri: str, model_name: str, version: str, window_days: float
) -> ScenarioRates:
    """The model's decisions per fraud scenario over the history it was trained on, on every row it was
    neither fitted nor tuned on: after its training period, without the validation window (the thresholds
    were tuned there). Features are the training set builder's (the same replay, with the same analyst
    labels `make train` read); ``window_days`` is the validation / test / gap length the demo trained with.
    """
    import mlflow
    from mlflow import MlflowClient

    from fraudwatch.model import load_model
    from fraudwatch_training.data import add_analyst_labels, load_history, read_analyst_labels
    from fraudwatch_training.pipeline import build_dataset
    from fraudwatch_training.split import SplitConfig, time_split

    history = add_analyst_labels(load_history(data / "transactions.parquet"), read_analyst_labels(review_db))
    dataset = build_dataset(history)
    parts = time_split(dataset.event_time, SplitConfig(window_days, window_days, window_days))
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    loaded = load_model(f"models:/{model_name}/{version}", MlflowClient(tracking_uri, tracking_uri))
    model = loaded.model
    train_end = parts.bounds["train"][1]
    if str(model.metadata.get("train_end")) != str(train_end):
        raise ValueError(
            f"model v{version} was trained until {model.metadata.get('train_end')}, not {train_end}: "
            "not trained on this history with this split"
        )
    held = (dataset.event_time >= train_end).to_numpy(dtype=bool) & ~parts.validation
    decisions = model.decide(model.score_matrix(dataset.X[held]))
    start, end = dataset.event_time[held].min(), parts.bounds["test"][1]
    days = (end - train_end).total_seconds() / 86_400 - window_days
    window = (
        f"{start:%Y-%m-%d} .. {end:%Y-%m-%d} without the validation window, {days:g} days of the history "
        f"after training, the test window included"
    )
    tx = history.transactions
    keys = [
        incident_key(int(sc), str(t), str(c), str(term))
        for sc, t, c, term in zip(
            tx["fraud_scenario"], tx["transaction_id"], tx["card_id"], tx["terminal_id"], strict=True
        )
    ]
    return ScenarioRates.count(
        dataset.scenario[held], decisions, window, np.asarray(keys, dtype=object)[held]
    )


def live_scenarios(data: Path, scored: dict[str, dict[str, Any]]) -> dict[str, int]:
    """The simulator's fraud scenario (0: genuine) of each live transaction (:func:`live_incidents`)."""
    return live_incidents(data, scored)[0]


def live_incidents(data: Path, scored: dict[str, dict[str, Any]]) -> tuple[dict[str, int], dict[str, str]]:
    """The simulator's fraud scenario (0: genuine) of each live transaction, and its incident
    (:func:`incident_key`).

    The live traffic depends only on the history's seed, never on pacing or batch sizes
    (:class:`fraudwatch.simulator.LiveSimulator`), and the producer numbers it in order
    (``<prefix><serial>``), so the demo regenerates it and checks every transaction against what was scored.
    """
    from fraudwatch.simulator import LiveSimulator, read_spec

    spec = read_spec(data)
    if spec is None:
        raise ValueError(f"no simulation.json in {data}: the live traffic cannot be regenerated")
    serial: dict[str, int] = {}
    prefixes = set()
    for tid in scored:
        prefix, _, number = tid.rpartition("-")
        if not number.isdigit():
            raise ValueError(f"transaction id {tid!r} is not the live simulator's")
        prefixes.add(prefix)
        serial[tid] = int(number)
    if len(prefixes) != 1:
        raise ValueError(f"this run's transactions come from {len(prefixes)} producers, expected 1")
    batch = LiveSimulator.continuing(spec, id_prefix=f"{prefixes.pop()}-").next_batch(
        max(serial.values()) + 1
    )
    out: dict[str, int] = {}
    incidents: dict[str, str] = {}
    for tid, i in serial.items():
        tx = batch.transactions[i]
        if tx["transaction_id"] != tid or tx["card_id"] != scored[tid]["card_id"]:
            raise ValueError(f"{tid}: the regenerated live traffic does not match the scored transaction")
        out[tid] = int(batch.scenarios[i])
        incidents[tid] = incident_key(out[tid], tid, str(tx["card_id"]), str(tx["terminal_id"]))
    return out, incidents


#: live transaction fields the features read (a replay of the live rows needs them)
LIVE_COLUMNS = ("transaction_id", "event_time", "card_id", "terminal_id", "amount", "channel", "country")


def new_entity_shares(table: Path, scored: dict[str, dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """``card_is_new`` and ``card_terminal_is_new``: (share of this run's live rows as scored, share had the
    stream started cold), the latter from an offline replay of the same live rows with no earlier state."""
    import sqlite3

    import pandas as pd

    from fraudwatch.features import FEATURE_NAMES, replay

    names = ("card_is_new", "card_terminal_is_new")
    index = [FEATURE_NAMES.index(n) for n in names]
    ids = list(scored)
    rows: list[list[float]] = []
    with contextlib.closing(sqlite3.connect(table, timeout=30)) as con:
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            marks = ",".join("?" * len(part))
            query = f"SELECT features FROM scored WHERE transaction_id IN ({marks})"
            rows += [json.loads(f) for (f,) in con.execute(query, part)]
    live = pd.DataFrame([{c: r.get(c) for c in LIVE_COLUMNS} for r in scored.values()])
    live["event_time"] = pd.to_datetime(live["event_time"], utc=True, format="ISO8601")
    cold = replay(live).features
    out = {}
    for name, j in zip(names, index, strict=True):
        warm = sum(r[j] for r in rows) / len(rows) if rows else float("nan")
        out[name] = (warm, float(cold[name].mean()) if len(cold) else float("nan"))
    return out


def wait_for_group(bootstrap: str, group: str, topic: str, timeout: float) -> bool:
    """Whether consumer group ``group`` has committed ``topic`` up to its end within ``timeout`` seconds.

    Reads the group's committed offsets without joining it (no subscription, nothing committed here)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [
            TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}

        def caught_up() -> bool:
            committed = consumer.committed(parts, timeout=10)
            return all(c.offset >= ends[c.partition] or ends[c.partition] == 0 for c in committed)

        try:
            wait_until(caught_up, timeout, f"the {group} consumer group", interval=1.0)
        except SystemExit:
            return False
        return True
    finally:
        consumer.close()


def stream_lag(metrics_text: str) -> dict[str, float]:
    """fraudwatch_stream_kafka_lag per topic, from the stream's /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "fraudwatch_stream_kafka_lag":
                out[sample.labels.get("topic", "")] = float(sample.value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of live traffic")
    parser.add_argument(
        "--speedup",
        type=float,
        default=DEMO_SPEEDUP,
        help="simulated seconds per wall second of live traffic (default: a simulated day every 5 s)",
    )
    parser.add_argument(
        "--rate", type=int, default=None, help="a fixed rate (tx/s) instead of --speedup (the clock follows)"
    )
    parser.add_argument("--days", type=int, default=60, help="days of simulated history to train on")
    parser.add_argument("--cards", type=int, default=DEMO_CARDS, help="cards of the simulated population")
    parser.add_argument("--terminals", type=int, default=DEMO_TERMINALS, help="terminals of the population")
    parser.add_argument("--stop", action="store_true", help="stop everything at the end")
    parser.add_argument("--stop-apps", action="store_true", help="only stop the API and stream it started")
    parser.add_argument(
        "--backlog-timeout", type=float, default=900.0, help="seconds to wait for the stream to catch up"
    )
    args = parser.parse_args(argv)

    from fraudwatch.config import get_settings

    settings = get_settings()
    local = settings.local_dir.resolve()
    apps = Apps(local)
    if args.stop_apps:
        for name in APPS:
            apps.stop(name)
        return 0

    py = sys.executable
    env = {
        **os.environ,
        "FRAUDWATCH_LOCAL_DIR": str(local),
        "PYSPARK_PYTHON": py,
        "PYSPARK_DRIVER_PYTHON": py,
    }
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    # live event_time is simulated time (it starts where the history ends, in the past, and runs ahead of the
    # wall clock): the event-time plausibility window cannot hold for it (docs/producer.md), so the demo's
    # API and stream run without it
    env["FRAUDWATCH_EVENT_MAX_AGE_DAYS"] = "0"
    env["FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS"] = "0"
    started = time.monotonic()
    bootstrap = settings.kafka_bootstrap

    say("1/7 local services")
    services = _services_module().Services(local, required=("kafka", "mlflow"))
    services.up()
    # where this run's records start on every topic: the summary counts this run's traffic only
    start = end_offsets(bootstrap, list(settings.all_topics))
    old_tx, old_labels = backlog(start, settings.topic_transactions), backlog(start, settings.topic_labels)
    if old_tx or old_labels:
        say(
            f"    the topics already hold {old_tx:,} transactions and {old_labels:,} labels from earlier runs: "
            "the stream scores what it has not scored yet (from its checkpoint; from the earliest offset "
            "without one) before this run's traffic, and the summary counts this run's records only"
        )

    data = local / "demo" / "data"
    population = {"days": args.days, "cards": args.cards, "terminals": args.terminals}
    say(
        f"2/7 simulated history ({args.days} days, {args.cards:,} cards, {args.terminals:,} terminals) -> {data}"
    )
    if history_spec(data, population) is None:
        subprocess.run(
            [py, "-m", "fraudwatch.simulator", "--days", str(args.days), "--cards", str(args.cards),
             "--terminals", str(args.terminals), "--out", str(data)],
            check=True, env=env,
        )  # fmt: skip
    else:
        say("    history already there")

    say("3/7 train, evaluate, register and promote fraud-detector")
    # validation, test and the label-delay gap are 7 days each by default; a short history gets shorter ones
    window = max(1, min(7, args.days // 7))
    split = ["--validation-days", str(window), "--test-days", str(window), "--gap-days", str(window)]
    subprocess.run(
        [py, "-m", "fraudwatch_training", "train", "--data", str(data / "transactions.parquet"), *split],
        check=True,
        env=env,
    )

    # warm start: the states the history ends with, point-in-time at its end (fraudwatch.bootstrap). The
    # store gets every entity it does not hold yet; the stream takes the snapshot as initial state, which Spark
    # applies only in batch 0 of a fresh checkpoint (an existing checkpoint already holds later state)
    snapshot = local / "bootstrap" / "states.parquet"
    say(f"    warm start: snapshot of the states the history ends with -> {snapshot}")
    for step in (
        ["write", "--data", str(data), "--out", str(snapshot)],
        ["load-store", "--snapshot", str(snapshot)],
    ):
        done = subprocess.run(
            [py, "-m", "fraudwatch.bootstrap", *step], check=True, env=env, capture_output=True, text=True
        )
        print(f"    {done.stdout.strip()}", flush=True)
    env["FRAUDWATCH_STREAM_WARM_START"] = str(snapshot)
    if (settings.resolved_checkpoint_dir / "scorer" / "commits").is_dir():
        say(
            "    the stream resumes from its checkpoint: its state is already past the snapshot (not applied again)"
        )

    say("4/7 scorer API, stream job and review queue")
    api = f"http://{settings.api_host}:{settings.api_port}"
    review = f"http://{settings.review_host}:{settings.review_port}"
    stream_metrics = f"http://127.0.0.1:{settings.stream_metrics_port}/metrics"

    def stream_ran_a_batch() -> bool:  # Spark is up and the query has completed a micro-batch
        return "\nfraudwatch_stream_last_batch_timestamp_seconds " in http_text(stream_metrics)

    apps.start("api", [py, "-m", "fraudwatch_api"], env)
    apps.start("stream", [py, "-m", "fraudwatch_stream"], env)
    # the analyst queue reads fraud.alerts from its consumer group's offsets (from the earliest without)
    apps.start("review", [py, "-m", "fraudwatch_review"], env)
    # a few malformed records first: they go to the DLQ, and give the stream its first micro-batch
    from confluent_kafka import Producer

    bad = [
        b"not json",
        b'{"transaction_id": "bad-1"}',
        b'{"transaction_id":"bad-2","event_time":"2026-01-01T00:00:00Z","card_id":"c","terminal_id":"t","amount":-5}',
        b'{"transaction_id":"bad-3","event_time":"yesterday","card_id":"c","terminal_id":"t","amount":1}',
        b"x" * (settings.max_record_bytes + 10),
    ]
    producer = Producer({"bootstrap.servers": bootstrap})
    for raw in bad:
        producer.produce(settings.topic_transactions, raw)
    producer.flush(10)
    # closed now: a client kept alive until --stop stops the broker logs "Connection refused" lines
    del producer
    try:
        wait_until(lambda: http_ok(f"{api}/readyz"), 240, "the scorer API /readyz")
        wait_until(lambda: http_ok(f"{review}/readyz"), 120, "the review queue /readyz")
        wait_until(stream_ran_a_batch, 300, "the stream job's first micro-batch")
        # backlog: live traffic starts once the stream has read everything already on its input topics,
        # so that this run's latency is the stream's, not the time spent on earlier runs' records
        waited = time.monotonic()
        last_said = 0.0

        def caught_up_with_backlog() -> bool:
            nonlocal last_said
            lag = stream_lag(http_text(stream_metrics))
            inputs = (settings.topic_transactions, settings.topic_labels)
            behind = sum(lag.get(t, 0.0) for t in inputs)
            if behind and time.monotonic() - last_said > 15:
                last_said = time.monotonic()
                say(f"    stream catching up with the backlog: {behind:,.0f} records behind")
            return all(t in lag for t in inputs) and behind == 0

        wait_until(caught_up_with_backlog, args.backlog_timeout, "the stream to catch up with the backlog")
        if old_tx or old_labels:
            say(f"    backlog done in {time.monotonic() - waited:,.0f}s")
    except SystemExit:
        for name in APPS:
            print(f"--- {name} log ---\n{apps.tail(name)}", file=sys.stderr)
        raise

    live = end_offsets(bootstrap, list(settings.all_topics))
    pace = ["--rate", str(args.rate)] if args.rate is not None else ["--speedup", f"{args.speedup:g}"]
    say(
        f"5/7 live traffic for {args.duration:.0f}s ({' '.join(pace)}): the history's cards, on a simulated clock "
        "continuing from its end; labels are sent when that clock passes their reported_at"
    )
    produce = subprocess.run(
        [py, "-m", "fraudwatch_producer", *pace, "--duration", str(args.duration), "--history", str(data),
         "--progress", "off"],
        check=True, env=env, capture_output=True, text=True,
    )  # fmt: skip
    for line in produce.stderr.strip().splitlines() + produce.stdout.strip().splitlines()[-1:]:
        print(f"    {line}", flush=True)

    say("6/7 waiting for the stream to score this run's traffic")
    produced_ms: dict[str, int] = {}  # this run's valid transactions -> Kafka timestamp (ms)
    for m in consume_all(bootstrap, settings.topic_transactions, live[settings.topic_transactions]):
        with contextlib.suppress(ValueError, TypeError, AttributeError, KeyError):
            produced_ms.setdefault(json.loads(m.value())["transaction_id"], m.timestamp()[1])
    scored: dict[str, dict[str, Any]] = {}
    scored_ms: dict[str, int] = {}  # first time each was published (the topic is at-least-once)

    def caught_up() -> bool:
        for m in consume_all(bootstrap, settings.topic_scored, live[settings.topic_scored], idle_seconds=1.0):
            rec = json.loads(m.value())
            if rec["transaction_id"] in produced_ms:
                scored[rec["transaction_id"]] = rec
                scored_ms.setdefault(rec["transaction_id"], m.timestamp()[1])
        return produced_ms.keys() <= scored.keys()

    wait_until(caught_up, 240, "the stream to score every valid transaction", interval=2.0)
    alerts = {
        json.loads(m.value())["transaction_id"]
        for m in consume_all(bootstrap, settings.topic_alerts, live[settings.topic_alerts])
    } & produced_ms.keys()
    dlq = []
    first = start[settings.topic_transactions]
    for m in consume_all(bootstrap, settings.topic_dlq, start[settings.topic_dlq]):
        letter = json.loads(m.value())
        part, offset = letter.get("source_partition"), letter.get("source_offset")
        ours = offset is not None and offset >= first.get(part, 0)  # not an earlier run's dead letter
        if letter.get("source_topic") == settings.topic_transactions and ours:
            dlq.append(letter)
    labels = ground_truth(
        (
            json.loads(m.value())
            for m in consume_all(bootstrap, settings.topic_labels, live[settings.topic_labels])
        ),
        produced_ms.keys(),
    )

    versions = Counter((r["model_name"], r["model_version"]) for r in scored.values())
    (model_name, model_version), _ = versions.most_common(1)[0]
    try:
        offline = offline_figures(settings.mlflow_tracking_uri, model_name, model_version)
    except Exception as exc:  # the summary still prints the live figures
        say(f"    offline figures unavailable: {exc}")
        offline = {}
    # the like-for-like reference: the model's offline figures per fraud scenario over the held-out history,
    # re-weighted to this run's labelled mix (the live scenarios regenerated from the history's seed)
    say("    offline reference: the model on the held-out history, per fraud scenario, for this run's mix")
    try:
        scenario_of, incident_of = live_incidents(data, scored)
        rates = offline_scenario_rates(
            data,
            settings.resolved_review_db_path,
            settings.mlflow_tracking_uri,
            model_name,
            model_version,
            window,
        )
    except Exception as exc:  # the summary compares with the raw test figures then, and says so
        say(f"    mix-adjusted offline figures unavailable: {exc}")
        scenario_of, rates, incident_of = None, None, None
    quality = alert_quality(scored, labels, offline, scenario_of, rates, incident_of)
    # the queue has read every alert there is once its consumer group's offsets reach the topic's end
    queued = wait_for_group(bootstrap, settings.review_group_id, settings.topic_alerts, 120)
    queue_state = json.loads(http_text(f"{review}/readyz") or "{}")
    latencies = [float(scored_ms[t] - produced_ms[t]) for t in scored_ms]
    from fraudwatch_stream.sinks import scored_table_path

    shares = new_entity_shares(scored_table_path(settings), scored)

    say("7/7 API latency: 500 sequential POST /score with live cards")
    import httpx

    fields = (
        "transaction_id",
        "event_time",
        "card_id",
        "terminal_id",
        "amount",
        "currency",
        "channel",
        "country",
    )
    api_ms: list[float] = []
    with httpx.Client(base_url=api, timeout=5) as client:
        for r in list(scored.values())[:500]:
            body = {k: r[k] for k in fields if r.get(k) is not None}
            t0 = time.perf_counter()
            resp = client.post("/score", json=body)
            api_ms.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()

    decisions = {
        d: sum(1 for r in scored.values() if r["decision"] == d) for d in ("approve", "review", "decline")
    }
    print()
    print("fraudwatch demo summary (this run's traffic only)")
    print("=" * 96)
    rows = [
        ("earlier traffic on the topics", f"{old_tx:,} transactions, {old_labels:,} labels (not counted)"),
        ("transactions produced (valid)", f"{len(produced_ms):,}"),
        ("malformed records sent", f"{len(bad)}"),
        ("scored (distinct transaction_id)", f"{len(scored):,}"),
        ("decisions", ", ".join(f"{k} {v:,}" for k, v in decisions.items())),
        ("alerts on fraud.alerts", f"{len(alerts):,}"),
        ("dead letters on transactions.dlq", f"{len(dlq):,}"),
        ("model", f"{model_name} v{model_version}"),
        ("labelled so far (ground truth)", f"{quality.labelled:,} ({quality.labelled_frauds:,} frauds)"),
        (
            "matured window (precision)",
            f"{quality.matured:,} transactions, {quality.matured_labelled:,} labelled",
        ),
    ]
    rows += [f.row() for f in quality.figures]
    open_alerts = queue_state.get("open")
    rows.append(
        (
            "review queue (open alerts)",
            f"{open_alerts:,} at {review}/queue"
            if isinstance(open_alerts, int)
            else f"not answering at {review}",
        )
    )
    rows += [
        (f"live rows with {name}", f"{warm:.1%} (a cold start: {cold:.1%} of the same rows)")
        for name, (warm, cold) in shares.items()
    ]
    rows += [
        (
            "stream latency Kafka->scored p50 / p99",
            f"{percentile(latencies, 0.5):,.0f} ms / {percentile(latencies, 0.99):,.0f} ms",
        ),
        (
            "API POST /score p50 / p99",
            f"{statistics.median(api_ms):.2f} ms / {percentile(api_ms, 0.99):.2f} ms",
        ),
        ("wall time", f"{time.monotonic() - started:,.0f} s"),
    ]
    for k, v in rows:
        print(f"  {k:<40} {v}")
    if not queued:
        print(f"  (the review queue had not read every alert after 120 s: see {apps.logs / 'review.log'})")
    print()
    if table := mix_table(quality):
        for line in table:
            print(f"  {line}")
        print()
    print(
        "  live vs offline: within = the 95% interval of the difference live - mix-adjusted offline contains 0 "
        "(two-sided: both figures' sampling spread counts); against the offline test figure, which has no "
        "interval, the figure lies in the live figure's 95% Wilson interval (one-sided)"
    )
    for line in explain(quality) or ["every compared figure is within its tolerance"]:
        print(f"  - {line}")
    print()
    print(f"  MLflow UI        {settings.mlflow_tracking_uri}")
    print(f"  API docs         {api}/docs")
    print(f"  stream metrics   {stream_metrics}")
    print(f"  review queue     {review}/queue (log in with an analyst name and FRAUDWATCH_API_TOKEN, if set)")
    if any(r.service == "prometheus" and r.healthy for r in services.status()):
        print(f"  Prometheus       http://localhost:{settings.prometheus_port}")
    print(f"  logs             {apps.logs}")
    if args.stop:
        for name in APPS:
            apps.stop(name)
        services.down()
    else:
        print("\n  Services keep running: `make down` stops everything.")
    ok = produced_ms.keys() <= scored.keys() and len(dlq) >= len(bad)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
