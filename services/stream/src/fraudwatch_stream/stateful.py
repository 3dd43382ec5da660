"""The two stateful stages of the job, both ``transformWithStateInPandas`` operators on RocksDB state.

* **Terminal stage** (grouped by terminal bucket; raw Kafka rows in): validates every record with the
  pydantic event models (bad ones become dead-letter rows), computes the terminal features of each
  transaction and applies labels to terminal risk.
* **Card stage** (grouped by card bucket): computes the transaction and card features; an iterator-of-batches
  pandas UDF (:mod:`.scoring`) then scores the complete vector with the production model.

**Poison records** (docs/stream.md): whatever one record raises in its per-record work — parsing and
validation (:mod:`.records`), non-finite features out of the feature kernels — becomes a dead letter for that
record only. A group runs its steps against the committed entity states (nothing is written before the
commit), so when a record fails the group is simply run again without that record (:func:`_isolate`): the
records that remain see exactly the state they would have seen had the poison record never arrived. Errors that are not
a record's fault (state that cannot be decoded, the state store, Spark) still fail the batch, which Spark
then re-runs from the last committed state; so does an online store that cannot take a group's states
(:class:`StoreWriter`: the group reports it and the driver counts it and fails the batch).

Inside a group rows are processed in (time, kind) order — transactions at their event_time before labels
at their reported_at — exactly like :func:`fraudwatch.features.replay`, as one block through the same
compiled kernels (:func:`fraudwatch.features.card_features`, :func:`fraudwatch.features.terminal_features`)
on the group's entity state records. Rows a stage does not own (dead letters, the other stage's state rows)
pass through untouched.

**State layout** (:class:`EntityLog`). A group is a *bucket* of entities (``crc32(id) % buckets``), and its
state is a log: a ``ListState`` of packed chunks ``{entity_id: state record bytes}`` (base64 text; each micro-batch appends one
chunk with the entities it changed; the log is compacted into one snapshot when it grows past twice the live
size) plus a ``ValueState`` holding a random token that changes with every write. A Python worker keeps the
bucket it last wrote in memory, tagged with that token: when the token in Spark state still matches, the
worker reuses it and reads nothing from the state store; otherwise (another worker wrote the bucket since,
a retried or restarted batch, a new worker) it rebuilds the bucket from the log. Spark state stays the only
source of truth — the cache is only ever used when it equals what Spark holds — so checkpoints, restarts and
retries keep their exactly-once meaning. docs/stream.md explains why (one state-server round trip per entity
costs 100-200 µs here; a batch of 10,000 events touches ~10,000 entities per stage).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import struct
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from fraudwatch.config import Settings
from fraudwatch.errors import StoreError
from fraudwatch.events import EventBounds, dead_letter_for
from fraudwatch.features import (
    CARD_DTYPE,
    TERMINAL_DTYPE,
    card_features,
    channel_codes,
    country_codes,
    label_hashes,
    record_bytes,
    states_from_bytes,
    terminal_features,
    terminal_keys,
)
from fraudwatch.features import LABEL as BLOCK_LABEL
from fraudwatch.features import TRANSACTION as BLOCK_TRANSACTION
from fraudwatch.store import OnlineStore, open_store
from fraudwatch_stream.records import (
    CARD_STATE,
    DEAD_LETTER,
    LABEL,
    ROW_COLUMNS,
    STORE_ERROR,
    TERMINAL_STATE,
    TRANSACTION,
    dead_letter_row,
    empty_rows,
    pack_features,
    parse_frame,
)

_T = TypeVar("_T")

__all__ = [
    "CHUNK_BYTES",
    "CardProcessor",
    "EntityLog",
    "RecordFailed",
    "StoreWriter",
    "TerminalProcessor",
    "card_stage",
    "seed_bucket",
    "terminal_stage",
]

#: a chunk of the log holds at most about this many bytes of entity states
CHUNK_BYTES = 4 << 20
#: compact the log when it has more chunks than this (or more than twice the live bytes)
MAX_CHUNKS = 64
META_SCHEMA_DDL = "token BIGINT, chunks INT, live_bytes BIGINT, log_bytes BIGINT, entities BIGINT"
#: chunks are text (CHUNK_FORMAT + base64 of zstd): the state server sends BINARY values to Python through
#: Pyrolite, which builds them one character at a time; ASCII strings take its fast path (JFR, docs/stream.md)
LOG_SCHEMA_DDL = "chunk STRING"
#: prefix of a chunk in the current layout (zstd-compressed packed keys and records, :func:`_chunk`)
CHUNK_FORMAT = "z1:"
CHUNK_ZSTD_LEVEL = 1

#: per Python worker: (stage, bucket) -> (token, {entity_id: state bytes}) of the last bucket it wrote
_CACHE: dict[tuple[str, int], tuple[int, dict[str, bytes]]] = {}


class CacheStats:
    """Hits and misses of this worker's bucket cache (read by the tests and the debug log)."""

    hits = 0
    misses = 0


