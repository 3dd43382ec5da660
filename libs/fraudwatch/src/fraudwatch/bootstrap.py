"""Warm start: the entity states at the end of the training history, for the stream and the online store.

Without it the live pipeline starts cold: every card and terminal is new, although the model was trained on
their history (issue #12 measured 40 % of the demo's live rows with ``card_is_new``). The bootstrap snapshot
is what the offline replay (:func:`fraudwatch.features.replay`, the training-set builder) ends with, taken
point-in-time at the history's end: every transaction up to it, and only the labels *reported* by then
(a label reported later arrives later live; applying it early would leak it into the features).

One Parquet file (``kind`` card|terminal, ``entity_id``, ``state``: the :mod:`fraudwatch.features.layout`
record bytes) with the as-of time and counts in its schema metadata. Two consumers load it:

* the online store (:func:`load_store`, ``python -m fraudwatch.bootstrap load-store``), so the API sees warm
  cards and terminals; entities the store already holds are left alone (they are the stream's, newer);
* the stream job's Spark state, as ``transformWithStateInPandas``'s initial state
  (``FRAUDWATCH_STREAM_WARM_START``), which Spark applies in the first batch of a fresh checkpoint only
  (docs/stream.md, "Warm start").

``python -m fraudwatch.bootstrap write --data DIR`` writes it from a history `make data` wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fraudwatch.features import CARD_DTYPE, TERMINAL_DTYPE, check_record, replay
from fraudwatch.store import OnlineStore

__all__ = [
    "SCHEMA",
    "Snapshot",
    "build_snapshot",
    "history_end",
    "load_store",
    "read_snapshot",
    "snapshot_path",
    "write_snapshot",
]

_META_KEY = b"fraudwatch.bootstrap"
SCHEMA = pa.schema([("kind", pa.string()), ("entity_id", pa.string()), ("state", pa.binary())])
#: store writes per call when loading (bounded memory and transaction size for millions of entities)
_STORE_CHUNK = 5_000


@dataclass(frozen=True)
class Snapshot:
    """Card and terminal state records (stored form) as of ``as_of``: what a replay of the history ends with."""

    as_of: datetime
    cards: dict[str, bytes]
    terminals: dict[str, bytes]


def snapshot_path(local_dir: Path) -> Path:
    """Where `make bootstrap` and the demo keep the snapshot (under the git-ignored local directory)."""
    return local_dir / "bootstrap" / "states.parquet"


def history_end(data: Path, transactions: pd.DataFrame) -> datetime:
    """The instant the history ends: simulation.json's ``end`` (where live traffic continues) when present,
    else the latest event_time."""
    spec = data / "simulation.json" if data.is_dir() else data.with_name("simulation.json")
    try:
        end = json.loads(spec.read_text())["end"]
        return datetime.fromisoformat(str(end).replace("Z", "+00:00")).astimezone(UTC)
    except (OSError, ValueError, KeyError):
        latest = pd.Timestamp(pd.to_datetime(transactions["event_time"], utc=True).max())
        return latest.to_pydatetime()


def build_snapshot(
    transactions: pd.DataFrame, labels: pd.DataFrame | None, as_of: datetime | None = None
) -> Snapshot:
    """Replay the history point-in-time up to ``as_of`` (default: its latest event) and keep the end states.

    Transactions after ``as_of`` and labels reported after it are left out: the snapshot holds exactly what
    the stream would hold had it processed the history live up to that instant.
    """
    times = pd.to_datetime(transactions["event_time"], utc=True)
    cut = pd.Timestamp(as_of) if as_of is not None else times.max()
    tx = transactions[(times <= cut).to_numpy()]
    known = None
    if labels is not None and len(labels):
        known = labels[(pd.to_datetime(labels["reported_at"], utc=True) <= cut).to_numpy()]
    result = replay(tx.reset_index(drop=True), known)
    return Snapshot(cut.to_pydatetime(), result.card_states, result.terminal_states)


def write_snapshot(snapshot: Snapshot, path: Path) -> None:
    """Write atomically (a reader never sees half a file: the stream may be starting while this runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n_cards, n_terms = len(snapshot.cards), len(snapshot.terminals)
    table = pa.table(
        {
            "kind": ["card"] * n_cards + ["terminal"] * n_terms,
            "entity_id": list(snapshot.cards) + list(snapshot.terminals),
            "state": list(snapshot.cards.values()) + list(snapshot.terminals.values()),
        },
        schema=SCHEMA,
    )
    meta = {"as_of": snapshot.as_of.isoformat(), "cards": n_cards, "terminals": n_terms}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_snapshot(path: Path) -> Snapshot:
    """Read a snapshot; every record is checked (size, layout version) so a stale file fails here, loudly."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    if "as_of" not in meta:
        raise ValueError(f"{path} is not a fraudwatch bootstrap snapshot (no {_META_KEY.decode()} metadata)")
    cards: dict[str, bytes] = {}
    terminals: dict[str, bytes] = {}
    for kind, entity, state in zip(
        table["kind"].to_pylist(), table["entity_id"].to_pylist(), table["state"].to_pylist(), strict=True
    ):
        if kind == "card":
            cards[entity] = check_record(state, CARD_DTYPE)
        elif kind == "terminal":
            terminals[entity] = check_record(state, TERMINAL_DTYPE)
        else:
            raise ValueError(f"{path}: unknown entity kind {kind!r}")
    return Snapshot(datetime.fromisoformat(meta["as_of"]), cards, terminals)


def load_store(snapshot: Snapshot, store: OnlineStore) -> tuple[int, int]:
    """Put the snapshot's states into the online store where it holds none yet; (cards, terminals) written.

    An entity already in the store was written by the stream after the snapshot (or by an earlier load), so
    it is kept: loading twice, or after the stream has run, never moves the store back in time.
    """
    written = [0, 0]
    cards, terminals = list(snapshot.cards), list(snapshot.terminals)
    for lo in range(0, max(len(cards), len(terminals)), _STORE_CHUNK):
        c_ids, t_ids = cards[lo : lo + _STORE_CHUNK], terminals[lo : lo + _STORE_CHUNK]
        # pairs only to read both kinds in one call; the padding ids are never stored entities
        pad = "\x00bootstrap-none"
        pairs = [
            (c_ids[i] if i < len(c_ids) else pad, t_ids[i] if i < len(t_ids) else pad)
            for i in range(max(len(c_ids), len(t_ids)))
        ]
        present = store.get_many(pairs)
        new_cards = {
            c: snapshot.cards[c]
            for (c, _), st in zip(pairs, present, strict=True)
            if c != pad and st.card is None
        }
        new_terms = {
            t: snapshot.terminals[t]
            for (_, t), st in zip(pairs, present, strict=True)
            if t != pad and st.terminal is None
        }
        if new_cards or new_terms:
            store.put(new_cards, new_terms)
        written[0] += len(new_cards)
        written[1] += len(new_terms)
    return written[0], written[1]


def _read_history(data: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    tx_path = data / "transactions.parquet" if data.is_dir() else data
    labels_path = tx_path.with_name("labels.parquet")
    if not tx_path.exists():
        raise SystemExit(f"no history at {tx_path}: run `make data` first")
    return pd.read_parquet(tx_path), pd.read_parquet(labels_path) if labels_path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """``write`` a snapshot from a history, or ``load-store`` one into the online store."""
    from fraudwatch.config import get_settings
    from fraudwatch.store import open_store

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m fraudwatch.bootstrap", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="replay a history and write the states it ends with")
    write.add_argument(
        "--data", type=Path, default=settings.local_dir / "data", help="what `make data` wrote"
    )
    write.add_argument("--out", type=Path, default=snapshot_path(settings.local_dir))
    load = sub.add_parser(
        "load-store", help="put a snapshot's states into the online store (absent ones only)"
    )
    load.add_argument("--snapshot", type=Path, default=snapshot_path(settings.local_dir))
    args = parser.parse_args(argv)

    if args.command == "write":
        transactions, labels = _read_history(args.data)
        snap = build_snapshot(transactions, labels, history_end(args.data, transactions))
        write_snapshot(snap, args.out)
        print(
            f"bootstrap snapshot as of {snap.as_of.isoformat()}: {len(snap.cards):,} cards, "
            f"{len(snap.terminals):,} terminals -> {args.out}"
        )
        return 0
    snap = read_snapshot(args.snapshot)
    store = open_store(settings)
    try:
        n_cards, n_terms = load_store(snap, store)
    finally:
        store.close()
    print(
        f"online store ({settings.store_backend}): {n_cards:,} cards and {n_terms:,} terminals loaded from the "
        f"snapshot as of {snap.as_of.isoformat()} ({len(snap.cards) - n_cards:,} / "
        f"{len(snap.terminals) - n_terms:,} already there, kept)"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover - CLI
    sys.exit(main())
