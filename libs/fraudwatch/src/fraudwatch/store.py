"""The online store: per-card and per-terminal feature state, written by the stream, read by the API.

One interface, two real backends: a SQLite file (the embedded default; WAL mode so the API reads while the
stream writes) and Redis (production). Values are the entity state records of
:mod:`fraudwatch.features.layout` (one fixed-size structured-array row: 2,740 bytes a card, 992 a terminal)
plus the time they were written, so a reader can tell how old the state is. A record of another layout
version or size raises :class:`~fraudwatch.errors.FeatureStateError` on read. Connection failures raise
:class:`~fraudwatch.errors.StoreUnavailable`; the API turns that into a 503.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fraudwatch.config import Settings
from fraudwatch.errors import StoreError, StoreUnavailable
from fraudwatch.features.layout import CARD_DTYPE, TERMINAL_DTYPE, check_record

__all__ = [
    "EntityStates",
    "OnlineStore",
    "RedisStore",
    "SQLiteStore",
    "open_store",
]

# Called after every store operation: (backend, op, seconds, failed).
Observer = Callable[[str, str, float, bool], None]
_STAMP = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class EntityStates:
    """The state records (bytes) of one transaction's card and terminal (None when never seen: cold start)."""

    card: bytes | None
    terminal: bytes | None
    card_updated_at: float | None
    terminal_updated_at: float | None


class OnlineStore(Protocol):
    backend: str

    def get(self, card_id: str, terminal_id: str) -> EntityStates: ...

    def get_many(self, pairs: list[tuple[str, str]]) -> list[EntityStates]: ...

    def put(
        self,
        cards: Mapping[str, bytes],
        terminals: Mapping[str, bytes],
        updated_at: float | None = None,
    ) -> None: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def _noop(backend: str, op: str, seconds: float, failed: bool) -> None:
    return None


def _decode(
    card_raw: bytes | None, term_raw: bytes | None, card_at: float | None, term_at: float | None
) -> EntityStates:
    return EntityStates(
        check_record(bytes(card_raw), CARD_DTYPE) if card_raw else None,
        check_record(bytes(term_raw), TERMINAL_DTYPE) if term_raw else None,
        card_at,
        term_at,
    )


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS card_state "
        "(card_id TEXT PRIMARY KEY, state BLOB NOT NULL, updated_at REAL NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS terminal_state "
        "(terminal_id TEXT PRIMARY KEY, state BLOB NOT NULL, updated_at REAL NOT NULL)"
    )