#: FRAUDWATCH_STREAM_PROFILE=1: one JSON line per group on the worker's stderr (stage, rows, seconds per step)
PROFILE = os.environ.get("FRAUDWATCH_STREAM_PROFILE", "") == "1"


def _profile(stage: str, bucket: int, rows: int, marks: list[tuple[str, float]]) -> None:
    if not PROFILE or len(marks) < 2:
        return
    steps = {name: round(t - marks[i][1], 4) for i, (name, t) in enumerate(marks[1:])}
    record = {"event": "stage_profile", "stage": stage, "bucket": bucket, "rows": rows, "seconds": steps}
    record["cache"] = {"hits": CacheStats.hits, "misses": CacheStats.misses, "pid": os.getpid()}
    print(json.dumps(record), file=sys.stderr, flush=True)


def _codecs() -> tuple[Any, Any]:
    """This worker's zstd (de)compressor (built once; a worker runs one task at a time)."""
    global _CODECS
    if _CODECS is None:
        import zstandard

        _CODECS = (zstandard.ZstdCompressor(level=CHUNK_ZSTD_LEVEL), zstandard.ZstdDecompressor())
    return _CODECS


_CODECS: tuple[Any, Any] | None = None


def _chunk(part: dict[str, bytes]) -> tuple[str, int]:
    """``part`` as one chunk (CHUNK_FORMAT + base64 of zstd) and its uncompressed size.

    Body: entity count (u32), every key's then every value's length (u32 each), the UTF-8 keys, the values.
    Fixed-size state records of one bucket compress ~20-50x (mostly empty ring slots and tiles), so a batch
    moves tens of KB through the state server and RocksDB instead of tens of MB.
    """
    keys = [k.encode("utf-8") for k in part]
    values = list(part.values())
    lengths = np.array([len(k) for k in keys] + [len(v) for v in values], dtype="<u4")
    body = struct.pack("<I", len(keys)) + lengths.tobytes() + b"".join(keys) + b"".join(values)
    packed = base64.b64encode(_codecs()[0].compress(body)).decode("ascii")
    return CHUNK_FORMAT + packed, len(body)


def _unchunk(chunk: str) -> dict[str, bytes]:
    if not chunk.startswith(CHUNK_FORMAT):
        # not a record's fault: fails the batch (a checkpoint written by an older layout needs a fresh one)
        raise ValueError(f"a state chunk of an unknown format ({chunk[:8]!r}...); expected {CHUNK_FORMAT!r}")
    body = _codecs()[1].decompress(base64.b64decode(chunk[len(CHUNK_FORMAT) :]))
    (n,) = struct.unpack_from("<I", body)
    lengths = np.frombuffer(body, dtype="<u4", count=2 * n, offset=4).astype(np.int64)
    ends = (4 + 8 * n + np.cumsum(lengths)).tolist()
    starts = [e - length for e, length in zip(ends, lengths.tolist(), strict=True)]
    return {body[starts[i] : ends[i]].decode("utf-8"): body[starts[n + i] : ends[n + i]] for i in range(n)}


