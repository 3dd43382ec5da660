"""``python -m fraudwatch_training train``: build training data, train, evaluate, log, register, promote."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from fraudwatch.config import get_settings
from fraudwatch_training.data import (
    PRESETS,
    DataError,
    add_analyst_labels,
    load_history,
    read_analyst_labels,
    read_mapping,
)
from fraudwatch_training.models import ALL_KINDS, KINDS
from fraudwatch_training.pipeline import train_and_register
from fraudwatch_training.split import SplitConfig
from fraudwatch_training.thresholds import ThresholdPolicy

SHOWN = (
    ("test_auc_roc", "AUC ROC"),
    ("test_average_precision", "AP"),
    ("test_card_precision_at_100", "CP@100"),
    ("test_precision_at_review", "prec@review"),
    ("test_recall_at_review", "recall@review"),
    ("test_precision_at_decline", "prec@decline"),
    ("test_recall_at_decline", "recall@decline"),
    ("test_cost_saving_share", "cost saved"),
)


def _columns(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        fld, _, col = pair.partition("=")
        if not fld or not col:
            raise SystemExit(f"--column needs field=COLUMN, got {pair!r}")
        out[fld] = col
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fraudwatch_training")
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train, evaluate, log to MLflow, register and promote")
    tr.add_argument("--data", type=Path, help="Parquet/CSV history (default: .local/data, else simulate)")
    tr.add_argument("--preset", choices=sorted(PRESETS), help="column mapping of a known dataset")
    tr.add_argument(
        "--mapping", type=Path, help="JSON/TOML mapping file: {columns: {field: COLUMN}, label_delay}"
    )
    tr.add_argument(
        "--column", action="append", default=[], metavar="field=COLUMN",
        help="which column of --data is our field (card_id, terminal_id, event_time, amount, is_fraud, ...)",
    )  # fmt: skip
    tr.add_argument(
        "--label-delay", help="days after which labels are known, or 'simulator' (if no reported_at column)"
    )
    tr.add_argument("--tracking-uri", help="MLflow tracking URI (default FRAUDWATCH_MLFLOW_TRACKING_URI)")
    tr.add_argument("--days", type=int, default=60, help="days to simulate when there is no data")
    tr.add_argument("--last-days", type=float, help="use only the last N days of the history")
    tr.add_argument("--experiment", default="fraudwatch")
    tr.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {ALL_KINDS}")
    tr.add_argument("--validation-days", type=float, default=7.0)
    tr.add_argument("--test-days", type=float, default=7.0)
    tr.add_argument("--gap-days", type=float, default=7.0)
    tr.add_argument("--decline-precision", type=float, default=0.90)
    tr.add_argument("--review-recall", type=float, default=0.90)
    tr.add_argument("--max-review-rate", type=float, default=0.02)
    tr.add_argument("--no-promote", action="store_true")
    tr.add_argument(
        "--review-db",
        type=Path,
        help="the review queue's decisions, used as labels (default FRAUDWATCH_REVIEW_DB_PATH or "
        "<local_dir>/review/review.sqlite; analyst decisions win over the history's labels)",
    )
    cm = sub.add_parser(
        "compare-models",
        help="production vs the challenger (shadow scores in the stream's table) on the labelled live traffic",
    )
    cm.add_argument(
        "--scored", type=Path, help="the stream's table (default <local_dir>/stream/scored.sqlite)"
    )
    cm.add_argument("--review-db", type=Path, help="the review queue's table (analyst labels)")
    cm.add_argument("--no-topic", action="store_true", help="do not read the labels topic (review DB only)")
    cm.add_argument("--json", type=Path, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)
    if args.command == "compare-models":
        from fraudwatch_training.compare import run

        console = Console()
        try:
            run(get_settings(), args.scored, args.review_db, not args.no_topic, args.json, console.print)
        except FileNotFoundError as exc:
            console.print(f"[red]{exc}[/red]")
            return 2
        return 0

    console = Console()
    settings = get_settings()
    tracking_uri = args.tracking_uri or settings.mlflow_tracking_uri
    started = time.perf_counter()
    try:
        with console.status("loading history"):
            history = load_history(
                args.data, args.preset, settings.local_dir, args.days,
                mapping=read_mapping(args.mapping) if args.mapping else None,
                columns=_columns(args.column), label_delay=args.label_delay,
            )  # fmt: skip
    except DataError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    history = add_analyst_labels(
        history, read_analyst_labels(args.review_db or settings.resolved_review_db_path)
    )
    console.print(
        f"analyst labels: {history.source['analyst_labels']:,} on the history's transactions, "
        f"{history.source['analyst_labels_unmatched']:,} on transactions it does not hold"
    )
    tx, labels = history.transactions, history.labels
    if args.last_days:
        cut = history.end - pd.Timedelta(days=args.last_days)
        tx = tx[tx["event_time"] >= cut].reset_index(drop=True)
    console.print(
        f"history: {len(tx):,} transactions, {int(tx['is_fraud'].sum()):,} frauds, "
        f"{tx['event_time'].min()} .. {tx['event_time'].max()}"
    )
    result = train_and_register(
        tx,
        labels,
        tracking_uri,
        model_name=settings.model_name,
        experiment=args.experiment,
        kinds=[k.strip() for k in args.kinds.split(",") if k.strip()],
        split=SplitConfig(args.validation_days, args.test_days, args.gap_days),
        policy=ThresholdPolicy(args.decline_precision, args.review_recall, args.max_review_rate),
        promote=not args.no_promote,
        data_source=str(args.data or settings.local_dir / "data"),
        # a mapped (foreign) history's scenario ids are not the simulator's: report them by number
        scenario_names=history.source.get("scenario_names"),
        progress=True,
        echo=console.print,
    )
    table = Table(title=f"test {result.bounds['test'][0]:%Y-%m-%d} .. {result.bounds['test'][1]:%Y-%m-%d}")
    table.add_column("model")
    for _, title in SHOWN:
        table.add_column(title, justify="right")
    for kind, m in result.metrics.items():
        name = f"{kind} *" if kind == result.best_kind else kind
        table.add_row(name, *(f"{m.get(key, float('nan')):.3f}" for key, _ in SHOWN))
    console.print(table)
    best = result.metrics[result.best_kind]
    scen = {
        k.removeprefix("test_recall_review_"): v
        for k, v in best.items()
        if k.startswith("test_recall_review_")
    }
    if scen:
        console.print("recall at review by scenario: " + ", ".join(f"{k} {v:.2f}" for k, v in scen.items()))
    t = result.model.thresholds
    console.print(f"thresholds: review {t.review:.4f}, decline {t.decline:.4f}")
    console.print(f"run {result.run_id}; registered {settings.model_name} v{result.model_version}")
    if result.promotion is not None:
        console.print(result.promotion.summary())
    console.print(f"done in {time.perf_counter() - started:.0f} s ({tracking_uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
