"""fraudwatch producer: streams live simulated (or replayed) transactions to Kafka, and their labels later.

    fraudwatch-produce --speedup 3600 --duration 60         # live: one simulated hour per second
    fraudwatch-produce --rate 5000 --duration 60            # live at a fixed rate
    fraudwatch-produce --replay history.parquet --speedup 0  # replay a history as fast as possible

See docs/producer.md.
"""

from fraudwatch_producer.producer import ProducerOptions, RunSummary, run
from fraudwatch_producer.sources import HANDBOOK_PRESET, LiveSource, ReplaySource

__all__ = ["HANDBOOK_PRESET", "LiveSource", "ProducerOptions", "ReplaySource", "RunSummary", "run"]
