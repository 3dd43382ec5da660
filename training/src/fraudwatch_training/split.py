"""Time-ordered train / validation / test split with a gap for the label delay between the parts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["SplitConfig", "TimeSplit", "time_split"]


@dataclass(frozen=True)
class SplitConfig:
    """Days of each part, counted back from the end of the history; ``gap_days`` separates the parts."""

    validation_days: float = 7.0
    test_days: float = 7.0
    gap_days: float = 7.0  # the label delay: a model deployed at the end of training knows no later label
    train_days: float | None = None  # None: all the history before


@dataclass(frozen=True)
class TimeSplit:
    train: npt.NDArray[np.bool_]
    validation: npt.NDArray[np.bool_]
    test: npt.NDArray[np.bool_]
    bounds: dict[str, tuple[pd.Timestamp, pd.Timestamp]]  # [start, end) of each part


def time_split(event_time: pd.Series, config: SplitConfig = SplitConfig()) -> TimeSplit:
    """Split by event time: ``[train] gap [validation] gap [test]`` ending at the last transaction."""
    t = pd.to_datetime(event_time)
    end = t.max() + pd.Timedelta(microseconds=1)
    test_start = end - pd.Timedelta(days=config.test_days)
    val_end = test_start - pd.Timedelta(days=config.gap_days)
    val_start = val_end - pd.Timedelta(days=config.validation_days)
    train_end = val_start - pd.Timedelta(days=config.gap_days)
    train_start = (
        train_end - pd.Timedelta(days=config.train_days) if config.train_days is not None else t.min()
    )
    if train_end <= t.min():
        raise ValueError(
            f"history of {(end - t.min()).days} days is too short for validation {config.validation_days} d, "
            f"test {config.test_days} d and two gaps of {config.gap_days} d"
        )

    def part(lo: pd.Timestamp, hi: pd.Timestamp) -> npt.NDArray[np.bool_]:
        return ((t >= lo) & (t < hi)).to_numpy(dtype=bool)

    bounds = {
        "train": (train_start, train_end),
        "validation": (val_start, val_end),
        "test": (test_start, end),
    }
    return TimeSplit(part(*bounds["train"]), part(*bounds["validation"]), part(*bounds["test"]), bounds)
