"""build/versions.env is the one place non-Python versions are pinned; everything else must follow it."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _versions() -> dict[str, str]:
    values = {}
    for line in (ROOT / "build" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_versions_file_pins_what_the_build_needs() -> None:
    versions = _versions()
    for key in ("UV_VERSION", "KAFKA_VERSION", "SPARK_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", versions.get(key, "")), f"{key} missing or malformed"


def test_spark_version_matches_installed_and_pinned_pyspark() -> None:
    spark = _versions()["SPARK_VERSION"]
    assert version("pyspark") == spark
    stream = tomllib.loads((ROOT / "services" / "stream" / "pyproject.toml").read_text())
    assert f"pyspark=={spark}" in stream["project"]["dependencies"]


@pytest.mark.parametrize(
    ("pom", "env_var", "artifact"),
    [
        ("kafka", "FRAUDWATCH_KAFKA_VERSION", "kafka_2.13"),
        ("spark", "FRAUDWATCH_SPARK_VERSION", "spark-sql-kafka-0-10_2.13"),
    ],
)
def test_jar_poms_take_their_version_from_the_versions_file(pom: str, env_var: str, artifact: str) -> None:
    text = (ROOT / "build" / "maven" / pom / "pom.xml").read_text()
    # the version property comes from the environment the Makefile fills from build/versions.env ...
    prop = re.search(rf"<(\w+)\.version>\$\{{env\.{env_var}\}}</\1\.version>", text)
    assert prop, f"{pom}/pom.xml must read its version from ${{env.{env_var}}}"
    # ... and the main artifact uses that property, not a literal version
    dep = re.search(rf"<artifactId>{re.escape(artifact)}</artifactId>\s*<version>([^<]+)</version>", text)
    assert dep, f"{artifact} not found in {pom}/pom.xml"
    assert dep.group(1) == f"${{{prop.group(1)}.version}}"
    makefile = (ROOT / "Makefile").read_text()
    assert "include build/versions.env" in makefile
    assert f"{env_var}=$({env_var.removeprefix('FRAUDWATCH_')})" in makefile


def test_resolved_jars_match_the_versions_file() -> None:
    versions = _versions()
    jars = ROOT / ".local" / "jars"
    assert jars.is_dir(), f"{jars} missing: run `make setup`"
    assert (jars / "kafka" / f"kafka_2.13-{versions['KAFKA_VERSION']}.jar").exists()
    assert (jars / "spark" / f"spark-sql-kafka-0-10_2.13-{versions['SPARK_VERSION']}.jar").exists()
