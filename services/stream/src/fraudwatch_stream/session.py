"""A local SparkSession with the Kafka connector, configured from :class:`fraudwatch.config.Settings`.

PySpark ships Spark itself; the Kafka source/sink needs four extra jars that `make setup` resolves into
<local_dir>/jars/spark (spark-sql-kafka, spark-token-provider-kafka, kafka-clients, commons-pool2). Only those
are put on spark.jars: the other jars Maven copies next to them (scala, hadoop, slf4j, ...) already come
with PySpark and would clash.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fraudwatch.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["CONNECTOR_JARS", "build_spark", "connector_jars"]

#: file-name prefixes of the jars the Kafka connector adds to PySpark
CONNECTOR_JARS = (
    "spark-sql-kafka-0-10_",
    "spark-token-provider-kafka-0-10_",
    "kafka-clients-",
    "commons-pool2-",
)

JVM_OPTIONS = "-XX:+UseParallelGC -XX:TieredStopAtLevel=1"
ROCKSDB_PROVIDER = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"


def _jar_dirs(settings: Settings) -> list[Path]:
    dirs = []
    if os.environ.get("FRAUDWATCH_SPARK_JARS_DIR"):
        dirs.append(Path(os.environ["FRAUDWATCH_SPARK_JARS_DIR"]))
    dirs.append(Path(settings.local_dir) / "jars" / "spark")
    # a source checkout: <repo>/services/stream/src/fraudwatch_stream/session.py -> <repo>/.local/jars/spark
    repo = Path(__file__).resolve().parents[4]
    dirs.append(repo / ".local" / "jars" / "spark")
    return dirs


def connector_jars(settings: Settings) -> list[Path]:
    """The four connector jars (absolute paths) from the first directory that has all of them."""
    searched = []
    for directory in _jar_dirs(settings):
        directory = directory.resolve()
        searched.append(str(directory))
        if not directory.is_dir():
            continue
        found = []
        for prefix in CONNECTOR_JARS:
            matches = sorted(
                p
                for p in directory.glob(f"{prefix}*.jar")
                if not p.name.endswith(("-sources.jar", "-tests.jar"))
            )
            if not matches:
                break
            found.append(matches[-1])
        else:
            return found
    raise FileNotFoundError(
        "the Spark Kafka connector jars ("
        + ", ".join(f"{p}*.jar" for p in CONNECTOR_JARS)
        + ") are not in "
        + " or ".join(searched)
        + "; run `make setup`"
    )


def _ensure_env() -> None:
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if "JAVA_HOME" not in os.environ:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("Spark needs Java 17+: set JAVA_HOME or put java on PATH")
        os.environ["JAVA_HOME"] = str(Path(java).resolve().parent.parent)


def build_spark(
    app_name: str,
    settings: Settings,
    extra_conf: Mapping[str, Any] | None = None,
    *,
    master: str = "local[2]",
    driver_memory: str = "2g",
) -> SparkSession:
    """A SparkSession for ``master`` with the Kafka connector, RocksDB state and no UI.

    Settings that only take effect when the JVM starts (jars, memory) are ignored if a session is
    already running in this process: stop it first (``spark.stop()``) to change them.
    """
    from pyspark.sql import SparkSession

    _ensure_env()
    local_dir = Path(settings.local_dir).resolve()
    scratch = local_dir / "spark"
    scratch.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = {
        "spark.jars": ",".join(str(p) for p in connector_jars(settings)),
        "spark.driver.memory": driver_memory,
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": str(settings.stream_shuffle_partitions),
        "spark.default.parallelism": str(settings.stream_shuffle_partitions),
        "spark.sql.streaming.stateStore.providerClass": ROCKSDB_PROVIDER,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.local.dir": str(scratch / "tmp"),
        "spark.sql.warehouse.dir": str(scratch / "warehouse"),
        # ParallelGC and C1-only JIT: Spark generates and loads new classes every micro-batch, and with
        # G1 + C2 the collector and the optimising compiler took over half of the JVM's CPU (docs/stream.md)
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={scratch / 'derby'} "
        + os.environ.get("FRAUDWATCH_SPARK_JAVA_OPTS", JVM_OPTIONS),
    }
    conf.update({k: str(v) for k, v in (extra_conf or {}).items()})
    # FRAUDWATCH_SPARK_CONF="key=value;key=value": any further Spark setting (profiling, tuning)
    for item in filter(None, os.environ.get("FRAUDWATCH_SPARK_CONF", "").split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"FRAUDWATCH_SPARK_CONF: {item!r} is not key=value")
        conf[key.strip()] = value.strip()
    builder = SparkSession.builder.appName(app_name).master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
