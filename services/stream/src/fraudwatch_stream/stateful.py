"""The two stateful operators: terminal state, then card state, both in Spark state (RocksDB).

Both are ``transformWithStateInPandas`` operators (Spark 4's arbitrary-state API, which, unlike
``applyInPandasWithState``, may be chained) in append mode. The grouping key is a *bucket* —
``crc32(entity_id) % buckets`` — not the entity id, so the per-group cost of the pandas API (a DataFrame per
group, one Python call) is paid per bucket rather than per card; each group keeps a ``MapState`` keyed by
entity id (:class:`MapEntities`), so only the entities a batch touches are read and written.
:class:`BlobEntities` (the whole bucket as one pickled value) was the first layout; docs/stream.md says why
it lost.

Inside a group, rows are processed in (time, kind) order — transactions at their event_time before labels
at their reported_at — exactly like :func:`fraudwatch.features.replay`, through the same ``terminal_step``,
``apply_label`` and ``card_step`` functions. Rows the operator does not own (dead letters, state rows of the
other operator) pass through untouched.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pandas as pd

from fraudwatch.features import CardState, TerminalState, apply_label, card_step, terminal_step
from fraudwatch_stream.records import (
    CARD_STATE,
    LABEL,
    ROW_COLUMNS,
    TERMINAL_STATE,
    TRANSACTION,
    bucket_of,
    empty_rows,
)

__all__ = [
    "STATE_SCHEMA_DDL",
    "CardProcessor",
    "TerminalProcessor",
    "card_operator",
    "terminal_operator",
]

#: group state: the pickled ``{entity_id: state bytes}`` of one bucket (written and read only by this job)
STATE_SCHEMA_DDL = "entities BINARY"


def _load(state: Any) -> dict[str, bytes]:
    exists = state.exists() if callable(state.exists) else state.exists
    if not exists:
        return {}
    value = state.get() if callable(state.get) else state.get
    loaded: dict[str, bytes] = pickle.loads(value[0])  # noqa: S301 - bytes this job wrote to its own state
    return loaded


def _save(state: Any, entities: dict[str, bytes]) -> None:
    state.update((pickle.dumps(entities, protocol=pickle.HIGHEST_PROTOCOL),))


class BlobEntities:
    """A bucket's entities as one pickled dict in a ValueState (read whole, rewritten whole)."""

    def __init__(self, state: Any) -> None:
        self._state = state
        self._entities = _load(state)

    def get(self, entity_id: str) -> bytes | None:
        return self._entities.get(entity_id)

    def put_all(self, items: dict[str, bytes]) -> None:
        self._entities.update(items)
        _save(self._state, self._entities)


