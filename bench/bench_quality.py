"""Detection quality with the Fraud Detection Handbook's prequential protocol, on its dataset or any other.

1. Features: the whole history is replayed once through ``fraudwatch.features`` point-in-time (each label
   at its reported-at); slicing afterwards is legitimate because features only ever use the past.
2. Selection: every candidate of the declared search space (``fraudwatch_training.selection``) is fitted
   on each VALIDATION fold (the Handbook's: training starts 07-11, 07-04, 06-27, 06-20; 1-week training,
   1-week delay, 1-week validation) and the one with the highest mean validation AP is chosen, once.
3. Test: the chosen candidate, frozen, is fitted on each TEST fold (training starts 07-25 .. 08-15) and
   scored on its test week, once. No test-week row is used before this step.
4. Training targets use only the frauds reported before the fold's cut-off (the start of its assessment
   window); the rest count as genuine for training and are still frauds in evaluation.
5. Assessment windows drop cards already known compromised (the Handbook's ``get_train_test_set``);
   metrics are AUC ROC, AP and the Handbook's card precision@100, per fold and mean ± SD across folds;
   every published Handbook figure is compared by its difference from our mean against our fold SD.

Any history: ``--mapping FILE`` (JSON/TOML), ``--column field=COLUMN`` flags or ``--preset``; the Handbook's
raw file is recognised by its columns. Without a preset the fold dates are derived from the data's own date
range. Results go to ``--out``; only a Handbook run writes bench/results/quality.json and the quality
section of docs/benchmarks.md by default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fraudwatch.features import FEATURE_NAMES, replay
from fraudwatch_training.data import (
    PRESETS,
    ColumnMapping,
    DataError,
    History,
    apply_mapping,
    detect_preset,
    read_mapping,
    read_table,
)
from fraudwatch_training.protocol import (
    HANDBOOK_BASE,
    Protocol,
    check_selection_before_test,
    day_number,
    derive_base,
    epoch_ns,
    prequential_folds,
)
from fraudwatch_training.selection import (
    METRICS,
    SEARCH_SPACE,
    Candidate,
    FoldData,
    FoldResult,
    choose,
    describe_space,
    run_fold,
    summarise,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared/datasets/fraud_handbook_simulated/transactions_raw.parquet"
REPO_RESULTS = ROOT / "bench/results/quality.json"
REPO_DOCS = ROOT / "docs/benchmarks.md"
# The Handbook's published test figures (AUC ROC, AP, CP@100); see the dataset's README.
PUBLISHED: dict[str, dict[str, tuple[float, float, float]]] = {
    # Chapter 5 (and 6, 7): test performance at the parameters chosen on the same validation folds
    "prequential": {
        "decision tree": (0.797, 0.579, 0.284),
        "logistic regression": (0.868, 0.623, 0.297),
        "random forest": (0.870, 0.678, 0.299),
        "XGBoost": (0.869, 0.687, 0.303),
        "balanced bagging": (0.879, 0.680, 0.305),
        "SMOTE + decision tree": (0.845, 0.573, 0.289),
        "feed-forward NN": (0.876, 0.675, 0.303),
        "LSTM": (0.876, 0.665, 0.297),
    },
    # Chapter 3 baseline: one split (train 07-25..07-31, test 08-08..08-14), library default settings
    "baseline": {
        "logistic regression": (0.871, 0.606, 0.291),
        "decision tree, depth 2": (0.763, 0.496, 0.241),
        "decision tree, unlimited": (0.788, 0.309, 0.243),
        "random forest": (0.867, 0.658, 0.287),
        "XGBoost": (0.862, 0.639, 0.273),
    },
}
METRIC_TITLES = {"auc_roc": "AUC ROC", "average_precision": "AP", "card_precision_at_100": "CP@100"}
console = Console()


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        fld, _, col = pair.partition("=")
        if not fld or not col:
            raise SystemExit(f"--column needs field=COLUMN, got {pair!r}")
        out[fld] = col
    return out


def resolve_mapping(raw: pd.DataFrame, args: argparse.Namespace) -> tuple[ColumnMapping, str | None]:
    """The mapping file, else the preset (named or recognised by the data's columns), else our own field
    names; ``--column`` / ``--label-delay`` override. Returns the mapping and the preset used."""
    preset = args.preset
    if args.mapping is not None:
        mapping = read_mapping(args.mapping)
    else:
        preset = preset or (None if args.column else detect_preset(raw))
        if preset is not None:
            mapping = PRESETS[preset]
        else:
            ours = {f: f for f in ("transaction_id", "event_time", "card_id", "terminal_id", "amount",
                                   "is_fraud", "channel", "country", "merchant_category", "fraud_scenario",
                                   "reported_at") if f in raw.columns}  # fmt: skip
            mapping = ColumnMapping({**ours, **_columns(args.column)}, label_delay=7.0)
    extra = _columns(args.column) if args.mapping is not None or preset is not None else {}
    delay = args.label_delay if args.label_delay is not None else mapping.label_delay
    return replace(mapping, columns={**mapping.columns, **extra}, label_delay=delay, seed=args.seed), preset


def fold_data(history: History, features: np.ndarray) -> FoldData:
    tx = history.transactions
    return FoldData(
        X=features,
        is_fraud=tx["is_fraud"].to_numpy(dtype=bool),
        reported_ns=epoch_ns(tx["reported_at"]),
        day=epoch_ns(tx["event_time"]) // 86_400_000_000_000,
        card=pd.factorize(tx["card_id"])[0].astype(np.int64),  # integer codes: fast grouping and isin
    )


def verdict(diff: float, sd: float) -> str:
    """'beats' / 'below' only when the difference exceeds our fold SD, else 'matches'."""
    if not np.isfinite(sd):
        return "n/a"
    if diff > sd:
        return "beats"
    if diff < -sd:
        return "below"
    return "matches"


def compare(
    ours: dict[str, float], sd: dict[str, float], published: dict[str, tuple[float, float, float]]
) -> list[dict[str, Any]]:
    """Each published figure against ours: difference, our fold SD, verdict."""
    rows = []
    for name, values in published.items():
        row: dict[str, Any] = {"published": name}
        for metric, pub in zip(METRICS, values, strict=True):
            diff = ours[metric] - pub
            row[metric] = {
                "published": pub, "ours": round(ours[metric], 4), "difference": round(diff, 4),
                "fold_sd": round(sd[metric], 4), "verdict": verdict(diff, sd[metric]),
            }  # fmt: skip
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CSV or Parquet transaction history")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a known dataset's columns and dates")
    parser.add_argument("--mapping", type=Path, help="JSON/TOML: {columns: {field: COLUMN}, label_delay}")
    parser.add_argument("--column", action="append", default=[], metavar="field=COLUMN")
    parser.add_argument("--label-delay", help="days, or 'simulator' (when no reported_at column is mapped)")
    parser.add_argument("--seed", type=int, default=0, help="of the simulator label-delay model")
    parser.add_argument("--out", type=Path, help="results JSON (default: the repo's only for the Handbook)")
    parser.add_argument("--docs", type=Path, help="Markdown file whose quality section to rewrite")
    parser.add_argument(
        "--base", help="training start of the earliest test fold (default: preset or derived)"
    )
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--train-days", type=int, default=7)
    parser.add_argument("--delay-days", type=int, default=7)
    parser.add_argument("--assess-days", type=int, default=7)
    parser.add_argument("--warmup-days", type=int, default=30, help="feature history before the first fold")
    parser.add_argument("--candidates", help="comma-separated subset of the search space (quick runs)")
    parser.add_argument(
        "--train-on-truth", action="store_true",
        help="ablation: train on every fraud, reported by the cut-off or not (what the rule costs)",
    )  # fmt: skip
    parser.add_argument(
        "--compare-with", action="append", default=[], metavar="LABEL=RESULTS.json",
        help="another run of the same protocol (e.g. a previous feature engine): paired per test fold",
    )  # fmt: skip
    parser.add_argument(
        "--docs-from", type=Path, metavar="RESULTS.json",
        help="do not run: rewrite --docs (default docs/benchmarks.md) from this results file",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.docs_from is not None:
        results = json.loads(args.docs_from.read_text(encoding="utf-8"))
        results["related"] = related_runs(results, args.compare_with)
        args.docs_from.write_text(json.dumps(results, indent=1), encoding="utf-8")
        write_docs(args.docs or REPO_DOCS, results)
        return 0

    started = time.perf_counter()
    try:
        raw = read_table(args.data)
        mapping, preset = resolve_mapping(raw, args)
        history = apply_mapping(raw, mapping)
    except DataError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    del raw
    handbook = preset == "handbook"
    out = args.out or (REPO_RESULTS if handbook else Path(".local/bench/quality.json"))
    docs = args.docs or (REPO_DOCS if handbook and out.resolve() == REPO_RESULTS else None)
    protocol = Protocol(args.train_days, args.delay_days, args.assess_days, args.folds)
    tx = history.transactions
    first_day, last_day = day_number(history.start), day_number(history.end)
    try:
        if args.base:
            base = day_number(args.base)
        elif handbook:
            base = day_number(HANDBOOK_BASE)
        else:
            base = derive_base(first_day, last_day, protocol, args.warmup_days)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    valid_folds, test_folds = prequential_folds(base, protocol)
    if test_folds[0].test_end - 1 > last_day or valid_folds[-1].train_start < first_day:
        console.print(f"[red]the folds do not fit the data's dates ({history.start} .. {history.end})[/red]")
        return 2
    check_selection_before_test(valid_folds, test_folds)
    space: tuple[Candidate, ...] = SEARCH_SPACE
    if args.candidates:
        wanted = [c.strip() for c in args.candidates.split(",")]
        unknown = sorted(set(wanted) - {c.name for c in SEARCH_SPACE})
        if unknown:
            console.print(f"[red]unknown candidates {unknown}[/red]; known: {[c.name for c in SEARCH_SPACE]}")
            return 2
        space = tuple(c for c in SEARCH_SPACE if c.name in wanted)

    console.print(
        f"{len(tx):,} transactions, {int(tx['is_fraud'].sum()):,} frauds, {history.start} .. {history.end}; "
        f"labels: {mapping.describe_delay()}"
    )
    t = time.perf_counter()
    feats = replay(tx, history.labels, progress=True).features
    features_s = time.perf_counter() - t
    data = fold_data(history, feats.to_numpy(dtype=np.float64))
    del feats
    console.print(
        f"features of {len(tx):,} transactions in {features_s:.0f} s, peak RSS {maxrss_mb():.0f} MB"
    )

    # Selection: validation folds only. Every row it touches is before the first test window (checked).
    t = time.perf_counter()
    cutoff_rule = not args.train_on_truth
    validation = [
        run_fold(data, f, space, time.perf_counter, console.print, cutoff_rule) for f in valid_folds
    ]
    chosen, why = choose(validation, space)
    selection_s = time.perf_counter() - t
    console.print(f"chosen: {chosen.name} ({why})")

    # The chosen candidate, frozen, once on the test folds.
    t = time.perf_counter()
    tests = [run_fold(data, f, [chosen], time.perf_counter, console.print, cutoff_rule) for f in test_folds]
    test_s = time.perf_counter() - t
    test_summary = summarise(tests, chosen.name)
    results = build_results(
        args, history, mapping, preset, protocol, space, validation, chosen, why, tests, test_summary,
        {"features": round(features_s, 1), "selection": round(selection_s, 1), "test": round(test_s, 1),
         "total": round(time.perf_counter() - started, 1)},
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    console.print(f"results: {out}")
    if docs is not None:
        write_docs(docs, results)
        console.print(f"docs: {docs}")
    show(results)
    return 0


def build_results(
    args: argparse.Namespace,
    history: History,
    mapping: ColumnMapping,
    preset: str | None,
    protocol: Protocol,
    space: tuple[Candidate, ...],
    validation: list[FoldResult],
    chosen: Candidate,
    why: str,
    tests: list[FoldResult],
    test_summary: dict[str, dict[str, float]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    tx = history.transactions
    ours = {m: test_summary[m]["mean"] for m in METRICS}
    sd = {m: test_summary[m]["sd"] for m in METRICS}
    comparisons: dict[str, Any] = {}
    if preset == "handbook":
        comparisons["prequential"] = {
            "what": "mean of our 4 test folds vs the published mean of the same 4 test weeks; verdict by our "
            "fold SD (published per-fold values are not available)",
            "rows": compare(ours, sd, PUBLISHED["prequential"]),
        }
        # The Handbook's baseline split is our test fold whose training starts on the base date (07-25).
        base = str(HANDBOOK_BASE.date())
        baseline_fold = next((r for r in tests if r.fold["train"].startswith(base)), None)
        if baseline_fold is not None:
            comparisons["baseline"] = {
                "what": "our test fold with training 07-25..07-31, test 08-08..08-14 (the Handbook's "
                "baseline split) vs the published defaults; verdict by our test-fold SD",
                "fold": baseline_fold.fold,
                "rows": compare(baseline_fold.scores[chosen.name], sd, PUBLISHED["baseline"]),
            }
    dropped = sum(r.n_train_fraud_unknown for r in validation + tests)
    total = dropped + sum(r.n_train_fraud_known for r in validation + tests)
    return {
        "dataset": args.data.name,
        "preset": preset,
        "columns": mapping.columns,
        "labels": mapping.describe_delay(),
        "rows": len(tx),
        "frauds": int(tx["is_fraud"].sum()),
        "date_range": [str(history.start), str(history.end)],
        "features": len(FEATURE_NAMES),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "protocol": {
            "train_days": protocol.train_days,
            "delay_days": protocol.delay_days,
            "assess_days": protocol.assess_days,
            "folds": protocol.n_folds,
            "dates": "Handbook preset"
            if preset == "handbook" and not args.base
            else ("--base" if args.base else "derived from the data's date range"),
        },
        "search_space": describe_space(space),
        "validation": {
            "folds": [r.as_dict() for r in validation],
            "summary": {c.name: summarise(validation, c.name) for c in space},
        },
        "chosen": {"candidate": chosen.name, "kind": chosen.kind, "why": why},
        "test": {"candidate": chosen.name, "folds": [r.as_dict() for r in tests], "summary": test_summary},
        "labels_at_cutoff": {
            "training_frauds": total,
            "unknown_at_cutoff": dropped,
            "rule": "a fraud in a training window is a training positive only if reported before the fold's "
            "cut-off (the start of its assessment window); the others train as genuine and still count as "
            "frauds in evaluation"
            if not args.train_on_truth
            else "ABLATION (--train-on-truth): every fraud of the training window trained as fraud",
        },
        "comparisons": comparisons,
        "seconds": seconds,
        "peak_rss_mb": round(maxrss_mb(), 0),
    }


def _pm(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f}"


def _fold_scores(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Test week -> the chosen candidate's metrics."""
    name = results["test"]["candidate"]
    return {f["fold"]["test"]: f["scores"][name] for f in results["test"]["folds"]}


def _paired(ours: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per-test-week paired differences (ours − other) of each metric: mean, SD, verdict."""
    weeks = sorted(set(ours) & set(other))
    if not weeks:
        raise SystemExit("the two runs have no test week in common")
    out: dict[str, Any] = {"test_weeks": len(weeks)}
    for m in METRICS:
        d = np.array([ours[w][m] - other[w][m] for w in weeks])
        sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
        out[m] = {
            "other": round(float(np.mean([other[w][m] for w in weeks])), 4),
            "difference": round(float(d.mean()), 4), "paired_sd": round(sd, 4),
            "verdict": {"beats": "higher", "below": "lower", "matches": "same"}.get(
                verdict(float(d.mean()), sd), "n/a"
            ),
        }  # fmt: skip
    return out


def related_runs(results: dict[str, Any], pairs: list[str]) -> list[dict[str, Any]]:
    """Other runs of the protocol. With the same labels as this run (same test sets): per-fold paired
    differences (this − other). With other labels the test sets differ (known-compromised cards are removed
    by report time) and the features see labels at other times, so they are summarised, not paired; an
    ``--train-on-truth`` ablation is paired with the run of the same labels that respects the cut-off."""
    loaded = []
    for pair in pairs:
        label, _, file = pair.partition("=")
        loaded.append((label, json.loads(Path(file).read_text(encoding="utf-8"))))
    out = []
    for label, other in loaded:
        row: dict[str, Any] = {
            "label": label,
            "chosen": other["chosen"]["candidate"],
            "labels": other.get("labels"),
            "features": other.get("features"),
            "same_labels": other.get("labels") == results.get("labels"),
            "ablation": "ABLATION" in other["labels_at_cutoff"]["rule"],
            "labels_at_cutoff": {k: v for k, v in other["labels_at_cutoff"].items() if k != "rule"},
            "test": other["test"]["summary"],
        }
        if row["same_labels"] and not row["ablation"]:
            row["paired"] = _paired(_fold_scores(results), _fold_scores(other))
        if row["ablation"]:
            base = [
                (lab, o) for lab, o in loaded
                if o.get("labels") == other.get("labels") and "ABLATION" not in o["labels_at_cutoff"]["rule"]
            ]  # fmt: skip
            if base and base[0][1]["chosen"]["candidate"] == other["chosen"]["candidate"]:
                row["cutoff_cost"] = {
                    "versus": base[0][0],
                    **_paired(_fold_scores(base[0][1]), _fold_scores(other)),
                }
        out.append(row)
    return out


def write_docs(path: Path, results: dict[str, Any]) -> None:
    """The quality section of docs/benchmarks.md, every claim computed from ``results``."""
    chosen = results["chosen"]
    test = results["test"]["summary"]
    sec = results["seconds"]
    lab = results["labels_at_cutoff"]
    lines = [
        "<!-- quality:start -->",
        "## Detection quality (Fraud Detection Handbook prequential protocol)",
        "",
        f"`make bench-quality DATA=../shared/datasets/fraud_handbook_simulated/transactions_raw.parquet` "
        f"({results['date']}, {results['cpus']} CPUs, wall time {sec['total'] / 60:.1f} min: features "
        f"{sec['features']:.0f} s, selection {sec['selection']:.0f} s, test {sec['test']:.0f} s; peak RSS "
        f"{results['peak_rss_mb']:.0f} MB). The Handbook's simulated dataset ({results['rows']:,} "
        f"transactions), our {results['features']} point-in-time features (labels: {results['labels']}; the "
        "data has no reported-at, so the protocol's delay period is used), the Handbook's test sets "
        "(known compromised cards removed) and its card precision@100.",
        "",
        "**Selection on validation only.** The declared search space "
        f"({len(results['search_space']['candidates'])} candidates in "
        "`training/src/fraudwatch_training/selection.py`: "
        + ", ".join(f"`{name}`" for name in results["search_space"]["candidates"])
        + "; components and settings in bench/results/quality.json) is fitted "
        "on the Handbook's four validation folds (training starts 07-11, 07-04, 06-27, 06-20; 1-week "
        "training, 1-week delay, 1-week validation). Chosen once by mean validation AP: "
        f"**{chosen['candidate']}** ({chosen['why']}). It is then run, frozen, once on the four test folds "
        "(training starts 07-25, 08-01, 08-08, 08-15). No test-week row reaches selection.",
        "",
        f"**Labels as known at training time** ({results['labels']}). {lab['unknown_at_cutoff']:,} of "
        f"{lab['training_frauds']:,} training-window frauds (all folds) were reported after their fold's cut-off "
        "(the start of its assessment window) and trained as genuine."
        + (
            " With a fixed delay no longer than the delay week every training-week fraud is known by the "
            "cut-off, so 0 is by construction here; with later reports (e.g. `--label-delay simulator`) it is "
            "not."
            if lab["unknown_at_cutoff"] == 0
            else ""
        ),
        "",
        "Validation (mean ± SD over the 4 validation folds):",
        "",
        "| candidate | AUC ROC | AP | CP@100 |",
        "|---|---|---|---|",
    ]
    for name, s in results["validation"]["summary"].items():
        mark = " (chosen)" if name == chosen["candidate"] else ""
        lines.append(
            f"| {name}{mark} | {_pm(s['auc_roc'])} | {_pm(s['average_precision'])} | "
            f"{_pm(s['card_precision_at_100'])} |"
        )
    lines += ["", f"Test, {chosen['candidate']} (per fold, then mean ± SD):", ""]
    lines += [
        "| test week | training | AUC ROC | AP | CP@100 | frauds in test |",
        "|---|---|---|---|---|---|",
    ]
    for r in sorted(results["test"]["folds"], key=lambda r: r["fold"]["test"]):
        s = r["scores"][chosen["candidate"]]
        lines.append(
            f"| {r['fold']['test']} | {r['fold']['train']} | {s['auc_roc']:.3f} | "
            f"{s['average_precision']:.3f} | {s['card_precision_at_100']:.3f} | {r['n_assessed_fraud']} |"
        )
    lines.append(
        f"| **mean ± SD** | | {_pm(test['auc_roc'])} | {_pm(test['average_precision'])} | "
        f"{_pm(test['card_precision_at_100'])} | |"
    )
    for key, title in (("prequential", "Published prequential figures"), ("baseline", "Published baseline")):
        comp = results["comparisons"].get(key)
        if not comp:
            continue
        lines += ["", f"{title} ({comp['what']}): difference ours − published, and the verdict.", ""]
        lines += ["| published model | AUC ROC | AP | CP@100 |", "|---|---|---|---|"]
        for row in comp["rows"]:
            cells = [
                f"{row[m]['published']:.3f}: {row[m]['difference']:+.3f} {row[m]['verdict']}" for m in METRICS
            ]
            lines.append(f"| {row['published']} | " + " | ".join(cells) + " |")
    paired = [r for r in results.get("related", []) if "paired" in r]
    if paired:
        lines += [
            "",
            "Other runs of the same protocol with the same labels, i.e. the same test sets (this run − that "
            'run, mean ± SD of the per-test-week paired differences; "higher" / "lower" only beyond that SD):',
            "",
            "| run | its chosen model | its features | AUC ROC | AP | CP@100 |",
            "|---|---|---|---|---|---|",
        ]
        for row in paired:
            cells = [
                f"{row['paired'][m]['other']:.3f}: {row['paired'][m]['difference']:+.3f} ± "
                f"{row['paired'][m]['paired_sd']:.3f} {row['paired'][m]['verdict']}"
                for m in METRICS
            ]
            lines.append(
                f"| {row['label']} | {row['chosen']} | {row['features']} | " + " | ".join(cells) + " |"
            )
    others = [r for r in results.get("related", []) if not r["same_labels"]]
    if others:
        lines += [
            "",
            "Runs with other labels (not comparable with the tables above or the published figures: labels "
            "known at other times change the features and which cards are removed as known compromised):",
            "",
        ]
        for row in others:
            lab_o, s = row["labels_at_cutoff"], row["test"]
            what = "ablation: trained on every fraud, known or not" if row["ablation"] else "labels as known"
            line = (
                f"- {row['label']} ({row['labels']}; {what}): {lab_o['unknown_at_cutoff']:,} of "
                f"{lab_o['training_frauds']:,} training-window frauds unknown at the cut-off; {row['chosen']}, "
                f"test AUC {_pm(s['auc_roc'])}, AP {_pm(s['average_precision'])}, CP@100 "
                f"{_pm(s['card_precision_at_100'])}."
            )
            cost = row.get("cutoff_cost")
            if cost:
                line += (
                    f" Respecting the cut-off ({cost['versus']}) vs this ablation, paired per test week: "
                    + ", ".join(
                        f"{METRIC_TITLES[m]} {cost[m]['difference']:+.3f} ± {cost[m]['paired_sd']:.3f} "
                        f"({cost[m]['verdict']})"
                        for m in METRICS
                    )
                    + "."
                )
            lines.append(line)
    sd = {m: test[m]["sd"] for m in METRICS}
    lines += [
        "",
        f'"beats" / "below": the difference exceeds our test-fold SD (AUC {sd["auc_roc"]:.3f}, AP '
        f'{sd["average_precision"]:.3f}, CP@100 {sd["card_precision_at_100"]:.3f}); otherwise "matches". The '
        "published prequential figures were also selected on validation folds; the published baseline figures "
        "use library default settings (ours do not: they are the validation-selected model).",
        "<!-- quality:end -->",
    ]
    section = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start, end = text.find("<!-- quality:start -->"), text.find("<!-- quality:end -->")
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len("<!-- quality:end -->") :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def show(results: dict[str, Any]) -> None:
    table = Table(title=f"validation (chosen: {results['chosen']['candidate']})")
    for col in ("candidate", *METRIC_TITLES.values()):
        table.add_column(col)
    for name, s in results["validation"]["summary"].items():
        table.add_row(name, *(_pm(s[m]) for m in METRICS))
    console.print(table)
    console.print(
        "test: " + ", ".join(f"{METRIC_TITLES[m]} {_pm(results['test']['summary'][m])}" for m in METRICS)
    )
    for key, comp in results["comparisons"].items():
        for row in comp["rows"]:
            console.print(
                f"{key:11s} vs {row['published']:24s} "
                + "  ".join(
                    f"{METRIC_TITLES[m]} {row[m]['difference']:+.3f} {row[m]['verdict']}" for m in METRICS
                )
            )


if __name__ == "__main__":
    sys.exit(main())
