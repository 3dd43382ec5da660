"""The demo summary's live-vs-offline comparison: the Wilson interval, which labels each figure may use
(labels arrive late, frauds sooner than genuine confirmations), the mix-adjusted reference and its
interval, Newcombe's interval of the difference, and the tolerance verdicts."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.scripts import load_script

demo = load_script("scripts/demo.py", "fraudwatch_demo")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _scored(decisions: list[str]) -> dict[str, dict[str, Any]]:
    return {
        f"t{i}": {"event_time": (T0 + timedelta(seconds=i)).isoformat(), "decision": d}
        for i, d in enumerate(decisions)
    }


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (1, 1000, 0.0002, 0.0057)],
)
def test_wilson_interval_matches_the_textbook_values(k: int, n: int, lo: float, hi: float) -> None:
    got = demo.wilson(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def test_no_labels_is_the_whole_unit_interval() -> None:
    assert demo.wilson(0, 0) == (0.0, 1.0)


def test_precision_uses_only_the_matured_window_and_recall_every_labelled_fraud() -> None:
    # t0..t9 flagged; t0..t4 frauds labelled early; genuine confirmations only up to t6 so far
    scored = _scored(["review"] * 5 + ["decline", "approve", "review", "review", "approve"])
    labels = {f"t{i}": True for i in range(5)} | {"t5": False, "t6": False, "t9": True}
    offline = {"precision at review": 0.8, "recall at review": 0.8, "precision at decline": 0.9}
    q = demo.alert_quality(scored, labels, offline)
    by = {f.name: f for f in q.figures}
    # matured = t0..t6 (latest genuine label is t6); labelled flagged there: t0..t5 -> 5 frauds of 6
    assert (by["precision at review"].hits, by["precision at review"].n) == (5, 6)
    # recall: labelled frauds t0..t4 and t9; flagged among them t0..t4
    assert (by["recall at review"].hits, by["recall at review"].n) == (5, 6)
    # decline: only t5 (genuine) is declined
    assert (by["precision at decline"].hits, by["precision at decline"].n) == (0, 1)
    assert by["recall at decline"].hits == 0
    assert q.matured == 7 and q.labelled == 8 and q.labelled_frauds == 6
    assert by["precision at review"].verdict == "within"
    assert by["precision at decline"].verdict.startswith("too few labels")
    assert by["recall at decline"].verdict == "no offline figure"


def test_without_a_genuine_label_precision_is_not_estimated_and_the_summary_says_why() -> None:
    # only frauds labelled so far: the naive precision over labelled alerts would be a meaningless 1.0
    scored = _scored(["review"] * 8)
    labels = {f"t{i}": True for i in range(8)}
    q = demo.alert_quality(scored, labels, {"precision at review": 0.5})
    precision = next(f for f in q.figures if f.name == "precision at review")
    assert precision.n == 0 and q.unlabelled_genuine_window
    assert any("no genuine label" in line for line in demo.explain(q))


def test_a_figure_outside_its_interval_is_flagged_and_explained() -> None:
    # 40 flagged and labelled, 4 frauds: 0.10 [0.04, 0.23] cannot be an offline 0.80
    scored = _scored(["review"] * 40 + ["approve"] * 10)
    labels = {f"t{i}": i < 4 for i in range(50)}
    q = demo.alert_quality(scored, labels, {"precision at review": 0.8})
    precision = next(f for f in q.figures if f.name == "precision at review")
    assert precision.verdict == "outside"
    lines = demo.explain(q)
    assert any(line.startswith("precision at review: 0.100 from 4/40") for line in lines)
    assert any("unlike the model's test period" in line for line in lines)


def test_stream_lag_is_read_per_topic_from_the_metrics_text() -> None:
    text = (
        "# TYPE fraudwatch_stream_kafka_lag gauge\n"
        'fraudwatch_stream_kafka_lag{topic="transactions"} 120.0\n'
        'fraudwatch_stream_kafka_lag{topic="labels"} 0.0\n'
    )
    assert demo.stream_lag(text) == {"transactions": 120.0, "labels": 0.0}
    assert demo.stream_lag("") == {}


# ------------------------------------------------------------------- the mix-adjusted offline reference
#: an offline window: scenario 1 (amount outlier) easy, scenario 2 (compromised terminal) hard
OFFLINE_ROWS = (
    [(1, "decline")] * 5 + [(1, "review")] * 4 + [(1, "approve")]  # 10 frauds: 9 at review, 5 at decline
    + [(2, "decline")] * 2 + [(2, "review")] * 2 + [(2, "approve")] * 16  # 20 frauds: 4 / 2
    + [(0, "decline")] * 2 + [(0, "review")] * 48 + [(0, "approve")] * 950  # 1,000 genuine: 50 / 2 flagged
)  # fmt: skip


def _rates() -> Any:
    scenario, decisions = zip(*OFFLINE_ROWS, strict=True)
    return demo.ScenarioRates.count(scenario, decisions, "test window")


def test_scenario_rates_count_each_scenario_and_the_genuine_flags_at_both_levels() -> None:
    rates = _rates()
    assert rates.frauds == {1: 10, 2: 20} and rates.genuine == 1000
    assert rates.caught == {"review": {1: 9, 2: 4}, "decline": {1: 5, 2: 2}}
    assert rates.flagged_genuine == {"review": 50, "decline": 2}
    assert rates.recall("review", 2) == pytest.approx(0.2)
    assert rates.recall("review", 3) is None  # no such fraud in the window
    assert rates.pooled_recall("review") == pytest.approx(13 / 30)
    assert rates.false_positive_rate("decline") == pytest.approx(0.002)


def test_mix_adjusted_figures_weight_each_scenario_by_the_live_mix() -> None:
    # live: mostly the hard scenario, and a lower fraud rate in the matured window than offline
    mix = demo.LiveMix(
        frauds=Counter({2: 30, 1: 10}), matured_frauds=Counter({2: 6, 1: 4}), matured_genuine=500
    )
    adjusted, missing = demo.mix_adjusted(_rates(), mix)
    assert missing == []
    assert adjusted["recall at review"] == pytest.approx((30 * 0.2 + 10 * 0.9) / 40)  # 0.375
    assert adjusted["recall at decline"] == pytest.approx((30 * 0.1 + 10 * 0.5) / 40)  # 0.2
    # TP = 6 x 0.2 + 4 x 0.9 = 4.8; FP = 500 x 50/1000 = 25
    assert adjusted["precision at review"] == pytest.approx(4.8 / 29.8)
    # TP = 6 x 0.1 + 4 x 0.5 = 2.6; FP = 500 x 2/1000 = 1
    assert adjusted["precision at decline"] == pytest.approx(2.6 / 3.6)


def test_the_offline_window_s_own_mix_gives_back_its_raw_figures() -> None:
    rates = _rates()
    own = demo.LiveMix(Counter({1: 10, 2: 20}), Counter({1: 10, 2: 20}), 1000)
    adjusted, _ = demo.mix_adjusted(rates, own)
    assert adjusted["recall at review"] == pytest.approx(13 / 30)
    assert adjusted["recall at decline"] == pytest.approx(7 / 30)
    assert adjusted["precision at review"] == pytest.approx(13 / (13 + 50))
    assert adjusted["precision at decline"] == pytest.approx(7 / (7 + 2))


def test_a_live_scenario_the_window_lacks_takes_the_pooled_recall_and_is_named() -> None:
    mix = demo.LiveMix(Counter({1: 10, 5: 10}), Counter(), 0)
    adjusted, missing = demo.mix_adjusted(_rates(), mix)
    assert missing == [5]
    assert adjusted["recall at review"] == pytest.approx((10 * 0.9 + 10 * 13 / 30) / 20)
    assert "precision at review" not in adjusted  # no matured labels: nothing to weight
    q = demo.Quality([], 20, 20, 0, 0, False, mix, _rates(), missing)
    assert any("no fraud of impossible_travel" in line for line in demo.explain(q))


def _live_run(caught_hard: int) -> tuple[dict[str, dict[str, Any]], dict[str, bool], dict[str, int]]:
    """40 labelled live frauds (30 of the hard scenario, ``caught_hard`` of them flagged; 9 of the 10 easy
    ones flagged) and 400 labelled genuine transactions, 20 of them flagged, all in the matured window."""
    decisions = (
        ["review"] * caught_hard + ["approve"] * (30 - caught_hard) + ["review"] * 9 + ["approve"]
        + ["review"] * 20 + ["approve"] * 380
    )  # fmt: skip
    scored = _scored(decisions)
    scenario = [2] * 30 + [1] * 10 + [0] * 400
    labels = {f"t{i}": s > 0 for i, s in enumerate(scenario)}
    return scored, labels, {f"t{i}": s for i, s in enumerate(scenario)}


def test_the_tolerance_applies_to_the_mix_adjusted_figure_and_the_summary_says_what_moved() -> None:
    # live recall at review 15/40 = 0.375, exactly the mix-adjusted figure; the raw test figure 0.95 is far off
    scored, labels, scenario_of = _live_run(caught_hard=6)
    offline = {"recall at review": 0.95, "precision at review": 0.2}
    q = demo.alert_quality(scored, labels, offline, scenario_of, _rates())
    recall = next(f for f in q.figures if f.name == "recall at review")
    assert (recall.hits, recall.n) == (15, 40)
    assert recall.adjusted == pytest.approx(0.375)
    assert recall.verdict == "within" and recall.raw_verdict == "outside"
    _, text = recall.row()
    assert "offline test 0.950, mix-adjusted 0.375" in text and text.endswith("within")
    assert q.mix is not None
    assert q.mix.frauds == Counter({2: 30, 1: 10}) and q.mix.matured_genuine == 400
    assert q.mix.caught["review"] == Counter({2: 6, 1: 9})
    lines = demo.explain(q)
    assert any(line.startswith("recall at review: outside") and "fraud mix" in line for line in lines)
    table = "\n".join(demo.mix_table(q))
    assert "compromised_terminal" in table and "0.20 / 0.00" in table  # live recall of the hard scenario


def test_a_gap_the_mix_does_not_explain_is_reported_with_the_reference_s_own_spread() -> None:
    # live catches 25 of the 30 hard frauds where the offline window caught 4 of 20: not the mix, and not
    # the spread of either side
    scored, labels, scenario_of = _live_run(caught_hard=25)
    q = demo.alert_quality(scored, labels, {"recall at review": 0.95}, scenario_of, _rates())
    recall = next(f for f in q.figures if f.name == "recall at review")
    assert recall.verdict == "outside" and recall.rule == "two-sided"
    lines = demo.explain(q)
    line = next(line for line in lines if line.startswith("recall at review: 0.850 from 34/40"))
    assert "vs mix-adjusted offline 0.375 [" in line and "excludes 0 (two-sided rule)" in line
    assert any(
        "few offline frauds of compromised_terminal (75% of this run's frauds)" in line
        and "understate the spread" in line
        for line in lines
    )
    assert any("within the scenarios" in line for line in lines)


# -------------------------------------------------------- the reference's interval and the two-sided rule
def _scaled(rates: Any, factor: int) -> Any:
    """The same offline rates from ``factor`` times as many rows."""
    return demo.ScenarioRates(
        rates.window,
        {s: k * factor for s, k in rates.frauds.items()},
        {level: {s: k * factor for s, k in c.items()} for level, c in rates.caught.items()},
        rates.genuine * factor,
        {level: k * factor for level, k in rates.flagged_genuine.items()},
    )


def test_newcombe_s_interval_of_a_difference_matches_the_published_example() -> None:
    # Newcombe (1998), Table II, example (b): 56/70 vs 48/80, method 10 (Wilson score, no correction)
    p1, p2 = 56 / 70, 48 / 80
    lo, hi = demo.newcombe_difference(p1, demo.wilson(56, 70), p2, demo.wilson(48, 80))
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    # example (e): 9/10 vs 3/10 -> [0.1705, 0.8090]
    assert demo.newcombe_difference(0.9, demo.wilson(9, 10), 0.3, demo.wilson(3, 10)) == pytest.approx(
        (0.1705, 0.8090), abs=1e-4
    )


def test_the_reference_interval_holds_the_point_estimate_and_narrows_with_more_offline_counts() -> None:
    mix = demo.LiveMix(
        frauds=Counter({2: 30, 1: 10}), matured_frauds=Counter({2: 6, 1: 4}), matured_genuine=500
    )
    widths = []
    for factor in (1, 10, 100):
        rates = _scaled(_rates(), factor)
        point, _ = demo.mix_adjusted(rates, mix)
        spread = demo.reference_intervals(rates, mix)
        assert spread.keys() == point.keys()
        for name, (lo, hi) in spread.items():
            assert lo < point[name] < hi, (factor, name)
        widths.append({name: hi - lo for name, (lo, hi) in spread.items()})
    for name in widths[0]:
        assert widths[0][name] > widths[1][name] > widths[2][name], name
    # the spread of 20 hard frauds at 0.2, 10 easy at 0.9, weighted 3/4 and 1/4: sd about 0.071
    lo, hi = demo.reference_intervals(_rates(), mix)["recall at review"]
    assert hi - lo == pytest.approx(4 * 0.071, abs=0.04)
    # a fixed seed: the summary prints the same interval for the same counts
    assert demo.reference_intervals(_rates(), mix) == demo.reference_intervals(_rates(), mix)


def test_a_scenario_caught_never_or_always_offline_still_has_a_spread() -> None:
    # 0 of 18 and 15 of 15 flagged offline are estimates, not exact 0 and 1: a bootstrap of Binomial(n, k/n)
    # would draw the same counts every time and print a zero-width interval
    rates = demo.ScenarioRates(
        "w", {4: 18, 1: 15}, {"review": {1: 15}, "decline": {}}, 1000, {"review": 20, "decline": 0}
    )
    mix = demo.LiveMix(Counter({4: 8, 1: 8}), Counter({4: 8, 1: 8}), 400)
    point, _ = demo.mix_adjusted(rates, mix)
    spread = demo.reference_intervals(rates, mix)
    lo, hi = spread["recall at review"]
    assert point["recall at review"] == pytest.approx(0.5)
    # half the weight on a recall in Wilson's [0, 0.18] and half on one in [0.80, 1]: a width of about 0.1
    assert lo < 0.5 < hi and 0.05 < hi - lo < 0.2
    # nothing flagged at decline anywhere: the point is 0, the interval starts there and is not empty
    assert spread["recall at decline"][0] == 0.0 < spread["recall at decline"][1] < 0.15
    assert spread["precision at review"][0] < point["precision at review"] < spread["precision at review"][1]


def test_a_thin_reference_turns_a_one_sided_outside_into_a_two_sided_within_a_thick_one_does_not() -> None:
    # live recall at review 23/40 = 0.575 [0.42, 0.72] excludes the mix-adjusted 0.375
    scored, labels, scenario_of = _live_run(caught_hard=14)
    thin = demo.alert_quality(scored, labels, {"recall at review": 0.95}, scenario_of, _rates())
    recall = next(f for f in thin.figures if f.name == "recall at review")
    assert recall.adjusted == pytest.approx(0.375) and recall.rule == "two-sided"
    assert recall.one_sided_verdict == "outside"
    assert recall.verdict == "within"  # 20 offline hard frauds: the reference is too uncertain to tell
    d, lo, hi = recall.difference
    assert d == pytest.approx(0.2) and lo < 0 < hi
    _, text = recall.row()
    assert "mix-adjusted 0.375 [" in text and text.endswith("within")
    lines = demo.explain(thin)
    assert any(
        line.startswith("recall at review: the mix-adjusted 0.375 lies outside the live interval")
        and "(two-sided rule): within" in line
        for line in lines
    )
    # the same offline rates from ten times the rows: the reference is sharp, and the gap is real
    thick = demo.alert_quality(scored, labels, {"recall at review": 0.95}, scenario_of, _scaled(_rates(), 10))
    recall = next(f for f in thick.figures if f.name == "recall at review")
    assert recall.one_sided_verdict == "outside" and recall.verdict == "outside"
    assert recall.difference[1] > 0


def test_without_a_reference_interval_the_one_sided_rule_applies_and_is_named() -> None:
    figure = demo.Figure("recall at review", 23, 40, 0.95, adjusted=0.375)
    assert figure.rule == "one-sided" and figure.difference is None
    assert figure.verdict == "outside" == figure.one_sided_verdict
    q = demo.Quality([figure], 40, 40, 0, 0, False)
    assert any("(one-sided rule: the reference has no interval)" in line for line in demo.explain(q))


def test_without_the_live_scenarios_the_raw_test_figure_is_the_reference() -> None:
    scored, labels, _ = _live_run(caught_hard=6)
    q = demo.alert_quality(scored, labels, {"recall at review": 0.95}, None, _rates())
    recall = next(f for f in q.figures if f.name == "recall at review")
    assert recall.adjusted is None and recall.verdict == "outside"
    assert demo.mix_table(q) == []
    assert any("unlike the model's test period" in line for line in demo.explain(q))


def test_the_live_scenarios_are_regenerated_from_the_history_s_seed(tmp_path: Path) -> None:
    """The producer's own live source, in uneven batches, against the demo's regeneration."""
    import orjson

    from fraudwatch.simulator import simulate
    from fraudwatch_producer.__main__ import build_parser, plan_live
    from fraudwatch_producer.sources import LiveSource

    simulate(days=2, n_cards=3000, n_terminals=600, seed=7).write(tmp_path)
    args = build_parser().parse_args(["--rate", "0", "--history", str(tmp_path)])
    source = LiveSource(plan_live(args, tmp_path).simulator)
    scored: dict[str, dict[str, Any]] = {}
    for n in (1, 700, 13, 4000, 2500, 9000):
        for raw in source.next(n, time.monotonic()).values:
            tx = orjson.loads(raw)
            scored[tx["transaction_id"]] = tx
    scenario_of = demo.live_scenarios(tmp_path, scored)
    assert scenario_of.keys() == scored.keys()
    assert sum(1 for s in scenario_of.values() if s) == source.frauds > 0
    # a transaction that is not the regenerated one is refused, not counted
    first = next(iter(scored))
    scored[first] = {**scored[first], "card_id": "card-someone-else"}
    with pytest.raises(ValueError, match="does not match"):
        demo.live_scenarios(tmp_path, scored)


def test_the_ground_truth_is_the_simulator_s_labels_not_an_analyst_s_decisions() -> None:
    records = [
        {"transaction_id": "t1", "is_fraud": True},
        {"transaction_id": "t1", "is_fraud": False, "source": "analyst:ana"},  # an analyst cleared it
        {"transaction_id": "t2", "is_fraud": False},
        {"transaction_id": "t3", "is_fraud": True, "source": "analyst:ana"},  # no simulator label yet
        {"transaction_id": "earlier-run", "is_fraud": True},
    ]
    assert demo.ground_truth(records, {"t1", "t2", "t3"}) == {"t1": True, "t2": False}