class MapEntities:
    """A bucket's entities in a MapState keyed by entity id: only touched entities are read and written."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def get(self, entity_id: str) -> bytes | None:
        value = self._state.getValue((entity_id,))
        return bytes(value[0]) if value is not None else None

    def put_all(self, items: dict[str, bytes]) -> None:
        for entity_id, raw in items.items():
            self._state.updateValue((entity_id,), (raw,))


def _state_rows(kind: int, column: str, encoded: dict[str, bytes], buckets: int) -> pd.DataFrame:
    out = empty_rows(len(encoded))
    out["kind"] = [kind] * len(encoded)
    ids = list(encoded)
    out[column] = ids
    out["state"] = list(encoded.values())
    out["tb"] = out["cb"] = [bucket_of(i, buckets) for i in ids]
    return pd.DataFrame(out, columns=list(ROW_COLUMNS))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _sorted(pdf: pd.DataFrame) -> pd.DataFrame:
    # (time, kind) like offline.replay; Kafka position breaks the remaining ties deterministically
    return pdf.sort_values(["t_us", "kind", "src_partition", "src_offset"], kind="stable")


def terminal_operator(
    key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any, *, buckets: int
) -> Iterator[pd.DataFrame]:
    """Terminal features of every transaction; labels update terminal risk; emits state rows."""
    pdf = pd.concat(list(pdfs), ignore_index=True)
    kinds = pdf["kind"]
    passthrough = pdf[(kinds != TRANSACTION) & (kinds != LABEL)]
    if len(passthrough):
        yield passthrough
    work = _sorted(pdf[(kinds == TRANSACTION) | (kinds == LABEL)])
    if not len(work):
        return
    entities = state if hasattr(state, "put_all") else BlobEntities(state)
    touched: dict[str, TerminalState] = {}
    feats: list[list[float] | None] = []
    for kind, t_us, tid, txid, fraud, event_us in zip(
        work["kind"].tolist(),
        work["t_us"].tolist(),
        work["terminal_id"].tolist(),
        work["transaction_id"].tolist(),
        work["is_fraud"].tolist(),
        work["label_event_us"].tolist(),
        strict=True,
    ):
        term = touched.get(tid)
        if kind == LABEL and not fraud:
            feats.append(None)  # genuine labels change no state (and create none, like replay)
            continue
        if term is None:
            raw = entities.get(tid)
            term = touched[tid] = TerminalState.from_bytes(raw) if raw else TerminalState()
        if kind == TRANSACTION:
            feats.append(terminal_step(term, t_us / 1e6))
        else:
            apply_label(term, txid, int(event_us) / 1e6, True)
            feats.append(None)
    encoded = {tid: term.to_bytes() for tid, term in touched.items()}
    entities.put_all(encoded)
    work = work.assign(tfeat=feats)
    yield work[work["kind"] == TRANSACTION]
    if touched:
        yield _state_rows(TERMINAL_STATE, "terminal_id", encoded, buckets)


def card_operator(
    key: tuple[Any, ...], pdfs: Iterator[pd.DataFrame], state: Any, *, buckets: int
) -> Iterator[pd.DataFrame]:
    """Transaction + card features of every transaction (in FEATURE_NAMES order); emits state rows."""
    pdf = pd.concat(list(pdfs), ignore_index=True)
    is_tx = pdf["kind"] == TRANSACTION
    passthrough = pdf[~is_tx]
    if len(passthrough):
        yield passthrough
    work = _sorted(pdf[is_tx])
    if not len(work):
        return
    entities = state if hasattr(state, "put_all") else BlobEntities(state)
    touched: dict[str, CardState] = {}
    feats: list[list[float]] = []
    for t_us, cid, tid, amount, country, channel in zip(
        work["t_us"].tolist(),
        work["card_id"].tolist(),
        work["terminal_id"].tolist(),
        work["amount"].tolist(),
        work["country"].tolist(),
        work["channel"].tolist(),
        strict=True,
    ):
        card = touched.get(cid)
        if card is None:
            raw = entities.get(cid)
            card = touched[cid] = CardState.from_bytes(raw) if raw else CardState()
        feats.append(card_step(card, t_us / 1e6, float(amount), tid, _text(country), _text(channel)))
    encoded = {cid: card.to_bytes() for cid, card in touched.items()}
    entities.put_all(encoded)
    yield work.assign(cfeat=feats)
    yield _state_rows(CARD_STATE, "card_id", encoded, buckets)


def _processor_base() -> type:
    from pyspark.sql.streaming import StatefulProcessor

    return StatefulProcessor


class _BucketProcessor(_processor_base()):  # type: ignore[misc]
    """A StatefulProcessor holding one bucket's entity states in a ValueState."""

    def __init__(self, buckets: int) -> None:
        self.buckets = buckets
        self.state: Any = None

    def init(self, handle: Any) -> None:
        self.state = MapEntities(handle.getMapState("entities", "entity_id STRING", "state BINARY"))

    def close(self) -> None:
        return None


class TerminalProcessor(_BucketProcessor):
    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        yield from terminal_operator(key, rows, self.state, buckets=self.buckets)


class CardProcessor(_BucketProcessor):
    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        yield from card_operator(key, rows, self.state, buckets=self.buckets)