def _pack(entities: dict[str, bytes]) -> list[tuple[str, int]]:
    """``entities`` as chunks of about CHUNK_BYTES (uncompressed) each, with their uncompressed sizes."""
    chunks: list[tuple[str, int]] = []
    part: dict[str, bytes] = {}
    size = 0
    for key, value in entities.items():
        part[key] = value
        size += len(value) + len(key)
        if size >= CHUNK_BYTES:
            chunks.append(_chunk(part))
            part, size = {}, 0
    if part or not chunks:
        chunks.append(_chunk(part))
    return chunks


class EntityLog:
    """One bucket's entity states in Spark state: a chunk log (ListState) + a token (ValueState)."""

    def __init__(self, stage: str, handle: Any) -> None:
        self.stage = stage
        self._meta = handle.getValueState("meta", META_SCHEMA_DDL)
        self._log = handle.getListState("log", LOG_SCHEMA_DDL)

    def open(self, bucket: int) -> tuple[dict[str, bytes], tuple[int, int, int, int, int]]:
        """The bucket's ``{entity_id: state bytes}`` (as of the last committed batch) and its meta row."""
        row = self._meta.get()
        cached = _CACHE.pop((self.stage, bucket), None)  # popped: a failure below must not leave it behind
        if row is None:
            return {}, (0, 0, 0, 0, 0)
        meta = (int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4]))
        if cached is not None and cached[0] == meta[0]:
            CacheStats.hits += 1
            return cached[1], meta
        CacheStats.misses += 1
        entities: dict[str, bytes] = {}
        for (chunk,) in self._log.get():
            entities.update(_unchunk(chunk))
        return entities, meta

    def commit(
        self,
        bucket: int,
        entities: dict[str, bytes],
        meta: tuple[int, int, int, int, int],
        changed: dict[str, bytes],
    ) -> None:
        """Append ``changed`` (or compact the whole bucket), write a new token, keep the bucket cached."""
        _, chunks, live, logged, _ = meta
        for key, value in changed.items():
            old = entities.get(key)
            live += len(value) - (len(old) if old is not None else -len(key))
        entities.update(changed)
        delta = _pack(changed)
        added = sum(size for _, size in delta)  # sizes uncompressed, like live: the ratio stays meaningful
        if chunks + len(delta) > MAX_CHUNKS or logged + added > 2 * live + CHUNK_BYTES:
            snapshot = _pack(entities)
            self._log.put([(c,) for c, _ in snapshot])
            chunks, logged = len(snapshot), sum(size for _, size in snapshot)
        else:
            self._log.appendList([(c,) for c, _ in delta])
            chunks, logged = chunks + len(delta), logged + added
        token = secrets.randbits(63)
        self._meta.update((token, chunks, live, logged, len(entities)))
        _CACHE[(self.stage, bucket)] = (token, entities)


class RecordFailed(Exception):
    """Records of a group whose per-record step failed: ``{position in the work frame: error text}``."""

    def __init__(self, failures: dict[int, str]) -> None:
        super().__init__(f"{len(failures)} record(s) failed")
        self.failures = failures


def _isolate(steps: Callable[[frozenset[int]], _T]) -> tuple[_T, dict[int, str]]:
    """Run a group's per-record ``steps(skip)``; when records fail, run it again without them.

    ``steps`` must start from the committed entity states every time (it may only write state after it
    returns), so the final pass is exactly the pass the group would have had without the failed records.
    No cost while nothing fails; each failing record costs one more pass over its group.
    """
    failed: dict[int, str] = {}
    while True:
        try:
            return steps(frozenset(failed)), failed
        except RecordFailed as exc:
            new = {pos: err for pos, err in exc.failures.items() if pos not in failed}
            if not new:  # a step must never fail twice for the same record; refuse to loop
                raise RuntimeError("a skipped record failed again") from exc
            failed.update(new)


def _check_finite(features: np.ndarray, positions: np.ndarray, where: str) -> None:
    """Feature rows must be finite: a non-finite row means its record pushed the state out of range.

    Only the first such record fails a pass: the records after it may be non-finite only because of it, and
    the next pass (without it) tells.
    """
    ok = np.isfinite(features).all(axis=1)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise RecordFailed({int(positions[first]): f"{where}: the features are not finite"})


