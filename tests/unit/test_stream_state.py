"""The stream's state layout and stage logic without Spark: EntityLog against in-memory state variables
that behave like Spark's (a batch that is not committed leaves the state as it was), and the terminal
stage's validation and routing. The real operators run in tests/integration/test_stream.py."""

from __future__ import annotations

import copy
import socket
import sqlite3
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from fraudwatch.config import Settings
from fraudwatch.features import TERMINAL_DTYPE, states_from_bytes
from fraudwatch.store import SQLiteStore
from fraudwatch_stream import stateful
from fraudwatch_stream.records import (
    CARD_STATE,
    DEAD_LETTER,
    ROW_COLUMNS,
    STORE_ERROR,
    TERMINAL_STATE,
    TRANSACTION,
    bucket_of,
    pack_features,
    unpack_features,
)
from fraudwatch_stream.stateful import CacheStats, EntityLog, StoreWriter, card_stage, terminal_stage


class _Value:
    def __init__(self) -> None:
        self.value: tuple[Any, ...] | None = None

    def get(self) -> tuple[Any, ...] | None:
        return self.value

    def update(self, value: tuple[Any, ...]) -> None:
        self.value = tuple(value)


class _List:
    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def get(self) -> Iterator[tuple[Any, ...]]:
        return iter(list(self.items))

    def put(self, items: list[tuple[Any, ...]]) -> None:
        self.items = list(items)

    def appendList(self, items: list[tuple[Any, ...]]) -> None:
        self.items.extend(items)


class _Handle:
    """One bucket's state variables; snapshot/restore play a committed and a discarded batch."""

    def __init__(self) -> None:
        self.meta = _Value()
        self.log = _List()

    def getValueState(self, name: str, schema: str) -> _Value:
        assert name == "meta"
        return self.meta

    def getListState(self, name: str, schema: str) -> _List:
        assert name == "log"
        return self.log

    def snapshot(self) -> tuple[Any, Any]:
        return copy.deepcopy(self.meta.value), copy.deepcopy(self.log.items)

    def restore(self, snap: tuple[Any, Any]) -> None:
        self.meta.value, self.log.items = copy.deepcopy(snap[0]), copy.deepcopy(snap[1])


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    stateful._CACHE.clear()
    CacheStats.hits = CacheStats.misses = 0
    yield
    stateful._CACHE.clear()


def _batch(log: EntityLog, changes: dict[str, bytes], bucket: int = 0) -> dict[str, bytes]:
    entities, meta = log.open(bucket)
    log.commit(bucket, entities, meta, changes)
    return dict(entities)


def test_entities_survive_in_spark_state_and_the_worker_cache_is_used_only_when_current() -> None:
    handle = _Handle()
    log = EntityLog("card", handle)
    _batch(log, {"a": b"1", "b": b"2"})
    _batch(log, {"b": b"3", "c": b"4"})
    assert CacheStats.hits == 1  # the second batch reused the worker's copy
    # another worker (empty cache) rebuilds the bucket from the log: latest value per entity
    stateful._CACHE.clear()
    entities, meta = log.open(0)
    assert entities == {"a": b"1", "b": b"3", "c": b"4"}
    assert CacheStats.misses == 1 and meta[4] == 3


def test_a_batch_that_was_not_committed_never_leaks_through_the_cache() -> None:
    handle = _Handle()
    log = EntityLog("terminal", handle)
    _batch(log, {"a": b"1"})
    committed = handle.snapshot()
    _batch(log, {"a": b"2"})  # processed and cached by this worker, but the batch then failed in Spark
    handle.restore(committed)  # Spark discards the uncommitted state version
    entities, _ = log.open(0)
    assert entities == {"a": b"1"}, "the re-run must start from the committed state"
    assert CacheStats.misses == 1


def test_a_group_that_fails_midway_leaves_no_cached_copy_behind() -> None:
    handle = _Handle()
    log = EntityLog("card", handle)
    _batch(log, {"a": b"1"})
    entities, _ = log.open(0)
    entities["a"] = b"half-done"  # a failure after mutating, before commit
    assert stateful._CACHE == {}
    again, _ = log.open(0)
    assert again == {"a": b"1"}


