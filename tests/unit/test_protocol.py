"""The prequential protocol: fold dates (the Handbook's and derived ones), labels known at the cut-off, and
the Handbook's test-set filtering of known-compromised cards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudwatch_training.protocol import (
    HANDBOOK_BASE,
    NS_PER_DAY,
    Fold,
    Protocol,
    check_selection_before_test,
    day_number,
    day_start_ns,
    derive_base,
    known_at,
    prequential_folds,
    without_known_compromised,
)


def _dates(folds: list[Fold], key: str) -> list[str]:
    return [f.describe()[key] for f in folds]


def test_handbook_folds_are_the_handbooks() -> None:
    valid, test = prequential_folds(day_number(HANDBOOK_BASE))
    # Chapter 5 ModelSelection: validation training starts 07-11, 07-04, 06-27, 06-20
    assert [f.describe()["train"][:10] for f in valid] == [
        "2018-07-11",
        "2018-07-04",
        "2018-06-27",
        "2018-06-20",
    ]
    assert _dates(valid, "validation") == [
        "2018-07-25..2018-07-31", "2018-07-18..2018-07-24", "2018-07-11..2018-07-17", "2018-07-04..2018-07-10",
    ]  # fmt: skip
    assert [f.describe()["train"][:10] for f in test] == [
        "2018-08-15",
        "2018-08-08",
        "2018-08-01",
        "2018-07-25",
    ]
    assert _dates(test, "test") == [
        "2018-08-29..2018-09-04", "2018-08-22..2018-08-28", "2018-08-15..2018-08-21", "2018-08-08..2018-08-14",
    ]  # fmt: skip
    # the baseline split is the earliest test fold: train 07-25..07-31, delay 08-01..08-07, test 08-08..08-14
    assert test[-1].describe() == {
        "train": "2018-07-25..2018-07-31", "delay": "2018-08-01..2018-08-07", "test": "2018-08-08..2018-08-14",
    }  # fmt: skip
    check_selection_before_test(valid, test)
    # the model of a fold is fitted when its assessment window starts
    assert test[-1].cutoff_ns == day_start_ns(day_number("2018-08-08"))


def test_selection_check_rejects_a_validation_window_inside_the_test_weeks() -> None:
    valid, test = prequential_folds(day_number(HANDBOOK_BASE))
    late = Fold(
        "validation", test[-1].train_start, test[-1].train_end, test[-1].test_start, test[-1].test_end
    )
    with pytest.raises(ValueError, match="past the first test day"):
        check_selection_before_test([*valid, late], test)


def test_derived_folds_end_on_the_last_day_and_fit_the_history() -> None:
    first, last = day_number("2018-04-01"), day_number("2018-09-30")
    base = derive_base(first, last)
    valid, test = prequential_folds(base)
    assert max(f.test_end for f in test) - 1 == last
    assert test[0].describe()["test"] == "2018-09-24..2018-09-30"
    assert min(f.train_start for f in valid) >= first
    check_selection_before_test(valid, test)
    p = Protocol(train_days=3, delay_days=2, assess_days=2, n_folds=2)
    base = derive_base(100, 100 + p.span_days - 1, p)
    valid, test = prequential_folds(base, p)
    assert min(f.train_start for f in valid) == 100 and max(f.test_end for f in test) == 100 + p.span_days
    assert p.span_days == 15
    with pytest.raises(ValueError, match=r"needs 27"):
        derive_base(100, 100 + p.span_days - 1, p, warmup_days=12)


def test_training_labels_only_as_known_at_the_cutoff() -> None:
    cutoff = day_start_ns(10)
    fraud = np.array([True, True, True, False])
    reported = np.array([cutoff - 1, cutoff, cutoff + NS_PER_DAY, cutoff - 5])
    assert known_at(fraud, reported, cutoff).tolist() == [1, 0, 0, 0]


def _handbook_get_train_test_set(
    days: np.ndarray, cards: np.ndarray, fraud: np.ndarray, train_start: int, delta: int = 7
) -> np.ndarray:
    """A literal port of the Handbook's ``get_train_test_set`` (shared_functions.py): the test rows kept."""
    known = set(cards[(days >= train_start) & (days < train_start + delta) & fraud].tolist())
    keep = np.zeros(len(days), dtype=bool)
    for day in range(delta):
        test_day = train_start + delta + delta + day
        delay_day = train_start + delta + day - 1
        known |= set(cards[(days == delay_day) & fraud].tolist())
        keep |= (days == test_day) & ~np.isin(cards, list(known))
    return keep


def test_known_compromised_filter_equals_the_handbooks_with_its_7_day_delay() -> None:
    rng = np.random.default_rng(4)
    n = 20_000
    t_ns = np.sort(rng.integers(0, 40 * NS_PER_DAY, n))
    days = t_ns // NS_PER_DAY
    cards = rng.integers(0, 400, n)
    fraud = rng.random(n) < 0.03
    reported = t_ns + 7 * NS_PER_DAY  # the Handbook protocol's delay
    for train_start in (3, 10, 17):
        fold = Fold("test", train_start, train_start + 7, train_start + 14, train_start + 21)
        ours = without_known_compromised(days, cards, fraud, reported, fold.window_mask(days), train_start)
        theirs = _handbook_get_train_test_set(days, cards, fraud, train_start)
        assert ours.sum() > 0 and (ours != fold.window_mask(days)).any()  # it does drop cards
        np.testing.assert_array_equal(ours, theirs)


def test_known_compromised_uses_reported_time_and_ignores_frauds_before_training() -> None:
    # card 1: fraud on day 0 (before training, day 5): ignored; card 2: fraud on day 12 reported on day 13
    day = np.array([0, 12, 14, 14, 13, 13])
    card = np.array([1, 2, 1, 2, 2, 3])
    fraud = np.array([True, True, False, False, False, False])
    reported = np.array([day_start_ns(1), day_start_ns(13) + 5, 0, 0, 0, 0])
    window = day >= 13
    kept = without_known_compromised(day, card, fraud, reported, window, since_day=5)
    # row 2 (card 1, day 14) kept; row 3 (card 2, day 14) dropped; row 4 (card 2, day 13): reported during
    # day 13, not before it starts -> kept; row 5 kept
    assert kept.tolist() == [False, False, True, False, True, True]


def test_day_number_is_utc() -> None:
    assert day_number(pd.Timestamp("1970-01-02 23:59", tz="UTC")) == 1
    assert day_number("1970-01-02T01:00:00+02:00") == 0
