"""Detection quality on the Fraud Detection Handbook's simulated dataset, with its own protocols.

Features: the WHOLE dataset is replayed once through fraudwatch.features (point-in-time, each fraud label
reported 7 days after the transaction), then sliced: features only ever use the past, so slicing is
legitimate. Protocols (see the dataset's README):

* baseline: train 2018-07-25..07-31, delay 08-01..08-07, test 08-08..08-14;
* prequential: four test weeks from 08-08, each after 7 days of delay; training ends before the delay.

Test sets drop cards already known compromised exactly as the Handbook's ``get_train_test_set``: cards with
a fraud in the (1-week) training set, or, for test day d, a fraud on day d-8 or earlier since training.
Variants: 1-week training (the Handbook's) and 4-week training. Models: logistic regression and HGB.

Writes bench/results/quality.json and the quality section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fraudwatch.features import replay
from fraudwatch.model import FraudModel
from fraudwatch_training.data import HANDBOOK_COLUMNS, from_mapping
from fraudwatch_training.metrics import evaluate
from fraudwatch_training.models import ALL_KINDS, ModelSpec, fit_estimator

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared/datasets/fraud_handbook_simulated/transactions_raw.parquet"
ORIGIN = pd.Timestamp("2018-04-01", tz="UTC")
PUBLISHED = {
    "baseline": {
        "logistic regression": (0.871, 0.606, 0.291),
        "random forest": (0.867, 0.658, 0.287),
        "XGBoost": (0.862, 0.639, 0.273),
    },
    "prequential": {"XGBoost": (0.869, 0.687, 0.303), "balanced bagging": (0.879, 0.680, 0.305)},
}
VARIANTS = {"1-week": 7, "4-week": 28}
KINDS = ALL_KINDS  # logistic regression, HGB and the blend of both
console = Console()


def day_of(ts: pd.Timestamp) -> int:
    return int((ts - ORIGIN) / pd.Timedelta(days=1))


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def handbook_test_mask(
    days: np.ndarray, cards: np.ndarray, fraud: np.ndarray, train_start: int
) -> np.ndarray:
    """get_train_test_set's test set for a 7-day training starting on ``train_start`` (day index)."""
    known = set(cards[(days >= train_start) & (days < train_start + 7) & fraud].tolist())
    mask = np.zeros(len(days), dtype=bool)
    for d in range(7):
        test_day = train_start + 7 + 7 + d
        delay_day = train_start + 7 + d - 1
        known |= set(cards[(days == delay_day) & fraud].tolist())
        on_day = days == test_day
        mask |= on_day & ~np.isin(cards, list(known))
    return mask