def test_the_log_is_compacted_and_stays_bounded() -> None:
    handle = _Handle()
    log = EntityLog("card", handle)
    expected: dict[str, bytes] = {}
    rng = np.random.default_rng(0)
    for i in range(300):
        changes = {f"c{k}": f"{i}-{k}".encode() * 20 for k in rng.integers(0, 50, 5).tolist()}
        expected.update(changes)
        _batch(log, changes)
        assert len(handle.log.items) <= stateful.MAX_CHUNKS
    meta = handle.meta.value
    assert meta is not None
    assert meta[3] <= 2 * meta[2] + stateful.CHUNK_BYTES  # log bytes vs live bytes
    stateful._CACHE.clear()
    entities, _ = log.open(0)
    assert entities == expected


def test_chunks_are_compressed_and_round_trip_any_keys_and_values() -> None:
    states = {f"card-{i:05d}": bytes(2740 - 8) + i.to_bytes(8, "little") for i in range(500)}
    states.update({"": b"", "ünï\u2028\n": b"\x00\xff" * 3})
    chunk, raw_size = stateful._chunk(states)
    assert chunk.startswith(stateful.CHUNK_FORMAT) and chunk.isascii()
    assert len(chunk) * 10 < raw_size  # mostly empty fixed-size records compress far below their size
    assert stateful._unchunk(chunk) == states


def test_a_chunk_of_another_layout_fails_loudly() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        stateful._unchunk("gASVAAAA")  # base64 of a pickle: the layout before compression


def test_packed_features_are_exact() -> None:
    rows = [[0.1, 1e-300, -2.5, float("nan")], [1 / 3, 2.0**60, -0.0, 7.0]]
    back = unpack_features(pack_features(rows))
    np.testing.assert_array_equal(back, np.array(rows))
    assert unpack_features([]).shape[0] == 0


def _raw(values: list[bytes | None], topic: str = "tx") -> pd.DataFrame:
    return pd.DataFrame(
        {"value": values, "topic": topic, "partition": 0, "offset": range(len(values)), "tb": 0}
    )


def _tx(tx_id: str, terminal: str, minute: int) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": tx_id,
            "event_time": f"2026-11-28T10:{minute:02d}:00Z",
            "card_id": "card-1",
            "terminal_id": terminal,
            "amount": 12.5,
            "currency": "EUR",
            "channel": "pos",
            "country": "BE",
        }
    )


