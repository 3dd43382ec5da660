"""``fraudwatch-produce``: stream live simulated transactions (or replay a history) to Kafka."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from fraudwatch.config import get_settings
from fraudwatch.simulator import LiveSimulator, SimulationSpec, read_spec
from fraudwatch_producer.metrics import ProducerMetrics
from fraudwatch_producer.producer import ProducerOptions, RunSummary, run
from fraudwatch_producer.sources import PRESETS, LiveSource, ReplaySource, load_history

DEFAULT_RATE = 5_000.0


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
        "--rate",
        type=float,
        default=None,
        help=f"live: a constant {DEFAULT_RATE:,.0f} transactions per second unless given (0: as fast as "
        "possible); the simulated clock follows the events and the speed-up this means is reported. "
        "Not with --speedup. Ignored for --replay",
    )
    p.add_argument(
        "--speedup",
        type=float,
        default=None,
        help="simulated seconds per wall second (3600: one simulated hour a second). Live: the event rate "
        "then follows the simulated activity (reported); replay: 0 or unset = as fast as possible",
    )
    p.add_argument("--duration", type=float, default=None, help="seconds to run (default: until stopped)")
    p.add_argument("--max-events", type=int, default=None, help="stop after this many transactions")
    p.add_argument(
        "--history",
        type=Path,
        default=None,
        help="live: continue the history `make data` wrote here (its simulation.json: seed, population, "
        "end time, open incidents); default <FRAUDWATCH_LOCAL_DIR>/data, else the `make data` defaults",
    )
    p.add_argument("--cards", type=int, default=None, help="default: the history's")
    p.add_argument("--terminals", type=int, default=None, help="default: the history's")
    p.add_argument("--seed", type=int, default=None, help="default: the history's (0 without one)")
    # Before the simulated clock, labels were due `delay x scale` wall seconds after their transaction.
    p.add_argument("--label-delay-scale", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-labels", action="store_true", help="do not send labels")
    p.add_argument("--replay", type=Path, default=None, help="replay this Parquet/CSV history instead")
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


@dataclass(frozen=True)
class LivePlan:
    """How live traffic is paced: one of rate and speed-up is given, the other derived from the population."""

    simulator: LiveSimulator
    rate: float  # transactions per wall second (mean over a simulated week when paced by the clock)
    speedup: float  # simulated seconds per wall second (0: the clock follows the events)
    derived_speedup: float  # the mean speed-up a fixed rate means (inf: as fast as possible)
    notes: list[str]


def plan_live(args: argparse.Namespace, data_dir: Path, default_speedup: float = 0.0) -> LivePlan:
    """The live simulator (the history's population, from the history's end) and its pace.

    ``--speedup S``: the clock paces the events, the mean rate is S x the population's events per simulated
    second. ``--rate R`` (default): R events a second, the clock follows them, the mean speed-up is R / that.
    ``default_speedup`` (FRAUDWATCH_PRODUCER_SPEEDUP) applies when neither is given.
    """
    if args.speedup is not None and args.rate is not None:
        raise ValueError("give --rate or --speedup, not both: either one sets the other")
    if args.speedup is None and args.rate is None and default_speedup > 0:
        args = argparse.Namespace(**{**vars(args), "speedup": default_speedup})
    if args.speedup is not None and args.speedup <= 0:
        raise ValueError("--speedup must be > 0 for live traffic (use --rate 0 for as fast as possible)")
    history = read_spec(data_dir)
    base = history or SimulationSpec()
    population = (
        base.seed if args.seed is None else args.seed,
        base.n_cards if args.cards is None else args.cards,
        base.n_terminals if args.terminals is None else args.terminals,
    )
    same = population == (base.seed, base.n_cards, base.n_terminals)
    notes = []
    where = f"the history in {data_dir}" if history else "the `make data` defaults (no history found)"
    if same:
        notes.append(
            f"live population: seed {base.seed}, {base.n_cards:,} cards, {base.n_terminals:,} "
            f"terminals, continuing {where}"
        )
    else:
        notes.append(
            f"live population seed {population[0]}, {population[1]:,} cards, {population[2]:,} "
            f"terminals is NOT that of {where} (seed {base.seed}, {base.n_cards:,} cards, "
            f"{base.n_terminals:,} terminals): a model trained on it has not seen these cards"
        )
    seed, n_cards, n_terminals = population
    simulator = LiveSimulator(
        n_cards,
        n_terminals,
        seed,
        start=base.end,
        open_windows=base.open_windows if same else None,
    )
    per_second = simulator.expected_per_day() / 86_400
    if args.speedup is not None:
        rate, speedup, derived = args.speedup * per_second, args.speedup, args.speedup
        notes.append(
            f"simulated clock from {base.end.isoformat()} at {speedup:,.0f}x: about {rate:,.0f} "
            "tx/s on average, following the simulated hour of day and weekday"
        )
    else:
        rate = DEFAULT_RATE if args.rate is None else args.rate
        speedup, derived = 0.0, (rate / per_second if rate > 0 else float("inf"))
        pace = f"{rate:,.0f} tx/s" if rate > 0 else "as fast as possible"
        notes.append(
            f"simulated clock from {base.end.isoformat()}, following the events at {pace} "
            f"(about {derived:,.0f}x on average)"
        )
    if args.label_delay_scale is not None:
        notes.append(
            "--label-delay-scale is obsolete and ignored: labels are sent when the simulated "
            "clock passes their reported_at"
        )
    behind_days = (time.time() - base.end.timestamp()) / 86_400
    notes.append(
        f"event_time starts {behind_days:,.1f} days before the wall clock and gains "
        f"{max(derived - 1, 0):,.0f} s a second on it: the stream and API must admit it "
        "(FRAUDWATCH_EVENT_MAX_AGE_DAYS / FRAUDWATCH_EVENT_MAX_FUTURE_SECONDS, see docs/producer.md)"
    )
    return LivePlan(simulator, rate, speedup, derived, notes)


async def _main(args: argparse.Namespace) -> RunSummary:
    settings = get_settings()
    console = Console(stderr=True)
    if args.replay is not None:
        mapping = {**PRESETS.get(args.preset or "", {}), **_mapping(args.map)}
        replay = ReplaySource(
            load_history(args.replay, mapping), speedup=args.speedup or 0.0, labels=not args.no_labels
        )
        source: LiveSource | ReplaySource = replay
        total: int | None = replay.n
        rate, speedup = 0.0, args.speedup or 0.0
    else:
        plan = plan_live(args, args.history or settings.local_dir / "data", settings.producer_speedup)
        for note in plan.notes:
            console.print(note, highlight=False)
        source = LiveSource(plan.simulator, speedup=plan.speedup, labels=not args.no_labels)
        rate, speedup = plan.rate, plan.speedup
        total = args.max_events or (int(rate * args.duration) if rate and args.duration else None)
    opts = ProducerOptions(
        bootstrap=args.bootstrap or settings.kafka_bootstrap,
        topic_transactions=args.topic or settings.topic_transactions,
        topic_labels=args.labels_topic or settings.topic_labels,
        rate=rate,
        speedup=speedup,
        duration=args.duration,
        max_events=args.max_events,
        replay=args.replay is not None,
        compression=args.compression,
        linger_ms=args.linger_ms,
    )
    metrics = ProducerMetrics()
    port = settings.producer_metrics_port if args.metrics_port is None else args.metrics_port
    metrics.serve(port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    show = args.progress == "on" or (args.progress == "auto" and console.is_terminal)
    what = f"replay {args.replay}" if args.replay else f"live {rate:,.0f}/s"
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
