"""Warm start of the stream's Spark state from a bootstrap snapshot (:mod:`fraudwatch.bootstrap`).

The snapshot's card and terminal records become the initial state of the two ``transformWithStateInPandas``
stages, grouped by the same bucket (``crc32(entity_id) % buckets``, computed by Spark exactly as
:func:`fraudwatch_stream.records.bucket_of` and the terminal-bucket column of the query compute it), and
:func:`fraudwatch_stream.stateful.seed_bucket` writes them into each bucket's log.

Spark applies an operator's initial state only when it runs batch 0 of a checkpoint. A restart from a
checkpoint whose batch 0 committed ignores it (the state comes from the checkpoint, as always), and a batch 0
that fails is re-run from nothing plus the same snapshot, so the exactly-once story is unchanged: the state
after batch *n* is the snapshot plus batches 0..*n*, whatever failed on the way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fraudwatch.config import Settings

__all__ = ["initial_states"]


def initial_states(spark: Any, settings: Settings, buckets: int) -> tuple[Any, Any]:
    """(terminal, card) initial state, grouped by bucket for each stage; (None, None) without a snapshot.

    A configured snapshot that does not exist is an error: a warm start that silently runs cold would
    make every live feature wrong for the history's cards without a sign.
    """
    path: Path | None = settings.stream_warm_start
    if path is None:
        return None, None
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"FRAUDWATCH_STREAM_WARM_START={path} does not exist (`make bootstrap` writes it)"
        )
    from pyspark.sql import functions as F

    frame = spark.read.parquet(str(path.resolve()))
    bucket = F.pmod(F.crc32(F.col("entity_id").cast("binary")), F.lit(buckets)).cast("int")
    terminals = frame.where(F.col("kind") == "terminal").select(bucket.alias("tb"), "entity_id", "state")
    cards = frame.where(F.col("kind") == "card").select(bucket.alias("cb"), "entity_id", "state")
    return terminals.groupBy("tb"), cards.groupBy("cb")