def _records(entities: dict[str, bytes], ids: list[str], dtype: np.dtype) -> np.ndarray:
    # undecodable state (another layout version) is not a record's fault: it fails the batch
    return states_from_bytes([entities.get(i) for i in ids], dtype)


class StoreWriter:
    """Writes the entity states a group changed to the online store, from the Python worker itself.

    The states do not travel through the dataflow to the driver (measured: ~15 MB of state rows per
    10,000-record batch through Arrow, the shuffle and the collect; docs/stream.md). A stage writes them
    before it commits its Spark state, i.e. before the batch reaches the sink's table write, so a transaction
    in the table always has its state in the store; a re-run batch writes the same bytes again (idempotent).
    A store that fails fails the batch (not a record's fault): the group commits nothing and reports the
    failure in its report row, and the driver counts it (``fraudwatch_store_errors_total``: the workers have no
    metrics server) and fails the batch (:meth:`fraudwatch_stream.job.StreamJob.write_batch`). Only the
    Settings travel to the workers; each worker process opens its store once (:data:`_STORES`).
    """

    def __init__(self, settings: Settings) -> None:
        # resolved on the driver: a relative local_dir must not depend on a worker's working directory
        self.settings = settings.model_copy(update={"sqlite_path": settings.resolved_sqlite_path.resolve()})

    def _key(self) -> tuple[str, str]:
        s = self.settings
        return (s.store_backend, s.redis_url if s.store_backend == "redis" else str(s.resolved_sqlite_path))

    def put(self, cards: dict[str, bytes], terminals: dict[str, bytes]) -> float:
        """Write the states; returns the seconds it took. Raises :class:`~fraudwatch.errors.StoreError`
        (StoreUnavailable: Redis down, SQLite locked) when the store fails, the opening included."""
        key = self._key()
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = open_store(self.settings)
        started = time.perf_counter()
        store.put(cards, terminals)
        return time.perf_counter() - started


#: per Python worker: the online stores it opened, by (backend, address)
_STORES: dict[tuple[str, str], OnlineStore] = {}


def _write_states(store: StoreWriter | None, kind: int, encoded: dict[str, bytes]) -> tuple[float, str]:
    """(seconds, error): the online store write of a group's changed states; ``error`` is empty on success.

    Only the store's own failures (:class:`~fraudwatch.errors.StoreError`: down, locked, refused) are
    returned, for the driver to count; anything else is a bug and fails the task as it is.
    """
    if store is None or not encoded:
        return 0.0, ""
    started = time.perf_counter()
    try:
        store.put(encoded, {}) if kind == CARD_STATE else store.put({}, encoded)
    except StoreError as exc:
        return time.perf_counter() - started, f"{type(exc).__name__}: {str(exc)[:500]}"
    return time.perf_counter() - started, ""


def _state_row(
    kind: int, bucket: int, entities: int, written: int, seconds: float, error: str = ""
) -> pd.DataFrame:
    """One small report row per group: the bucket's entity count (the ``state_rows`` gauge), how many states
    the group wrote to the online store (``src_offset``) and how long that took (``amount``, seconds); a
    failed write has ``reason`` STORE_ERROR and the error in ``payload`` (the driver then fails the batch)."""
    out = empty_rows(1)
    out["kind"] = [kind]
    out["cb"] = [bucket]
    out["entities"] = [entities]
    out["src_offset"] = [written]
    out["amount"] = [seconds]
    if error:
        out["reason"] = [STORE_ERROR]
        out["payload"] = [error]
    return pd.DataFrame(out, columns=list(ROW_COLUMNS))


def _dead_letter_of_row(row: Any, error: str, topic: str) -> str:
    """The DeadLetter JSON of a validated transaction row (its raw bytes stayed in the terminal stage)."""
    return dead_letter_for(
        row.payload.encode("utf-8") if isinstance(row.payload, str) else None,
        error,
        topic,
        int(row.src_partition),
        int(row.src_offset),
        failed_at=datetime.now(UTC),
    ).model_dump_json()


