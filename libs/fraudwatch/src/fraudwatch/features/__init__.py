"""Features: one implementation of per-entity state and feature code, used by training, stream and API.

* :mod:`.state` — bounded card and terminal state and its serialisation.
* :mod:`.compute` — feature blocks (read only) and state updates; ``FEATURE_NAMES`` fixes the order.
* :mod:`.offline` — point-in-time replay of history through the same code (the training-set builder).
"""

from fraudwatch.features.compute import (
    CARD_FEATURES,
    FEATURE_NAMES,
    TERMINAL_FEATURES,
    TX_FEATURES,
    apply_label,
    card_block,
    card_step,
    feature_vector,
    terminal_block,
    terminal_step,
    update_card,
    update_terminal,
)
from fraudwatch.features.offline import ReplayResult, datetime_seconds, epoch_seconds, replay
from fraudwatch.features.state import CardState, TerminalState, terminal_key

__all__ = [
    "CARD_FEATURES",
    "FEATURE_NAMES",
    "TERMINAL_FEATURES",
    "TX_FEATURES",
    "CardState",
    "ReplayResult",
    "TerminalState",
    "apply_label",
    "card_block",
    "card_step",
    "datetime_seconds",
    "epoch_seconds",
    "feature_vector",
    "replay",
    "terminal_block",
    "terminal_key",
    "terminal_step",
    "update_card",
    "update_terminal",
]
