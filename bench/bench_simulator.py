"""Simulator throughput: time to generate one million transactions (best of a few runs).

Writes bench/results/simulator.json and the "Simulator" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from fraudwatch.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- simulator:start -->", "<!-- simulator:end -->"


def write_section(doc: Path, body: str) -> None:
    """Add or replace only this benchmark's section of the shared benchmarks page."""
    section = f"{START}\n{body.rstrip()}\n{END}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    text = (
        pattern.sub(lambda _: section, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section + "\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=int, default=1_000_000, help="transactions to generate")
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--terminals", type=int, default=4_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    # Size the history so it holds about --target transactions (the population averages ~2.5 a card-day).
    probe = simulate(7, args.cards, args.terminals, seed=0)
    days = max(1, round(args.target / (len(probe.transactions) / 7)))
    timings, sizes = [], []
    for run in range(args.runs):
        t0 = time.perf_counter()
        history = simulate(days, args.cards, args.terminals, seed=run)
        timings.append(time.perf_counter() - t0)
        sizes.append(len(history.transactions))
        print(f"run {run}: {sizes[-1]:,} transactions in {timings[-1]:.2f}s")
    best = min(range(args.runs), key=lambda i: timings[i])
    per_million = timings[best] / sizes[best] * 1e6
    result = {
        "benchmark": "simulator",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "cards": args.cards,
        "terminals": args.terminals,
        "days": days,
        "transactions": sizes[best],
        "seconds_best": round(timings[best], 3),
        "seconds_all": [round(t, 3) for t in timings],
        "seconds_per_million": round(per_million, 3),
        "transactions_per_second": round(sizes[best] / timings[best]),
        "fraud_share": round(float(history.transactions["is_fraud"].mean()), 5),
    }
    out = ROOT / "bench" / "results" / "simulator.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    row = (
        f"| simulate() | {args.cards:,} cards, {args.terminals:,} terminals, {days} days | {sizes[best]:,} | "
        f"{timings[best]:.2f} s | {result['transactions_per_second']:,} tx/s |"
    )
    body = (
        "## Simulator\n\n"
        f"`make bench-simulator` ({result['measured_at']}, {os.cpu_count()} CPUs, best of {args.runs} runs; "
        "population, genuine traffic, all five fraud scenarios, labels and the final DataFrames; "
        "Parquet writing not included).\n\n"
        "| what | size | transactions | time | throughput |\n|---|---|---|---|---|\n" + row + "\n"
    )
    write_section(ROOT / "docs" / "benchmarks.md", body)
    print(row)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