def test_terminal_stage_validates_computes_and_routes(tmp_path: Any) -> None:
    buckets = 4
    home = next(f"t{i}" for i in range(100) if bucket_of(f"t{i}", buckets) == 0)
    away = next(f"t{i}" for i in range(100) if bucket_of(f"t{i}", buckets) != 0)
    raw = _raw([_tx("x1", home, 1), b"{not json", _tx("x2", away, 2), _tx("x3", home, 3), None])
    out = pd.concat(
        list(
            terminal_stage(
                (0,),
                iter([raw]),
                EntityLog("terminal", _Handle()),
                buckets=buckets,
                topic_transactions="tx",
                max_record_bytes=16_384,
                store=StoreWriter(Settings(local_dir=tmp_path)),
            )
        ),
        ignore_index=True,
    )
    dead = out[out["kind"] == DEAD_LETTER]
    # not JSON, null, and the transaction whose terminal belongs to another bucket than the one it came in
    assert sorted(dead["src_offset"].tolist()) == [1, 2, 4]
    assert "terminal_id" in dead.loc[dead["src_offset"] == 2, "payload"].iloc[0]
    txs = out[out["kind"] == TRANSACTION]
    assert txs["transaction_id"].tolist() == ["x1", "x3"]
    feats = unpack_features(txs["tfeat"])
    assert feats.shape[0] == 2 and not np.array_equal(feats[0], feats[1])  # x3 sees x1 at its terminal
    # one report row (bucket size, states written); the state itself went to the online store, not downstream
    report = out[out["kind"] == TERMINAL_STATE]
    assert (
        len(report) == 1 and int(report["entities"].iloc[0]) == 1 and int(report["src_offset"].iloc[0]) == 1
    )
    assert list(report.columns) == list(ROW_COLUMNS) and report["reason"].isna().all()
    stored = SQLiteStore(Settings(local_dir=tmp_path).resolved_sqlite_path).get("card-1", home).terminal
    assert stored is not None and states_from_bytes([stored], TERMINAL_DTYPE)[0]["n_life"] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_store_that_fails_commits_nothing_and_the_driver_counts_it_and_fails_the_batch(
    tmp_path: Any,
) -> None:
    """Redis down (nothing listens on its port) under the terminal stage, a SQLite store locked by another
    writer under the card stage: each group reports its failed write instead of committing, and the
    driver counts every failed write in fraudwatch_store_errors_total and fails the batch before the table."""
    from fraudwatch_stream.job import StoreWriteFailed, StreamJob

    home = next(f"t{i}" for i in range(100) if bucket_of(f"t{i}", 4) == 0)
    raw = _raw([_tx("x1", home, 1), _tx("x2", home, 2)])
    terminal_handle = _Handle()
    redis_down = Settings(
        local_dir=tmp_path, store_backend="redis", redis_url=f"redis://127.0.0.1:{_free_port()}/0"
    )
    terminal_out = list(
        terminal_stage(
            (0,),
            iter([raw]),
            EntityLog("terminal", terminal_handle),
            buckets=4,
            topic_transactions="tx",
            max_record_bytes=16_384,
            store=StoreWriter(redis_down),
        )
    )
    assert len(terminal_out) == 1, "nothing but the failure report leaves a group whose store write failed"
    failed_terminal = terminal_out[0]
    assert failed_terminal["kind"].tolist() == [TERMINAL_STATE] and failed_terminal["reason"].tolist() == [
        STORE_ERROR
    ]
    assert "StoreUnavailable" in failed_terminal["payload"].iloc[0]
    assert terminal_handle.meta.value is None and terminal_handle.log.items == []  # no Spark state written
    assert stateful._CACHE == {}

    # the card stage on the transactions (as the terminal stage emits them when its store is fine)
    good = pd.concat(
        list(
            terminal_stage(
                (0,),
                iter([raw]),
                EntityLog("terminal", _Handle()),
                buckets=4,
                topic_transactions="tx",
                max_record_bytes=16_384,
            )
        ),
        ignore_index=True,
    )
    txs = good[good["kind"] == TRANSACTION]
    sqlite_settings = Settings(local_dir=tmp_path / "sqlite")
    SQLiteStore(sqlite_settings.resolved_sqlite_path).close()  # the file exists, as the job leaves it
    holder = sqlite3.connect(sqlite_settings.resolved_sqlite_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the file past the store's busy timeout
    card_handle = _Handle()
    try:
        card_out = pd.concat(
            list(
                card_stage(
                    (int(txs["cb"].iloc[0]),),
                    iter([txs]),
                    EntityLog("card", card_handle),
                    buckets=4,
                    store=StoreWriter(sqlite_settings),
                )
            ),
            ignore_index=True,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert card_out["kind"].tolist() == [CARD_STATE] and card_out["reason"].tolist() == [STORE_ERROR]
    assert "locked" in card_out["payload"].iloc[0]
    assert card_handle.meta.value is None

    job = StreamJob(None, Settings(local_dir=tmp_path / "job", store_backend="redis"))
    try:
        errors = {"backend": "redis", "op": "put"}
        before = job.metrics.registry.get_sample_value("fraudwatch_store_errors_total", errors)
        with pytest.raises(StoreWriteFailed, match="2 state group"):
            job._state_reports(pd.concat([failed_terminal, card_out], ignore_index=True), batch_id=7)
        after = job.metrics.registry.get_sample_value("fraudwatch_store_errors_total", errors)
        assert (before, after) == (0.0, 2.0)
        assert job.store_failed
        # a batch whose groups wrote their states is counted as writes, not errors, and goes on
        fine = good[good["kind"] == TERMINAL_STATE]
        assert job._state_reports(fine, batch_id=8) == 1
        assert job.metrics.registry.get_sample_value("fraudwatch_store_errors_total", errors) == 2.0
    finally:
        job.table.close()
        job.output.close()
