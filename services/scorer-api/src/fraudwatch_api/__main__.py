"""``python -m fraudwatch_api`` (``make serve``): the scorer API on uvicorn.

Host, port and workers come from Settings (FRAUDWATCH_API_HOST / _PORT / _WORKERS). The default is 2 workers,
one per core on the 2-core reference machine: scoring is CPU-bound Python (the GIL allows one request at a
time per process), so a worker per core uses both cores, and more workers only add memory and context
switches (measured in docs/benchmarks.md). Each worker loads the model once in its lifespan.
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from fraudwatch.config import get_settings
from fraudwatch.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m fraudwatch_api", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=settings.api_host)
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--workers", type=int, default=settings.api_workers)
    parser.add_argument("--log-level", default=os.environ.get("FRAUDWATCH_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    log_config = configure_logging(args.log_level.upper())
    uvicorn.run(
        "fraudwatch_api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config,
        access_log=False,  # our middleware writes one JSON line per request
        http="httptools",
        loop="uvloop",
        timeout_keep_alive=30,
        # a worker loads MLflow and the model before it answers the supervisor's ping (~20 s on 2 busy cores)
        timeout_worker_healthcheck=180,
        proxy_headers=False,
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
