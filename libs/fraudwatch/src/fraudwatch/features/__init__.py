"""Features: one compiled, columnar engine for per-entity state and features, used by training, stream and API.

* :mod:`.spec` — the declarations: every window once, as data; ``FEATURE_NAMES`` fixes the order.
* :mod:`.layout` — the fixed-size, versioned binary records of card and terminal state, and entity codes.
* :mod:`.kernels` — the numba kernels (cached): features of a block of events, states updated in place.
* :mod:`.engine` — the entry points: blocks of events (replay, stream) and read-only rows (API).
* :mod:`.offline` — point-in-time replay of history through the engine (the training-set builder).
"""

from fraudwatch.features.engine import (
    CARD_COLUMNS,
    LABEL,
    TERMINAL_COLUMNS,
    TRANSACTION,
    card_features,
    feature_vector,
    online_features,
    terminal_features,
    warm_up,
)
from fraudwatch.features.layout import (
    CARD_DTYPE,
    TERMINAL_DTYPE,
    channel_codes,
    check_record,
    country_codes,
    label_hashes,
    new_states,
    record_bytes,
    states_from_bytes,
    terminal_key,
    terminal_keys,
)
from fraudwatch.features.offline import ReplayResult, datetime_seconds, epoch_seconds, replay
from fraudwatch.features.spec import (
    CARD_FEATURES,
    CARD_WINDOWS,
    FEATURE_NAMES,
    TERMINAL_FEATURES,
    TERMINAL_WINDOWS,
    TX_FEATURES,
    Window,
    feature_table,
)

__all__ = [
    "CARD_COLUMNS",
    "CARD_DTYPE",
    "CARD_FEATURES",
    "CARD_WINDOWS",
    "FEATURE_NAMES",
    "LABEL",
    "TERMINAL_COLUMNS",
    "TERMINAL_DTYPE",
    "TERMINAL_FEATURES",
    "TERMINAL_WINDOWS",
    "TRANSACTION",
    "TX_FEATURES",
    "ReplayResult",
    "Window",
    "card_features",
    "channel_codes",
    "check_record",
    "country_codes",
    "datetime_seconds",
    "epoch_seconds",
    "feature_table",
    "feature_vector",
    "label_hashes",
    "new_states",
    "online_features",
    "record_bytes",
    "replay",
    "states_from_bytes",
    "terminal_features",
    "terminal_key",
    "terminal_keys",
    "warm_up",
]