class SQLiteStore:
    """SQLite file store (WAL). Safe to share across threads: one connection per thread.

    A read-only store whose file does not exist yet answers as an empty store (every entity new), so the
    API is ready and scores before the stream has ever run; it opens the file once the stream created it.
    """

    backend = "sqlite"

    def __init__(self, path: Path, observer: Observer | None = None, readonly: bool = False) -> None:
        self.path = Path(path)
        self._observer = observer or _noop
        self._readonly = readonly
        self._local = threading.local()
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _create_tables(self._conn())
            except sqlite3.Error as exc:  # a locked file fails here as it would on any write
                raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._readonly and not self.path.exists():
                # the writer (the stream job) has not created the store yet: an empty store is a valid
                # store (every card and terminal is new), so a reader answers from an empty schema and
                # looks for the file again on its next call instead of failing until the stream has run
                return self._empty()
            try:
                conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @property
    def exists(self) -> bool:
        """Whether the store file exists (a reader of a missing file answers as an empty store)."""
        return self.path.exists()

    def _empty(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "empty", None)
        if conn is None:
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            _create_tables(conn)
            self._local.empty = conn
        return conn

    def _run(self, op: str, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        start = time.perf_counter()
        try:
            result = fn(self._conn())
        except sqlite3.OperationalError as exc:
            self._observer(self.backend, op, time.perf_counter() - start, True)
            raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            self._observer(self.backend, op, time.perf_counter() - start, True)
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc
        self._observer(self.backend, op, time.perf_counter() - start, False)
        return result

    def get(self, card_id: str, terminal_id: str) -> EntityStates:
        def q(conn: sqlite3.Connection) -> EntityStates:
            c = conn.execute(
                "SELECT state, updated_at FROM card_state WHERE card_id=?", (card_id,)
            ).fetchone()
            t = conn.execute(
                "SELECT state, updated_at FROM terminal_state WHERE terminal_id=?", (terminal_id,)
            ).fetchone()
            return _decode(c[0] if c else None, t[0] if t else None, c[1] if c else None, t[1] if t else None)

        result: EntityStates = self._run("get", q)
        return result

    def get_many(self, pairs: list[tuple[str, str]]) -> list[EntityStates]:
        def q(conn: sqlite3.Connection) -> list[EntityStates]:
            cards: dict[str, tuple[bytes, float]] = {}
            terms: dict[str, tuple[bytes, float]] = {}
            card_ids = sorted({c for c, _ in pairs})
            term_ids = sorted({t for _, t in pairs})
            for chunk in range(0, len(card_ids), 500):
                ids = card_ids[chunk : chunk + 500]
                marks = ",".join("?" * len(ids))
                for cid, st, at in conn.execute(
                    f"SELECT card_id, state, updated_at FROM card_state WHERE card_id IN ({marks})", ids
                ):
                    cards[cid] = (st, at)
            for chunk in range(0, len(term_ids), 500):
                ids = term_ids[chunk : chunk + 500]
                marks = ",".join("?" * len(ids))
                for tid, st, at in conn.execute(
                    f"SELECT terminal_id, state, updated_at FROM terminal_state WHERE terminal_id IN ({marks})",
                    ids,
                ):
                    terms[tid] = (st, at)
            out = []
            for c, t in pairs:
                cs, ts = cards.get(c), terms.get(t)
                out.append(
                    _decode(
                        cs[0] if cs else None,
                        ts[0] if ts else None,
                        cs[1] if cs else None,
                        ts[1] if ts else None,
                    )
                )
            return out

        result: list[EntityStates] = self._run("get_many", q)
        return result

    def put(
        self,
        cards: Mapping[str, bytes],
        terminals: Mapping[str, bytes],
        updated_at: float | None = None,
    ) -> None:
        at = time.time() if updated_at is None else updated_at

        def w(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO card_state (card_id, state, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(card_id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
                    [(k, v, at) for k, v in cards.items()],
                )
                conn.executemany(
                    "INSERT INTO terminal_state (terminal_id, state, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(terminal_id) DO UPDATE SET state=excluded.state, updated_at=excluded.updated_at",
                    [(k, v, at) for k, v in terminals.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        self._run("put", w)

    def ping(self) -> bool:
        try:
            self._run("ping", lambda conn: conn.execute("SELECT 1").fetchone())
        except StoreError:
            return False
        return True

    def close(self) -> None:
        for name in ("conn", "empty"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)


class RedisStore:
    """Redis store: ``fw:c:<card_id>`` and ``fw:t:<terminal_id>`` hold 8 bytes of updated_at + state."""

    backend = "redis"

    def __init__(
        self,
        url: str,
        observer: Observer | None = None,
        prefix: str = "fw",
        socket_timeout: float = 0.5,
    ) -> None:
        import redis

        self._redis_errors: tuple[type[BaseException], ...] = (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
        )
        self._client = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout, health_check_interval=0
        )
        self._observer = observer or _noop
        self._prefix = prefix
        self.url = url

    def _ck(self, card_id: str) -> str:
        return f"{self._prefix}:c:{card_id}"

    def _tk(self, terminal_id: str) -> str:
        return f"{self._prefix}:t:{terminal_id}"

    def _run(self, op: str, fn: Callable[[], Any]) -> Any:
        import redis

        start = time.perf_counter()
        try:
            result = fn()
        except self._redis_errors as exc:
            self._observer(self.backend, op, time.perf_counter() - start, True)
            raise StoreUnavailable(f"Redis store: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            self._observer(self.backend, op, time.perf_counter() - start, True)
            raise StoreError(f"Redis store: {exc}") from exc
        self._observer(self.backend, op, time.perf_counter() - start, False)
        return result

    @staticmethod
    def _split(raw: bytes | None) -> tuple[bytes | None, float | None]:
        if not raw:
            return None, None
        return raw[_STAMP.size :], _STAMP.unpack_from(raw)[0]

    def get(self, card_id: str, terminal_id: str) -> EntityStates:
        raw = self._run("get", lambda: self._client.mget(self._ck(card_id), self._tk(terminal_id)))
        (c, c_at), (t, t_at) = self._split(raw[0]), self._split(raw[1])
        return _decode(c, t, c_at, t_at)

    def get_many(self, pairs: list[tuple[str, str]]) -> list[EntityStates]:
        if not pairs:
            return []
        keys = [k for c, t in pairs for k in (self._ck(c), self._tk(t))]
        raw = self._run("get_many", lambda: self._client.mget(keys))
        out = []
        for i in range(len(pairs)):
            (c, c_at), (t, t_at) = self._split(raw[2 * i]), self._split(raw[2 * i + 1])
            out.append(_decode(c, t, c_at, t_at))
        return out

    def put(
        self,
        cards: Mapping[str, bytes],
        terminals: Mapping[str, bytes],
        updated_at: float | None = None,
    ) -> None:
        stamp = _STAMP.pack(time.time() if updated_at is None else updated_at)
        mapping: dict[str | bytes, bytes | float | int | str] = {
            self._ck(k): stamp + v for k, v in cards.items()
        }
        mapping.update({self._tk(k): stamp + v for k, v in terminals.items()})
        if mapping:
            self._run("put", lambda: self._client.mset(mapping))

    def ping(self) -> bool:
        try:
            return bool(self._run("ping", self._client.ping))
        except StoreError:
            return False

    def close(self) -> None:
        self._client.close()


def open_store(settings: Settings, observer: Observer | None = None, readonly: bool = False) -> OnlineStore:
    """The online store the settings name (FRAUDWATCH_STORE_BACKEND)."""
    if settings.store_backend == "redis":
        return RedisStore(settings.redis_url, observer=observer)
    return SQLiteStore(settings.resolved_sqlite_path, observer=observer, readonly=readonly)
