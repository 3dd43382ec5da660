"""Fixed-size, versioned binary state records of cards and terminals, and the small codes the kernels use.

A card's or a terminal's state is one row of a numpy structured array (packed, little-endian); the online
store, the stream's Spark state and the offline replay all hold exactly these bytes. The first field is a
layout version: bytes of another version (or size) are refused with :class:`FeatureStateError` instead of
being misread. docs/model.md lists both layouts with their sizes.

Entity ids never reach the kernels: ids map to rows outside them, a terminal id to its CRC-32
(:func:`terminal_keys`), a country to its two ASCII letters as one 16-bit code, a channel to a small code and
a label's transaction id to a 64-bit BLAKE2b hash (the terminal's dedup ring) — all stable across processes.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from fraudwatch.errors import FeatureStateError
from fraudwatch.features.spec import (
    CARD_COUNTRIES_KEPT,
    CARD_RING,
    CARD_TERMINALS_KEPT,
    LABEL_IDS_KEPT,
    TERMINAL_TILES,
)

__all__ = [
    "CARD_DTYPE",
    "CARD_VERSION",
    "CHANNEL_CODES",
    "TERMINAL_DTYPE",
    "TERMINAL_VERSION",
    "channel_codes",
    "check_record",
    "country_codes",
    "label_hashes",
    "new_states",
    "record_bytes",
    "states_from_bytes",
    "terminal_key",
    "terminal_keys",
]

CARD_VERSION = 2  # version 1 was the JSON state of the per-record Python code
TERMINAL_VERSION = 2
NO_DAY = np.iinfo(np.int32).min  # an empty tile

CARD_DTYPE = np.dtype(
    [
        ("version", "<u2"),
        ("n_life", "<i8"),  # lifetime transaction count
        ("sum_life", "<f8"),  # lifetime amount sum
        ("last_ts", "<f8"),  # latest transaction time (epoch seconds)
        ("last_country", "<u2"),  # country of the latest transaction that had one (0: none)
        ("home_country", "<u2"),  # first country seen (0: none)
        ("ring_head", "<u2"),  # next ring slot to write
        ("ring_len", "<u2"),  # filled ring slots (<= CARD_RING)
        ("ring_ts", "<f8", (CARD_RING,)),  # the CARD_RING most recent transactions: time ...
        ("ring_amount", "<f8", (CARD_RING,)),  # ... and amount
        ("n_terminals", "<u1"),
        ("terminals", "<u4", (CARD_TERMINALS_KEPT,)),  # most recent distinct terminal keys, newest last
        ("n_countries", "<u1"),
        ("countries", "<u2", (CARD_COUNTRIES_KEPT,)),  # most recent distinct countries, newest last
    ]
)
TERMINAL_DTYPE = np.dtype(
    [
        ("version", "<u2"),
        ("n_life", "<i8"),  # lifetime transaction count
        ("last_fraud_ts", "<f8"),  # event time of the latest reported fraud (-inf: none)
        ("tile_newest", "<i4"),  # newest UTC day (days since epoch) held in the tiles
        ("tile_day", "<i4", (TERMINAL_TILES,)),  # tile slot day % TERMINAL_TILES holds this day ...
        ("tile_count", "<i4", (TERMINAL_TILES,)),  # ... its transactions ...
        ("tile_fraud", "<i4", (TERMINAL_TILES,)),  # ... and reported frauds that happened that day
        ("label_head", "<u1"),
        ("label_len", "<u1"),
        ("label_hashes", "<u8", (LABEL_IDS_KEPT,)),  # hashes of the most recently applied fraud labels
    ]
)
_VERSIONS = {CARD_DTYPE: CARD_VERSION, TERMINAL_DTYPE: TERMINAL_VERSION}
_KIND = {CARD_DTYPE: "card", TERMINAL_DTYPE: "terminal"}

#: channel codes (anything else, or none, is 0)
CHANNEL_CODES: dict[str, int] = {"pos": 1, "ecom": 2, "atm": 3}


def new_states(dtype: np.dtype, n: int) -> np.ndarray:
    """``n`` records of entities never seen."""
    out = np.zeros(n, dtype=dtype)
    out["version"] = _VERSIONS[dtype]
    if dtype == TERMINAL_DTYPE:
        out["last_fraud_ts"] = -np.inf
        out["tile_newest"] = NO_DAY
        out["tile_day"] = NO_DAY
    return out


def check_record(raw: bytes, dtype: np.dtype) -> bytes:
    """``raw`` if it is one record of ``dtype`` at the current version, else FeatureStateError."""
    kind = _KIND[dtype]
    if len(raw) != dtype.itemsize:
        raise FeatureStateError(f"cannot decode {kind} state: {len(raw)} bytes, not {dtype.itemsize}")
    version = int.from_bytes(raw[:2], "little")
    if version != _VERSIONS[dtype]:
        raise FeatureStateError(f"cannot decode {kind} state: version {version} is not {_VERSIONS[dtype]}")
    return raw


def states_from_bytes(values: Sequence[bytes | None], dtype: np.dtype) -> np.ndarray:
    """A writable record array from stored records (None: an entity never seen); checks size and version."""
    out = new_states(dtype, len(values))
    present = [i for i, v in enumerate(values) if v is not None]
    if present:
        blob = b"".join(check_record(values[i], dtype) for i in present)  # type: ignore[arg-type]
        out[present] = np.frombuffer(blob, dtype=dtype)
    return out


def record_bytes(states: np.ndarray, rows: Iterable[int] | None = None) -> list[bytes]:
    """The stored form of records (all, or the given rows): each one structured-array row's bytes."""
    picked = states if rows is None else states[np.asarray(list(rows), dtype=np.int64)]
    blob = picked.tobytes()
    size = states.dtype.itemsize
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def terminal_key(terminal_id: str) -> int:
    """A stable 32-bit key for a terminal id (the same in every process, unlike ``hash``)."""
    return zlib.crc32(terminal_id.encode("utf-8"))


def _per_unique(values: Sequence[object] | pd.Series | np.ndarray, fn: object, dtype: str) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
    mapped = np.array([fn(u) for u in uniques.tolist()], dtype=dtype)  # type: ignore[operator]
    out = np.zeros(len(codes), dtype=dtype)
    ok = codes >= 0
    out[ok] = mapped[codes[ok]]
    return out


def terminal_keys(ids: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
    """CRC-32 keys of terminal ids (computed once per distinct id)."""
    return _per_unique(ids, lambda v: terminal_key(str(v)), "<u4")


def _country(value: object) -> int:
    if not isinstance(value, str) or len(value) != 2 or not value.isascii():
        return 0
    return (ord(value[0]) << 8) | ord(value[1])


def country_codes(values: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
    """16-bit codes of ISO 3166-1 alpha-2 countries (the two ASCII letters); 0 for none."""
    return _per_unique(values, _country, "<u2")


def channel_codes(values: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
    """Small codes of channels (:data:`CHANNEL_CODES`); 0 for none or unknown."""
    return _per_unique(values, lambda v: CHANNEL_CODES.get(v, 0) if isinstance(v, str) else 0, "<u1")


def _label_hash(transaction_id: object) -> int:
    digest = hashlib.blake2b(str(transaction_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def label_hashes(transaction_ids: Sequence[object] | pd.Series | np.ndarray) -> np.ndarray:
    """64-bit hashes of labels' transaction ids (what the terminal's dedup ring holds)."""
    return _per_unique(transaction_ids, _label_hash, "<u8")
