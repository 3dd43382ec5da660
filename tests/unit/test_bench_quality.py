"""The quality benchmark's own logic: the Handbook's daily card precision@k, selection that never sees a test
week, the choice rule, the verdicts, and the whole benchmark on a simulated history whose columns are
renamed (CSV and Parquet), with errors that name a missing or ill-typed column."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from fraudwatch.features import FEATURE_NAMES
from fraudwatch.simulator import simulate
from fraudwatch_training.data import ColumnMapping, DataError, apply_mapping
from fraudwatch_training.metrics import card_precision_at_k
from fraudwatch_training.protocol import NS_PER_DAY, Protocol, derive_base, prequential_folds
from fraudwatch_training.selection import SEARCH_SPACE, Candidate, FoldData, FoldResult, choose, run_fold
from tests.scripts import load_script


def _bench() -> ModuleType:
    return load_script("bench/bench_quality.py", "bench_quality")


def _handbook_card_precision_top_k(frame: pd.DataFrame, k: int) -> float:
    """A literal port of the Handbook's ``card_precision_top_k`` (shared_functions.py)."""
    days = sorted(frame["day"].unique())
    detected: list[object] = []
    per_day = []
    for d in days:
        df_day = frame[frame["day"] == d]
        df_day = df_day[~df_day["card"].isin(detected)]
        grouped = (
            df_day.groupby("card").agg({"score": "max", "y": "max"}).sort_values("score", ascending=False)
            .reset_index()
        )  # fmt: skip
        top = grouped.head(k)
        hits = top[top["y"] == 1]["card"].tolist()
        detected.extend(hits)
        per_day.append(len(hits) / k)
    return float(np.mean(per_day))


def test_daily_card_precision_equals_the_handbooks() -> None:
    rng = np.random.default_rng(7)
    n = 6000
    frame = pd.DataFrame(
        {
            "day": rng.integers(0, 7, n),
            "card": rng.integers(0, 500, n),
            "y": (rng.random(n) < 0.05).astype(int),
        }
    )
    frame["score"] = rng.random(n) + 0.1 * frame["y"]
    for k in (10, 100):
        ours = card_precision_at_k(frame["day"], frame["card"], frame["y"], frame["score"], k)
        assert ours == pytest.approx(_handbook_card_precision_top_k(frame, k))
        assert 0 < ours < 1