def run_fold(X, y, days, cards, test_start: int, train_days: int, kind: str) -> dict[str, float]:
    """Train ``kind`` on ``train_days`` days ending 7 days (the delay) before ``test_start``; test a week."""
    train_end = test_start - 7
    train = (days >= train_end - train_days) & (days < train_end)
    test = handbook_test_mask(days, cards, y == 1, test_start - 14)
    model = FraudModel(fit_estimator(ModelSpec(kind), X[train], y[train]))
    scores = model.score_matrix(X[test])
    m = evaluate(y[test], scores, days[test], cards[test])
    return {
        "auc_roc": m["auc_roc"],
        "average_precision": m["average_precision"],
        "card_precision_at_100": m["card_precision_at_100"],
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "n_test_fraud": int(y[test].sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/quality.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--skip-full", action="store_true", help="skip training on all 1.75M rows")
    parser.add_argument(
        "--resume", action="store_true", help="keep the runs already in --out; measure only the missing ones"
    )
    parser.add_argument(
        "--long-prequential",
        action="store_true",
        help="also the 4-week variant on the 4 prequential folds (about 4x the 1-week time per fold)",
    )
    args = parser.parse_args(argv)
    if not args.data.exists():
        console.print(f"[red]no data at {args.data}[/red] (pass --data .../transactions_raw.parquet)")
        return 2

    t0 = time.perf_counter()
    raw = pd.read_parquet(args.data)
    history = from_mapping(raw, HANDBOOK_COLUMNS, label_delay_days=7.0)
    tx = history.transactions
    feats = replay(tx, history.labels, progress=True).features
    features_s = time.perf_counter() - t0
    console.print(
        f"features of {len(tx):,} transactions in {features_s:.0f} s, peak RSS {maxrss_mb():.0f} MB"
    )
    X = feats.to_numpy(dtype=np.float64)
    y = tx["is_fraud"].astype(np.int64).to_numpy()
    days = ((tx["event_time"] - ORIGIN) // pd.Timedelta(days=1)).to_numpy(dtype=np.int64)
    cards = pd.factorize(tx["card_id"])[0]  # integer codes: same grouping, fast set and isin operations
    del feats, raw

    results: dict[str, object] = {
        "dataset": str(args.data.name),
        "rows": len(tx),
        "features_seconds": round(features_s, 1),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "protocols": {},
    }
    protocols: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    if args.resume and args.out.exists():
        protocols = json.loads(args.out.read_text()).get("protocols", {})
    plan = {"baseline": [day_of(pd.Timestamp("2018-08-08", tz="UTC"))]}
    plan["prequential"] = [plan["baseline"][0] + 7 * i for i in range(4)]
    for protocol, test_starts in plan.items():
        protocols.setdefault(protocol, {})
        for variant, train_days in VARIANTS.items():
            if protocol == "prequential" and train_days > 7 and not args.long_prequential:
                continue  # the longer history is reported on the baseline split (see docs/benchmarks.md)
            protocols[protocol].setdefault(variant, {})
            for kind in KINDS:
                if kind in protocols[protocol][variant]:
                    continue
                t = time.perf_counter()
                folds = [run_fold(X, y, days, cards, s, train_days, kind) for s in test_starts]
                agg = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
                agg["fit_seconds"] = round(time.perf_counter() - t, 1)
                if len(folds) > 1:
                    agg["folds"] = folds  # type: ignore[assignment]
                protocols[protocol][variant][kind] = agg
                console.print(
                    f"{protocol:12s} {variant:7s} {kind:24s} AUC {agg['auc_roc']:.3f} AP "
                    f"{agg['average_precision']:.3f} CP@100 {agg['card_precision_at_100']:.3f} "
                    f"({agg['fit_seconds']:.0f} s)"
                )
                results["protocols"] = protocols
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1))

    if not args.skip_full:
        t = time.perf_counter()
        fit_estimator(ModelSpec("hist_gradient_boosting"), X, y)
        fit_s = time.perf_counter() - t
        results["full"] = {
            "rows": len(X),
            "features_seconds": round(features_s, 1),
            "hgb_fit_seconds": round(fit_s, 1),
            "total_seconds": round(features_s + fit_s, 1),
            "peak_rss_mb": round(maxrss_mb(), 0),
        }
        console.print(f"full data: HGB fit {fit_s:.0f} s; features + fit {features_s + fit_s:.0f} s")
    results["peak_rss_mb"] = round(maxrss_mb(), 0)
    args.out.write_text(json.dumps(results, indent=1))
    write_docs(args.docs, results)
    show(results)
    return 0


def _best(protocols: dict, protocol: str, variant: str) -> tuple[float, float]:  # type: ignore[type-arg]
    runs = protocols[protocol][variant].values()
    return max(r["average_precision"] for r in runs), max(r["card_precision_at_100"] for r in runs)


def write_docs(path: Path, results: dict) -> None:  # type: ignore[type-arg]
    protocols = results["protocols"]
    lines = [
        "<!-- quality:start -->",
        "## Detection quality (Fraud Detection Handbook protocols)",
        "",
        f"`make bench-quality DATA=../shared/datasets/fraud_handbook_simulated/transactions_raw.parquet` "
        f"({results['date']}, {results['cpus']} CPUs). The Handbook's simulated dataset "
        f"({results['rows']:,} transactions), our 45 point-in-time features (labels known 7 days after the "
        "transaction, as the Handbook's delay), our models with their default settings, the Handbook's test "
        "sets (known compromised cards removed) and its card precision@100. Published figures are from the "
        "Handbook (15 features, sklearn/xgboost defaults; prequential: best validated parameters).",
        "",
        "| protocol | training | model | AUC ROC | AP | CP@100 |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "logistic_regression": "logistic regression (ours)",
        "hist_gradient_boosting": "HGB (ours)",
        "blend": "blend: 0.3 LR + 0.7 four HGBs (ours)",
    }
    for protocol in ("baseline", "prequential"):
        for variant in VARIANTS:
            for kind, r in protocols[protocol].get(variant, {}).items():
                lines.append(
                    f"| {protocol} | {variant} | {names[kind]} | {r['auc_roc']:.3f} | "
                    f"{r['average_precision']:.3f} | {r['card_precision_at_100']:.3f} |"
                )
        for name, (auc, ap, cp) in PUBLISHED[protocol].items():
            lines.append(f"| {protocol} | 1-week | {name} (published) | {auc:.3f} | {ap:.3f} | {cp:.3f} |")
    lines.append("")
    if "4-week" not in protocols.get("prequential", {}):
        lines.append(
            "- The 4-week (longer history) variant is measured on the baseline split; on the four prequential "
            "folds it runs only with `--long-prequential` (about 4x the 1-week time per fold on 2 cores)."
        )
    for protocol in ("baseline", "prequential"):
        ap, cp = _best(protocols, protocol, "1-week")
        pub_ap = max(v[1] for v in PUBLISHED[protocol].values())
        pub_cp = max(v[2] for v in PUBLISHED[protocol].values())
        verdict = "beats" if ap > pub_ap and cp > pub_cp else "does NOT beat"
        lines.append(
            f"- {protocol}, 1-week training: our best AP {ap:.3f} / CP@100 {cp:.3f} {verdict} the best "
            f"published {pub_ap:.3f} / {pub_cp:.3f}."
        )
    full = results.get("full")
    if full:
        lines.append(
            f"- Whole dataset ({full['rows']:,} rows): features {full['features_seconds']:.0f} s + HGB training "
            f"{full['hgb_fit_seconds']:.0f} s = {full['total_seconds']:.0f} s; peak RSS {full['peak_rss_mb']:.0f} MB "
            "(`resource.getrusage` maxrss of the whole benchmark process)."
        )
    lines.append("<!-- quality:end -->")
    section = "\n".join(lines)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    start, end = text.find("<!-- quality:start -->"), text.find("<!-- quality:end -->")
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len("<!-- quality:end -->") :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def show(results: dict) -> None:  # type: ignore[type-arg]
    table = Table(title="Handbook protocols (test)")
    for col in ("protocol", "training", "model", "AUC ROC", "AP", "CP@100"):
        table.add_column(col)
    for protocol, variants in results["protocols"].items():
        for variant, kinds in variants.items():
            for kind, r in kinds.items():
                table.add_row(
                    protocol, variant, kind, f"{r['auc_roc']:.3f}", f"{r['average_precision']:.3f}",
                    f"{r['card_precision_at_100']:.3f}",
                )  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
