"""The Prometheus config scripts/services.py generates (any run on non-default ports: the demo test, a
developer's second checkout) scrapes the same jobs as the committed monitoring config, on the ports the
FRAUDWATCH_* settings give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]


def _services() -> Any:
    return load_script("scripts/services.py", "fraudwatch_services")


def test_generated_config_scrapes_every_job_of_the_committed_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, port in (
        ("API", 18000),
        ("STREAM_METRICS", 19108),
        ("PRODUCER_METRICS", 19109),
        ("REVIEW", 18010),
    ):
        monkeypatch.setenv(f"FRAUDWATCH_{var}_PORT", str(port))
    committed = yaml.safe_load((ROOT / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    generated = yaml.safe_load(_services().Services(tmp_path, prometheus_port=19090).prometheus_config_text())
    jobs = {c["job_name"]: c for c in generated["scrape_configs"]}
    assert jobs.keys() == {c["job_name"] for c in committed["scrape_configs"]}
    targets = {job: c["static_configs"][0]["targets"] for job, c in jobs.items()}
    assert targets == {
        "prometheus": ["localhost:19090"],
        "fraudwatch-scorer-api": ["localhost:18000"],
        "fraudwatch-stream": ["localhost:19108"],
        "fraudwatch-producer": ["localhost:19109"],
        "fraudwatch-review": ["localhost:18010"],
    }
