"""The SQLite online store (the embedded default). Redis is covered in tests/integration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fraudwatch.errors import FeatureStateError, StoreError, StoreUnavailable
from fraudwatch.features import (
    CARD_DTYPE,
    TERMINAL_DTYPE,
    card_features,
    country_codes,
    new_states,
    record_bytes,
    terminal_features,
    terminal_keys,
)
from fraudwatch.store import SQLiteStore


def _card(*amounts: float) -> bytes:
    states = new_states(CARD_DTYPE, 1)
    n = len(amounts)
    ts = 1_700_000_000.0 + 60.0 * np.arange(n)
    card_features(
        states,
        np.zeros(n),
        ts,
        np.array(amounts),
        terminal_keys(["t1"] * n),
        country_codes(["BE"] * n),
        np.ones(n),
    )
    return record_bytes(states)[0]


def _states() -> tuple[bytes, bytes]:
    term = new_states(TERMINAL_DTYPE, 1)
    terminal_features(term, np.zeros(1), np.zeros(1), np.array([1_700_000_000.0]), np.zeros(1), np.zeros(1))
    return _card(12.5), record_bytes(term)[0]


def test_put_get_round_trip_and_cold_start(tmp_path: Path) -> None:
    calls: list[tuple[str, str, bool]] = []
    store = SQLiteStore(
        tmp_path / "s.sqlite", observer=lambda b, op, s, failed: calls.append((b, op, failed))
    )
    card, term = _states()
    store.put({"c1": card}, {"t1": term}, updated_at=123.0)
    got = store.get("c1", "t1")
    assert got.card == card and got.terminal == term
    assert got.card_updated_at == 123.0 and got.terminal_updated_at == 123.0
    cold = store.get("unknown", "t1")
    assert cold.card is None and cold.terminal == term
    many = store.get_many([("c1", "nope"), ("nope", "t1")])
    assert many[0].card == card and many[0].terminal is None
    assert many[1].card is None and many[1].terminal == term
    assert ("sqlite", "put", False) in calls and ("sqlite", "get", False) in calls
    assert store.ping()


def test_reader_sees_writer_updates(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    writer = SQLiteStore(path)
    reader = SQLiteStore(path, readonly=True)
    card, _term = _states()
    writer.put({"c1": card}, {}, updated_at=1.0)
    assert reader.get("c1", "t1").card == card
    newer = _card(12.5, 99.0)
    writer.put({"c1": newer}, {}, updated_at=2.0)
    got = reader.get("c1", "t1")
    assert got.card == newer and got.card_updated_at == 2.0


def test_records_of_another_layout_are_refused_on_read(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    card, term = _states()
    store.put({"old": b'[1, [], [], [], 3, 30.0, -1.0, "", "", [], []]'}, {"t1": term}, updated_at=1.0)
    with pytest.raises(FeatureStateError, match="bytes"):
        store.get("old", "t1")
    store.put({"v9": b"\x09\x00" + card[2:]}, {}, updated_at=1.0)
    with pytest.raises(FeatureStateError, match="version"):
        store.get_many([("v9", "t1")])


def test_missing_file_is_an_empty_store_until_the_writer_creates_it(tmp_path: Path) -> None:
    # the API opens the store read-only before the stream ever ran: every card and terminal is new
    path = tmp_path / "missing.sqlite"
    reader = SQLiteStore(path, readonly=True)
    assert reader.ping() is True
    assert not reader.exists
    cold = reader.get("c1", "t1")
    assert cold.card is None and cold.terminal is None and cold.card_updated_at is None
    assert [s.card for s in reader.get_many([("c1", "t1"), ("c2", "t2")])] == [None, None]
    assert not path.exists(), "a reader must not create the store file"
    writer = SQLiteStore(path)
    card, term = _states()
    writer.put({"c1": card}, {"t1": term}, updated_at=5.0)
    got = reader.get("c1", "t1")  # the same reader picks the file up once it exists
    assert reader.exists and got.card == card and got.terminal == term and got.card_updated_at == 5.0
    reader.close()
    writer.close()


def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()  # exists, but SQLite cannot open a directory
    store = SQLiteStore(tmp_path / "dir.sqlite", readonly=True)
    with pytest.raises(StoreUnavailable):
        store.get("c1", "t1")
    assert store.ping() is False


def test_corrupt_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = SQLiteStore(path, readonly=True)
    with pytest.raises(StoreError):
        store.get("c1", "t1")