def _sorted(pdf: pd.DataFrame) -> pd.DataFrame:
    # (time, kind) like offline.replay; Kafka position breaks the remaining ties deterministically
    return pdf.sort_values(["t_us", "kind", "src_partition", "src_offset"], kind="stable")


def _bucket_key(key: tuple[Any, ...]) -> int:
    return int(key[0])


def terminal_stage(
    key: tuple[Any, ...],
    pdfs: Iterator[pd.DataFrame],
    log: EntityLog,
    *,
    buckets: int,
    topic_transactions: str,
    max_record_bytes: int,
    bounds: EventBounds | None = None,
    store: StoreWriter | None = None,
) -> Iterator[pd.DataFrame]:
    """Raw Kafka rows of one terminal bucket -> dead letters, transactions with terminal features, state."""
    bucket = _bucket_key(key)
    marks = [("start", time.perf_counter())]
    raw = pd.concat(list(pdfs), ignore_index=True)
    marks.append(("input", time.perf_counter()))
    pdf = parse_frame(
        raw,
        topic_transactions=topic_transactions,
        max_record_bytes=max_record_bytes,
        buckets=buckets,
        bounds=bounds,
    )
    kinds = pdf["kind"].to_numpy()
    events = (kinds == TRANSACTION) | (kinds == LABEL)
    # the bucket came from the raw JSON (JVM side); an event whose parsed terminal_id hashes elsewhere
    # (a duplicated key, say) would split that terminal's state: it is a dead letter instead
    misrouted = events & (pdf["tb"].to_numpy() != bucket)
    for i in misrouted.nonzero()[0].tolist():
        dead = dead_letter_row(
            raw.iloc[i],
            "invalid_value",
            "terminal_id: the record's terminal_id is ambiguous (duplicated or differently encoded key)",
        )
        for column, value in dead.items():
            pdf.at[i, column] = value
    kinds = pdf["kind"].to_numpy()
    passthrough = pdf.loc[kinds == DEAD_LETTER, list(ROW_COLUMNS)]
    if len(passthrough):
        yield passthrough
    work = _sorted(pdf[(kinds == TRANSACTION) | (kinds == LABEL)])
    marks.append(("parse", time.perf_counter()))
    if not len(work):
        return
    entities, meta = log.open(bucket)
    marks.append(("open", time.perf_counter()))
    kind = work["kind"].to_numpy()
    fraud_label = (kind == LABEL) & work["is_fraud"].eq(True).to_numpy()
    # genuine labels change no state (and create none, like replay): they are not part of the block
    in_block = np.flatnonzero((kind == TRANSACTION) | fraud_label)
    term_codes, term_ids = pd.factorize(work["terminal_id"].astype(str))
    block_kind = np.where(kind == TRANSACTION, BLOCK_TRANSACTION, BLOCK_LABEL).astype(np.int8)
    t_s = work["t_us"].to_numpy(dtype=np.int64) / 1e6
    hashes = np.where(fraud_label, label_hashes(work["transaction_id"].astype(str).to_numpy()), 0).astype(
        np.uint64
    )
    event_s = pd.to_numeric(work["label_event_us"]).fillna(0).to_numpy(dtype=np.int64) / 1e6
    ids = term_ids.tolist()

    def steps(skip: frozenset[int]) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
        block = in_block[~np.isin(in_block, list(skip))] if skip else in_block
        table = _records(entities, ids, TERMINAL_DTYPE)
        rows = term_codes[block]
        feats = terminal_features(table, rows, block_kind[block], t_s[block], hashes[block], event_s[block])
        tx_positions = block[block_kind[block] == BLOCK_TRANSACTION]
        _check_finite(feats, tx_positions, "terminal features")
        touched = np.unique(rows)
        return (
            dict(zip([ids[i] for i in touched.tolist()], record_bytes(table, touched), strict=True)),
            feats,
            tx_positions,
        )

    (encoded, feats, tx_positions), failed = _isolate(steps)
    if failed:  # dead letters that keep the raw Kafka bytes
        positions = sorted(failed)
        letters = work.iloc[positions][list(ROW_COLUMNS)].copy()
        letters["kind"] = DEAD_LETTER
        letters["reason"] = "feature_error"
        letters["payload"] = [
            dead_letter_row(raw.loc[work.index[pos]], "feature_error", failed[pos])["payload"]
            for pos in positions
        ]
        yield letters
    marks.append(("features", time.perf_counter()))
    store_seconds, store_error = _write_states(store, TERMINAL_STATE, encoded)
    marks.append(("store", time.perf_counter()))
    if store_error:  # commit nothing, emit nothing more: the driver counts the failure and fails the batch
        yield _state_row(TERMINAL_STATE, bucket, len(entities), 0, store_seconds, store_error)
        return
    if encoded:
        log.commit(bucket, entities, meta, encoded)
    marks.append(("commit", time.perf_counter()))
    if len(tx_positions):
        yield work.iloc[tx_positions][list(ROW_COLUMNS)].assign(tfeat=pack_features(feats))
    marks.append(("emit", time.perf_counter()))
    if encoded:
        yield _state_row(TERMINAL_STATE, bucket, len(entities), len(encoded), store_seconds)
    marks.append(("emit_state", time.perf_counter()))
    _profile("terminal", bucket, len(raw), marks)


