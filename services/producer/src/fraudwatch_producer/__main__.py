"""``fraudwatch-produce``: stream live simulated transactions (or replay a history) to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from rich.console import Console

from fraudwatch.config import get_settings
from fraudwatch_producer.metrics import ProducerMetrics
from fraudwatch_producer.producer import ProducerOptions, RunSummary, run
from fraudwatch_producer.sources import PRESETS, LiveSource, ReplaySource, load_history


def _mapping(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        src, sep, dst = item.partition("=")
        if not sep or not src or not dst:
            raise argparse.ArgumentTypeError(f"--map wants SRC=DST, got {item!r}")
        out[src] = dst
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fraudwatch-produce",
        description="Stream live simulated transactions (or replay a history) to Kafka, and their labels later.",
    )
    p.add_argument(
        "--rate", type=float, default=5_000.0, help="transactions per second (0: as fast as possible)"
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    p.add_argument("--max-events", type=int, default=None, help="stop after this many transactions")
    p.add_argument("--cards", type=int, default=5_000)
    p.add_argument("--terminals", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--label-delay-scale",
        type=float,
        default=1.0,
        help="real seconds per simulated day of label delay (default 1: genuine labels after 7 s, "
        "frauds a median 3 s)",
    )
    p.add_argument("--no-labels", action="store_true", help="do not send labels")
    p.add_argument("--replay", type=Path, default=None, help="replay this Parquet/CSV history instead")
    p.add_argument(
        "--speedup", type=float, default=0.0, help="replay speed-up over event time (0: max speed)"
    )
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="column mapping preset for --replay"
    )
    p.add_argument("--map", action="append", default=[], metavar="SRC=DST", help="rename a replay column")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (FRAUDWATCH_KAFKA_BOOTSTRAP)")
    p.add_argument("--topic", default=None, help="transactions topic (FRAUDWATCH_TOPIC_TRANSACTIONS)")
    p.add_argument("--labels-topic", default=None, help="labels topic (FRAUDWATCH_TOPIC_LABELS)")
    p.add_argument(
        "--metrics-port", type=int, default=None, help="0 disables (FRAUDWATCH_PRODUCER_METRICS_PORT)"
    )
    p.add_argument("--compression", choices=["auto", "zstd", "lz4", "gzip", "snappy", "none"], default="auto")
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--progress", choices=["auto", "on", "off"], default="auto", help="rich progress (TTY)")
    return p


async def _main(args: argparse.Namespace) -> RunSummary:
    settings = get_settings()
    opts = ProducerOptions(
        bootstrap=args.bootstrap or settings.kafka_bootstrap,
        topic_transactions=args.topic or settings.topic_transactions,
        topic_labels=args.labels_topic or settings.topic_labels,
        rate=args.rate,
        duration=args.duration,
        max_events=args.max_events,
        replay=args.replay is not None,
        compression=args.compression,
        linger_ms=args.linger_ms,
    )
    if args.replay is not None:
        mapping = {**PRESETS.get(args.preset or "", {}), **_mapping(args.map)}
        source: LiveSource | ReplaySource = ReplaySource(
            load_history(args.replay, mapping), speedup=args.speedup, labels=not args.no_labels
        )
        total: int | None = source.n
    else:
        source = LiveSource(
            args.cards,
            args.terminals,
            seed=args.seed,
            label_delay_scale=args.label_delay_scale,
            labels=not args.no_labels,
        )
        total = args.max_events or (int(args.rate * args.duration) if args.rate and args.duration else None)
    metrics = ProducerMetrics()
    port = settings.producer_metrics_port if args.metrics_port is None else args.metrics_port
    metrics.serve(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    console = Console(stderr=True)
    show = args.progress == "on" or (args.progress == "auto" and console.is_terminal)
    what = f"replay {args.replay}" if args.replay else f"live {args.rate:,.0f}/s"
    console.print(f"producing to {opts.bootstrap} ({opts.topic_transactions}, {opts.topic_labels}): {what}")
    if show:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}{task.fields[of]} tx  {task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task("producing", total=total, of=f"/{total:,}" if total else "", rate="")

            def progress(s: RunSummary) -> None:
                rate = f"{s.generated / s.seconds:,.0f} tx/s" if s.seconds else ""
                bar.update(task, completed=s.generated, rate=rate)

            summary = await run(source, opts, metrics, stop, progress)
            bar.update(task, completed=summary.generated)
    else:
        summary = await run(source, opts, metrics, stop)
    print(summary.line(opts), flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = asyncio.run(_main(args))
    except (OSError, ValueError) as exc:
        print(f"fraudwatch-produce: {exc}", file=sys.stderr)
        return 2
    return 1 if sum(summary.errors.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
