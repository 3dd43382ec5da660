"""Incidents, not frauds: the demo's tolerance counts clustered frauds (a compromised terminal's window, one
card's burst) as the fewer independent observations they are (Kish's design effect), on both sides."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.scripts import load_script

demo = load_script("scripts/demo.py", "fraudwatch_demo")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_the_design_effect_of_homogeneous_clusters_is_one_and_of_all_or_nothing_clusters_their_size() -> None:
    # every incident caught at the same rate: no more spread than independent rows
    assert demo.design_effect([(1, 4), (3, 4), (2, 4)]) == pytest.approx(1.0)
    assert demo.design_effect([(5, 10), (5, 10)]) == pytest.approx(1.0, abs=1e-9)
    # each incident caught entirely or not at all: 20 rows are worth 1 (m/(m-1) = 2 with 2 clusters)
    assert demo.design_effect([(0, 10), (10, 10)]) == pytest.approx(20.0)
    # by hand: N = 18, p = 1/2, residuals -3, +1, +2 -> 3/2 * 14 / 18^2 over (1/4) / 18 = 4.667
    assert demo.design_effect([(0, 6), (4, 6), (5, 6)]) == pytest.approx(14 / 3)
    # independent rows (every incident one row): N / (N - 1), the small-sample factor
    rows = [(1, 1)] * 6 + [(0, 1)] * 4
    assert demo.design_effect(rows) == pytest.approx(10 / 9)
    # one incident is one observation; a proportion of 0 or 1 has no spread to inflate; nothing is nothing
    assert demo.design_effect([(3, 7)]) == 7.0
    assert demo.design_effect([(0, 5), (0, 3)]) == 1.0 == demo.design_effect([(4, 4), (2, 2)])
    assert demo.design_effect([]) == 1.0


def test_incident_keys_group_a_terminal_s_window_and_a_card_s_burst_and_nothing_else() -> None:
    assert demo.incident_key(2, "t1", "card-1", "term-9") == demo.incident_key(2, "t2", "card-2", "term-9")
    assert demo.incident_key(3, "t1", "card-1", "term-1") == demo.incident_key(3, "t2", "card-1", "term-2")
    assert demo.incident_key(3, "t1", "card-1", "term-1") != demo.incident_key(4, "t2", "card-1", "term-1")
    assert demo.incident_key(1, "t1", "card-1", "term-1") != demo.incident_key(1, "t2", "card-1", "term-1")
    assert demo.incident_key(0, "t1", "card-1", "term-1") == "tx:t1"


def test_scenario_rates_count_incidents_and_their_design_effect_per_scenario_and_level() -> None:
    # 3 compromised terminals: 0/6, 3/6, 6/6 flagged at review (clustered), none at decline; 4 amount outliers
    scenario = [2] * 18 + [1] * 4 + [0] * 10
    decisions = ["approve"] * 6 + ["review"] * 3 + ["approve"] * 3 + ["review"] * 6 + ["decline"] * 4
    decisions += ["approve"] * 10
    keys = (
        [f"terminal:T{i // 6}" for i in range(18)]
        + [f"tx:o{i}" for i in range(4)]
        + [f"tx:g{i}" for i in range(10)]
    )
    rates = demo.ScenarioRates.count(scenario, decisions, "w", keys)
    assert rates.frauds == {2: 18, 1: 4} and rates.incidents == {2: 3, 1: 4}
    # residuals -3, 0, +3 around p = 1/2: 3/2 * 18 / 324 over (1/4) / 18 = 6
    assert rates.design["review"][2] == pytest.approx(6.0)
    assert rates.design["decline"][2] == 1.0  # none flagged: no spread
    assert rates.design["review"][1] == 1.0  # all four flagged
    plain = demo.ScenarioRates.count(scenario, decisions, "w")
    assert plain.incidents == plain.frauds and plain.design == {}
    with pytest.raises(ValueError, match="incident keys"):
        demo.ScenarioRates.count(scenario, decisions, "w", keys[:-1])


def _rates(incidents_hard: int | None) -> Any:
    """An offline window: 20 frauds of the hard scenario (4 flagged at review) in ``incidents_hard``
    incidents (the flagged ones all in the first; None: incidents not known), 10 easy ones (9 flagged),
    1,000 genuine (50 flagged)."""
    rows = (
        [(1, "review", f"tx:e{i}") for i in range(9)] + [(1, "approve", "tx:e9")]
        + [(2, "review" if i < 4 else "approve", f"terminal:H{i * (incidents_hard or 20) // 20}") for i in range(20)]
        + [(0, "review", f"tx:g{i}") for i in range(50)] + [(0, "approve", f"tx:n{i}") for i in range(950)]
    )  # fmt: skip
    scenario, decisions, keys = zip(*rows, strict=True)
    return demo.ScenarioRates.count(scenario, decisions, "w", None if incidents_hard is None else keys)


def _live(caught_hard: int, hard_incidents: int) -> tuple[dict, dict, dict, dict]:
    """40 labelled live frauds (30 hard in ``hard_incidents`` incidents, the flagged ones first; 9 of 10
    easy flagged) and 400 labelled genuine, 20 flagged."""
    decisions = (
        ["review"] * caught_hard + ["approve"] * (30 - caught_hard) + ["review"] * 9 + ["approve"]
        + ["review"] * 20 + ["approve"] * 380
    )  # fmt: skip
    scored = {
        f"t{i}": {"event_time": (T0 + timedelta(seconds=i)).isoformat(), "decision": d}
        for i, d in enumerate(decisions)
    }
    scenario = [2] * 30 + [1] * 10 + [0] * 400
    labels = {f"t{i}": s > 0 for i, s in enumerate(scenario)}
    incident = {
        f"t{i}": f"terminal:L{i * hard_incidents // 30}" if i < 30 else f"tx:t{i}" for i in range(440)
    }
    return scored, labels, {f"t{i}": s for i, s in enumerate(scenario)}, incident


def _recall(q: Any) -> Any:
    return next(f for f in q.figures if f.name == "recall at review")


def test_a_gap_carried_by_a_few_incidents_is_within_and_the_summary_shows_both_counts() -> None:
    # live 29/40 = 0.725 (20 of 30 hard frauds: two terminals caught entirely, one not at all) vs the
    # mix-adjusted 0.375 (4 of 20 hard frauds offline, all at one of 3 terminals)
    scored, labels, scenario_of, incident_of = _live(caught_hard=20, hard_incidents=3)
    q = demo.alert_quality(scored, labels, {}, scenario_of, _rates(3), incident_of)
    recall = _recall(q)
    assert (recall.hits, recall.n, recall.incidents) == (29, 40, 13)
    assert recall.design_effect > 3
    assert recall.independent_verdict == "outside"  # as if all 40 frauds and 30 offline ones were independent
    assert recall.verdict == "within"
    lo, hi = recall.interval
    ilo, ihi = recall.independent_interval
    assert lo < ilo and hi > ihi  # fewer effective rows: a wider live interval
    assert recall.adjusted_interval is not None and recall.adjusted_interval_independent is not None
    assert (recall.adjusted_interval[1] - recall.adjusted_interval[0]) > (
        recall.adjusted_interval_independent[1] - recall.adjusted_interval_independent[0]
    )
    assert "n=40 in 13 incidents" in recall.row()[1]
    lines = demo.explain(q)
    assert any(
        line.startswith("recall at review: as 40 independent rows the difference +0.350")
        and "13 incidents" in line
        and line.endswith("a longer run (DURATION=) meets more")
        for line in lines
    )
    assert q.mix is not None and q.mix.incidents == Counter({1: 10, 2: 3})
    assert "incidents behind those frauds (live / offline): compromised_terminal 3 / 3" in "\n".join(
        demo.mix_table(q)
    )


def test_the_same_gap_spread_over_many_incidents_stays_outside() -> None:
    # the same counts, but every hard fraud its own incident on both sides: a real difference
    scored, labels, scenario_of, incident_of = _live(caught_hard=20, hard_incidents=30)
    q = demo.alert_quality(scored, labels, {}, scenario_of, _rates(20), incident_of)
    recall = _recall(q)
    assert recall.incidents == 40 and recall.design_effect == pytest.approx(40 / 39)
    assert recall.verdict == "outside" == recall.independent_verdict
    assert "incidents" not in recall.row()[1]


def test_without_incidents_every_row_is_independent_as_before() -> None:
    scored, labels, scenario_of, _ = _live(caught_hard=20, hard_incidents=3)
    q = demo.alert_quality(scored, labels, {}, scenario_of, _rates(None))
    recall = _recall(q)
    assert recall.adjusted_interval == recall.adjusted_interval_independent
    assert recall.design_effect == 1.0 and recall.incidents is None
    assert recall.interval == demo.wilson(29, 40) == recall.independent_interval
    assert recall.verdict == "outside"