def card_stage(
    key: tuple[Any, ...],
    pdfs: Iterator[pd.DataFrame],
    log: EntityLog,
    *,
    buckets: int,
    topic_transactions: str = "transactions",
    store: StoreWriter | None = None,
) -> Iterator[pd.DataFrame]:
    """Transactions of one card bucket -> transaction and card features (in FEATURE_NAMES order), state."""
    bucket = _bucket_key(key)
    marks = [("start", time.perf_counter())]
    pdf = pd.concat(list(pdfs), ignore_index=True)
    marks.append(("input", time.perf_counter()))
    is_tx = (pdf["kind"] == TRANSACTION).to_numpy()
    passthrough = pdf[~is_tx]
    if len(passthrough):
        yield passthrough
    work = _sorted(pdf[is_tx])
    marks.append(("passthrough", time.perf_counter()))
    if not len(work):
        return
    entities, meta = log.open(bucket)
    marks.append(("open", time.perf_counter()))
    card_codes, card_ids = pd.factorize(work["card_id"].astype(str))
    ids = card_ids.tolist()
    t_s = work["t_us"].to_numpy(dtype=np.int64) / 1e6
    amount = work["amount"].to_numpy(dtype=np.float64)
    tkeys = terminal_keys(work["terminal_id"].astype(str).to_numpy())
    countries = country_codes(work["country"].to_numpy())
    channels = channel_codes(work["channel"].to_numpy())
    everything = np.arange(len(work))

    def steps(skip: frozenset[int]) -> tuple[dict[str, bytes], np.ndarray]:
        block = everything[~np.isin(everything, list(skip))] if skip else everything
        table = _records(entities, ids, CARD_DTYPE)
        rows = card_codes[block]
        feats = card_features(
            table, rows, t_s[block], amount[block], tkeys[block], countries[block], channels[block]
        )
        _check_finite(feats, block, "card features")
        touched = np.unique(rows)
        return dict(zip([ids[i] for i in touched.tolist()], record_bytes(table, touched), strict=True)), feats

    (encoded, rows), failed = _isolate(steps)
    if failed:
        dead = work.iloc[sorted(failed)].copy()
        dead["kind"] = DEAD_LETTER
        dead["reason"] = "feature_error"
        dead["payload"] = [
            _dead_letter_of_row(row, failed[pos], topic_transactions)
            for pos, row in zip(sorted(failed), dead.itertuples(index=False), strict=True)
        ]
        yield dead[list(ROW_COLUMNS)]
        keep = np.ones(len(work), dtype=bool)
        keep[list(failed)] = False
        work = work[keep]
    marks.append(("features", time.perf_counter()))
    store_seconds, store_error = _write_states(store, CARD_STATE, encoded)
    marks.append(("store", time.perf_counter()))
    if store_error:  # commit nothing, emit nothing more: the driver counts the failure and fails the batch
        yield _state_row(CARD_STATE, bucket, len(entities), 0, store_seconds, store_error)
        return
    log.commit(bucket, entities, meta, encoded)
    marks.append(("commit", time.perf_counter()))
    if len(work):
        yield work.assign(cfeat=pack_features(rows))
    marks.append(("emit", time.perf_counter()))
    yield _state_row(CARD_STATE, bucket, len(entities), len(encoded), store_seconds)
    marks.append(("emit_state", time.perf_counter()))
    _profile("card", bucket, len(pdf), marks)


