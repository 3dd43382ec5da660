"""``python -m fraudwatch_review`` (``make review``): the review queue on uvicorn.

One worker: the queue's table is a local SQLite file and a decision is serialised in the process (publish
the label, then mark the alert decided), so one process keeps "decided once" simple; an analyst team's load
is a few requests a minute.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from fraudwatch.config import get_settings
from fraudwatch.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m fraudwatch_review", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.review_host)
    parser.add_argument("--port", type=int, default=settings.review_port)
    parser.add_argument("--log-level", default=os.environ.get("FRAUDWATCH_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    log_config = configure_logging(args.log_level.upper())
    uvicorn.run(
        "fraudwatch_review.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=1,
        log_config=log_config,
        proxy_headers=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