def _synthetic(days: int = 80, per_day: int = 300, seed: int = 0) -> FoldData:
    rng = np.random.default_rng(seed)
    n = days * per_day
    t = np.sort(rng.integers(0, days * NS_PER_DAY, n))
    y = rng.random(n) < 0.04
    X = rng.normal(size=(n, len(FEATURE_NAMES)))
    X[:, 0] += 1.5 * y
    return FoldData(X, y, t + 7 * NS_PER_DAY, t // NS_PER_DAY, rng.integers(0, 300, n))


LR = [c for c in SEARCH_SPACE if c.name == "lr_balanced"]


def test_no_test_week_row_reaches_selection() -> None:
    p = Protocol()
    data = _synthetic()
    valid, test = prequential_folds(derive_base(0, 79, p), p)
    first_test_day = min(f.test_start for f in test)

    def scores(d: FoldData, folds: list) -> list[dict]:
        return [run_fold(d, f, LR, lambda: 0.0).scores for f in folds]

    before_valid, before_test = scores(data, valid), scores(data, test)
    # scramble every row from the first test day on: features, labels and report times
    rng = np.random.default_rng(1)
    late = data.day >= first_test_day
    X = data.X.copy()
    X[late] = rng.normal(size=(int(late.sum()), X.shape[1])) * 10
    fraud = data.is_fraud.copy()
    fraud[late] = ~fraud[late]
    scrambled = FoldData(X, fraud, data.reported_ns, data.day, data.card)
    assert scores(scrambled, valid) == before_valid  # selection cannot tell
    assert scores(scrambled, test) != before_test  # while the test folds do see it


def test_choice_is_by_mean_validation_ap_and_ties_go_to_the_first_listed() -> None:
    a, b, c = (Candidate(n, "logistic_regression", (("lr_balanced", 1.0),)) for n in "abc")
    folds = [
        FoldResult({}, 1, 1, 0, 1, 1, {
            "a": {"average_precision": 0.5, "auc_roc": 0.5, "card_precision_at_100": 0.1},
            "b": {"average_precision": ap_b, "auc_roc": 0.9, "card_precision_at_100": 0.3},
            "c": {"average_precision": ap_b, "auc_roc": 0.9, "card_precision_at_100": 0.3},
        }, 0.0)
        for ap_b in (0.7, 0.5)
    ]  # fmt: skip
    best, why = choose(folds, [a, b, c])
    assert best.name == "b" and "runner-up c" in why and "gap 0.0000" in why
    best, _ = choose(folds, [c, b, a])
    assert best.name == "c"


def test_verdicts_need_a_difference_beyond_the_fold_sd() -> None:
    bench = _bench()
    assert bench.verdict(0.02, 0.011) == "beats"
    assert bench.verdict(0.001, 0.011) == "matches"
    assert bench.verdict(-0.02, 0.011) == "below"
    rows = bench.compare(
        {"auc_roc": 0.88, "average_precision": 0.70, "card_precision_at_100": 0.306},
        {"auc_roc": 0.01, "average_precision": 0.02, "card_precision_at_100": 0.011},
        {"XGBoost": (0.869, 0.687, 0.303)},
    )
    assert [rows[0][m]["verdict"] for m in ("auc_roc", "average_precision", "card_precision_at_100")] == [
        "beats", "matches", "matches",
    ]  # fmt: skip


RENAMED = {
    "card_id": "PAN", "terminal_id": "MERCHANT", "event_time": "TS", "amount": "AMT", "is_fraud": "FRAUD",
    "reported_at": "REPORTED", "channel": "CHAN", "country": "CTRY", "merchant_category": "MCC",
}  # fmt: skip


@pytest.fixture(scope="module")
def renamed_history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    history = simulate(days=30, n_cards=1000, n_terminals=300, seed=1)
    frame = history.transactions.rename(columns={ours: theirs for ours, theirs in RENAMED.items()})
    frame = frame.drop(columns=["transaction_id", "fraud_scenario"])
    d = tmp_path_factory.mktemp("renamed")
    frame.to_parquet(d / "history.parquet")
    frame.to_csv(d / "history.csv", index=False)
    (d / "mapping.json").write_text(json.dumps({"columns": RENAMED}))
    return {"parquet": d / "history.parquet", "csv": d / "history.csv", "mapping": d / "mapping.json"}


SMALL = ["--train-days", "3", "--delay-days", "2", "--assess-days", "2", "--folds", "2", "--warmup-days", "7"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_benchmark_on_any_history_through_a_mapping_file(
    renamed_history: dict[str, Path], tmp_path: Path, fmt: str
) -> None:
    bench = _bench()
    out = tmp_path / "quality.json"
    repo_results = bench.REPO_RESULTS.read_bytes()
    code = bench.main(
        ["--data", str(renamed_history[fmt]), "--mapping", str(renamed_history["mapping"]), "--out", str(out),
         "--candidates", "lr_balanced,lr_unweighted", *SMALL]
    )  # fmt: skip
    assert code == 0
    r = json.loads(out.read_text())
    assert r["preset"] is None and r["protocol"]["dates"] == "derived from the data's date range"
    assert r["labels"] == "reported-at column 'REPORTED'"
    assert len(r["validation"]["folds"]) == 2 and len(r["test"]["folds"]) == 2
    assert r["chosen"]["candidate"] in {"lr_balanced", "lr_unweighted"}
    assert set(r["validation"]["summary"]) == {"lr_balanced", "lr_unweighted"}
    assert set(r["test"]["folds"][0]["scores"]) == {r["chosen"]["candidate"]}  # only the chosen one is tested
    # the latest test window ends on the last day of the data
    assert r["test"]["folds"][0]["fold"]["test"].endswith(r["date_range"][1][:10])
    # the simulator's lognormal delays: some training frauds were not yet reported at the cut-off
    assert 0 < r["labels_at_cutoff"]["unknown_at_cutoff"] < r["labels_at_cutoff"]["training_frauds"]
    assert r["comparisons"] == {}  # nothing published to compare a foreign history with
    assert bench.REPO_RESULTS.read_bytes() == repo_results  # the repo's results are left alone
    # a run compared with itself: same labels, so paired per test week, every difference 0
    (same,) = bench.related_runs(r, [f"itself={out}"])
    assert same["same_labels"] and same["paired"]["test_weeks"] == 2
    assert same["paired"]["average_precision"]["difference"] == 0.0


def test_flags_instead_of_a_mapping_file_and_errors_name_the_column(
    renamed_history: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = pd.read_parquet(renamed_history["parquet"])
    flags = ColumnMapping(RENAMED)
    assert apply_mapping(raw, flags).transactions["card_id"].nunique() > 100
    with pytest.raises(DataError, match=r"no column 'PAN' \(for card_id\)"):
        apply_mapping(raw.drop(columns=["PAN"]), flags)
    bad = raw.assign(AMT=raw["AMT"].astype(str).where(raw.index != 5, "twelve"))
    with pytest.raises(
        DataError, match=r"column 'AMT' \(mapped to amount\) must hold numbers, found 'twelve'"
    ):
        apply_mapping(bad, flags)
    with pytest.raises(DataError, match=r"column 'TS' \(mapped to event_time\) must hold timestamps"):
        apply_mapping(raw.assign(TS=np.arange(len(raw))), flags)
    with pytest.raises(DataError, match=r"column 'FRAUD' \(mapped to is_fraud\)"):
        apply_mapping(raw.assign(FRAUD="maybe"), flags)
    with pytest.raises(DataError, match=r"no column for \['amount'\]"):
        ColumnMapping({k: v for k, v in RENAMED.items() if k != "amount"})
    bench = _bench()
    columns = [f"--column={f}={c}" for f, c in {**RENAMED, "card_id": "NOPE"}.items()]
    code = bench.main(["--data", str(renamed_history["csv"]), *columns, "--out", str(tmp_path / "q.json")])
    assert code == 2 and not (tmp_path / "q.json").exists()
    assert "no column 'NOPE' (for card_id)" in capsys.readouterr().out