def seed_bucket(log: EntityLog, key: tuple[Any, ...], initial: pd.DataFrame) -> int:
    """Warm start: put a bucket's initial entity states (``entity_id``, ``state`` columns) into its log.

    ``handleInitialState`` calls it, which Spark does only in the first batch of a fresh checkpoint
    (docs/stream.md, "Warm start"); it may call it more than once per bucket (the initial rows of a key can
    come in several frames), so each call adds to what the bucket holds. An entity the bucket already holds
    is kept. Returns the number of entities added.
    """
    bucket = _bucket_key(key)
    entities, meta = log.open(bucket)
    added = {
        str(entity): bytes(state)
        for entity, state in zip(initial["entity_id"].tolist(), initial["state"].tolist(), strict=True)
        if str(entity) not in entities
    }
    if added:
        log.commit(bucket, entities, meta, added)
    return len(added)


def _processor_base() -> type:
    from pyspark.sql.streaming import StatefulProcessor

    return StatefulProcessor


class TerminalProcessor(_processor_base()):  # type: ignore[misc]
    """Validation + terminal state (stage 1)."""

    def __init__(
        self,
        buckets: int,
        topic_transactions: str,
        max_record_bytes: int,
        bounds: EventBounds | None = None,
        store: StoreWriter | None = None,
    ) -> None:
        self.buckets = buckets
        self.store = store
        self.topic_transactions = topic_transactions
        self.max_record_bytes = max_record_bytes
        self.bounds = bounds
        self.log: EntityLog | None = None

    def init(self, handle: Any) -> None:
        self.log = EntityLog("terminal", handle)

    def handleInitialState(self, key: Any, initialState: pd.DataFrame, timerValues: Any) -> None:
        """The bootstrap snapshot's states of this bucket (first batch of a fresh checkpoint only)."""
        assert self.log is not None
        seed_bucket(self.log, key, initialState)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        assert self.log is not None
        yield from terminal_stage(
            key,
            rows,
            self.log,
            buckets=self.buckets,
            topic_transactions=self.topic_transactions,
            max_record_bytes=self.max_record_bytes,
            bounds=self.bounds,
            store=self.store,
        )

    def close(self) -> None:
        return None


class CardProcessor(_processor_base()):  # type: ignore[misc]
    """Card state (stage 2)."""

    def __init__(
        self, buckets: int, topic_transactions: str = "transactions", store: StoreWriter | None = None
    ) -> None:
        self.buckets = buckets
        self.store = store
        self.topic_transactions = topic_transactions
        self.log: EntityLog | None = None

    def init(self, handle: Any) -> None:
        self.log = EntityLog("card", handle)

    def handleInitialState(self, key: Any, initialState: pd.DataFrame, timerValues: Any) -> None:
        """The bootstrap snapshot's states of this bucket (first batch of a fresh checkpoint only)."""
        assert self.log is not None
        seed_bucket(self.log, key, initialState)

    def handleInputRows(
        self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any
    ) -> Iterator[pd.DataFrame]:
        assert self.log is not None
        yield from card_stage(
            key,
            rows,
            self.log,
            buckets=self.buckets,
            topic_transactions=self.topic_transactions,
            store=self.store,
        )

    def close(self) -> None:
        return None
