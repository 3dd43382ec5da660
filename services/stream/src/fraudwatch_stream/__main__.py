"""``python -m fraudwatch_stream``: run the streaming scorer until SIGTERM/SIGINT (``make stream``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from fraudwatch.config import get_settings
from fraudwatch_stream.job import JobOptions, StreamJob
from fraudwatch_stream.session import build_spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fraudwatch_stream", description=__doc__)
    parser.add_argument(
        "--state-buckets", type=int, default=None, help="state groups per stage (default: Settings)"
    )
    parser.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    spark = build_spark("fraudwatch-stream", settings)
    job = StreamJob(spark, settings, JobOptions(state_buckets=args.state_buckets))
    if not args.no_metrics:
        job.metrics.serve(settings.stream_metrics_port)

    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        job.run(stopping)  # a batch the online store failed is retried; any other failure ends the job
    except Exception as exc:
        print(f"stream query failed: {exc}", file=sys.stderr)
        return 1
    finally:
        job.stop()
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
