"""Training data: load a transaction history (our Parquet files, the simulator, or any other dataset through
a column mapping such as the Fraud Detection Handbook's preset) into the platform's columns.

A foreign history is described by a :class:`ColumnMapping`: which of its columns is each of our fields, and
when its fraud labels became known (a reported-at column, a fixed delay, or the simulator's delay model).
The mapping comes from a preset, a small JSON/TOML file (:func:`read_mapping`) or ``field=COLUMN`` flags.
A missing or ill-typed column is an error that names it: a silently mis-mapped column would produce a
plausible-looking but meaningless benchmark.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FIELDS",
    "HANDBOOK",
    "PRESETS",
    "REQUIRED_FIELDS",
    "ColumnMapping",
    "DataError",
    "History",
    "add_analyst_labels",
    "apply_mapping",
    "data_hash",
    "load_history",
    "read_analyst_labels",
    "read_mapping",
    "read_table",
]

#: our fields a history must provide
REQUIRED_FIELDS: tuple[str, ...] = ("event_time", "card_id", "terminal_id", "amount", "is_fraud")
#: optional fields: used when mapped (channel, country and merchant_category reach the event schema;
#: fraud_scenario only the per-scenario report; reported_at is when the label became known)
OPTIONAL_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "channel",
    "country",
    "merchant_category",
    "fraud_scenario",
    "reported_at",
)
FIELDS: tuple[str, ...] = (*REQUIRED_FIELDS, *OPTIONAL_FIELDS)
SIMULATOR_DELAY = "simulator"


class DataError(ValueError):
    """The history does not fit the mapping: names the field, the column and what is wrong."""


@dataclass(frozen=True)
class ColumnMapping:
    """Our field -> the data's column, and when labels became known.

    ``label_delay``: used only when ``reported_at`` is not mapped. A number of days (every label is known
    that long after its transaction, e.g. the Handbook protocol's 7-day delay period) or ``"simulator"``
    (frauds after the simulator's lognormal delay, median 3 days; see fraudwatch.simulator.LabelDelays).
    """

    columns: dict[str, str]
    label_delay: float | str = 7.0
    seed: int = 0  # of the simulator delay model
    scenario_names: dict[int, str] = field(default_factory=dict)  # fraud_scenario id -> name, if known

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(FIELDS))
        if unknown:
            raise DataError(f"unknown field(s) {unknown} in the column mapping; fields: {list(FIELDS)}")
        missing = [f for f in REQUIRED_FIELDS if f not in self.columns]
        if missing:
            raise DataError(f"the column mapping has no column for {missing}")
        if isinstance(self.label_delay, str) and self.label_delay != SIMULATOR_DELAY:
            try:
                object.__setattr__(self, "label_delay", float(self.label_delay))
            except ValueError:
                raise DataError(
                    f"label_delay must be a number of days or {SIMULATOR_DELAY!r}, got {self.label_delay!r}"
                ) from None

    def describe_delay(self) -> str:
        if "reported_at" in self.columns:
            return f"reported-at column {self.columns['reported_at']!r}"
        if self.label_delay == SIMULATOR_DELAY:
            return f"simulator delay model (lognormal, median 3 d, seed {self.seed})"
        return f"fixed {float(self.label_delay):g}-day delay"


# The Handbook's raw columns. TX_DATETIME has no zone: it is taken as UTC. The Handbook has no reported-at:
# its protocol assumes every label is known 7 days (the delay period) after the transaction.
HANDBOOK = ColumnMapping(
    {
        "transaction_id": "TRANSACTION_ID",
        "event_time": "TX_DATETIME",
        "card_id": "CUSTOMER_ID",
        "terminal_id": "TERMINAL_ID",
        "amount": "TX_AMOUNT",
        "is_fraud": "TX_FRAUD",
        "fraud_scenario": "TX_FRAUD_SCENARIO",
    },
    label_delay=7.0,
    scenario_names={1: "amount_over_220", 2: "compromised_terminal", 3: "compromised_card"},
)
PRESETS: dict[str, ColumnMapping] = {"handbook": HANDBOOK}


def read_mapping(path: Path) -> ColumnMapping:
    """A mapping file (JSON or TOML): ``{"columns": {field: column, ...}, "label_delay": 7 | "simulator"}``."""
    text = path.read_text(encoding="utf-8")
    try:
        raw: dict[str, Any] = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"cannot parse the mapping file {path}: {exc}") from exc
    if not isinstance(raw.get("columns"), dict):
        raise DataError(f"the mapping file {path} needs a 'columns' table of field -> column")
    extra = sorted(set(raw) - {"columns", "label_delay", "seed"})
    if extra:
        raise DataError(f"unknown key(s) {extra} in the mapping file {path}")
    return ColumnMapping(
        {str(k): str(v) for k, v in raw["columns"].items()},
        raw.get("label_delay", 7.0),
        int(raw.get("seed", 0)),
    )


@dataclass(frozen=True)
class History:
    """Transactions in event-time order with their ground truth (is_fraud, fraud_scenario) and the labels
    as the platform would receive them (reported_at)."""

    transactions: pd.DataFrame
    labels: pd.DataFrame
    source: dict[str, Any] = field(default_factory=dict)  # what was read and how (for the results)

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.transactions["event_time"].min())

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.transactions["event_time"].max())


def _utc(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def _column_error(fld: str, col: str, what: str) -> DataError:
    return DataError(f"column {col!r} (mapped to {fld}) {what}")


def _timestamps(values: pd.Series, fld: str, col: str, allow_null: bool = False) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        raise _column_error(fld, col, f"must hold timestamps, not numbers ({values.dtype})")
    try:
        ts = _utc(values)
    except (ValueError, TypeError) as exc:
        raise _column_error(fld, col, f"must hold timestamps: {exc}") from None
    if not allow_null and ts.isna().any():
        raise _column_error(fld, col, f"has {int(ts.isna().sum())} empty value(s)")
    return ts


def _fraud_flags(values: pd.Series, col: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    if pd.api.types.is_numeric_dtype(values):
        if values.isna().any() or not values.isin([0, 1]).all():
            raise _column_error("is_fraud", col, "must hold 0/1 or true/false")
        return values.astype(bool)
    text = values.astype(str).str.strip().str.lower()
    known = {"1": True, "0": False, "true": True, "false": False}
    if not text.isin(list(known)).all():
        bad = values[~text.isin(list(known))].iloc[0]
        raise _column_error("is_fraud", col, f"must hold 0/1 or true/false, found {bad!r}")
    return text.map(known).astype(bool)


def _label_delay_days(mapping: ColumnMapping, is_fraud: np.ndarray) -> np.ndarray:
    if mapping.label_delay == SIMULATOR_DELAY:
        from fraudwatch.simulator import LabelDelays, _label_delays  # the simulator's own delay model

        return np.asarray(_label_delays(np.random.default_rng(mapping.seed), is_fraud, LabelDelays()))
    return np.full(len(is_fraud), float(mapping.label_delay))


def apply_mapping(raw: pd.DataFrame, mapping: ColumnMapping) -> History:
    """A foreign history -> History in our columns, checking every mapped column's presence and type."""
    absent = {f: c for f, c in mapping.columns.items() if c not in raw.columns}
    if absent:
        named = ", ".join(f"{c!r} (for {f})" for f, c in absent.items())
        raise DataError(f"the data has no column {named}; it has {list(raw.columns)}")
    col = mapping.columns
    tx = pd.DataFrame(index=raw.index)
    tx["event_time"] = _timestamps(raw[col["event_time"]], "event_time", col["event_time"])
    for fld in ("card_id", "terminal_id"):
        values = raw[col[fld]]
        if values.isna().any():
            raise _column_error(fld, col[fld], f"has {int(values.isna().sum())} empty value(s)")
        tx[fld] = values.astype(str)
    amount = pd.to_numeric(raw[col["amount"]], errors="coerce")
    if amount.isna().any() or pd.api.types.is_bool_dtype(raw[col["amount"]]):
        bad = raw[col["amount"]][amount.isna()]
        raise _column_error("amount", col["amount"], f"must hold numbers, found {bad.iloc[0]!r}")
    if (amount < 0).any():
        raise _column_error("amount", col["amount"], "has negative amounts")
    tx["amount"] = amount.astype(float)
    tx["is_fraud"] = _fraud_flags(raw[col["is_fraud"]], col["is_fraud"])
    if "transaction_id" in col:
        tx["transaction_id"] = raw[col["transaction_id"]].astype(str)
        if tx["transaction_id"].duplicated().any():
            raise _column_error("transaction_id", col["transaction_id"], "has duplicate ids")
    else:
        tx["transaction_id"] = pd.Series(np.arange(len(raw)), index=raw.index).astype(str).radd("row-")
    for fld in ("channel", "country", "merchant_category"):
        if fld in col:
            values = raw[col[fld]]
            tx[fld] = [None if pd.isna(v) else str(v) for v in values]
    if "fraud_scenario" in col:
        scen = pd.to_numeric(raw[col["fraud_scenario"]], errors="coerce")
        if scen.isna().any():
            raise _column_error("fraud_scenario", col["fraud_scenario"], "must hold integers")
        tx["fraud_scenario"] = scen.astype(np.int64)
    else:
        tx["fraud_scenario"] = 0  # unknown: no per-scenario report (0 is "genuine or unknown")
    if "reported_at" in col:
        rep = _timestamps(raw[col["reported_at"]], "reported_at", col["reported_at"], allow_null=True)
        if rep[tx["is_fraud"]].isna().any():
            raise _column_error("reported_at", col["reported_at"], "is empty for some frauds")
        if (rep < tx["event_time"]).any():
            raise _column_error("reported_at", col["reported_at"], "is before event_time on some rows")
        tx["reported_at"] = rep.fillna(tx["event_time"] + pd.Timedelta(days=7))
    else:
        delay = _label_delay_days(mapping, tx["is_fraud"].to_numpy())
        tx["reported_at"] = tx["event_time"] + pd.to_timedelta(delay, unit="D")
        tx["reported_at"] = tx["reported_at"].dt.floor("us")
    tx = tx.sort_values("event_time", kind="stable").reset_index(drop=True)
    labels = tx[["transaction_id", "card_id", "terminal_id", "event_time", "is_fraud", "reported_at"]]
    source = {
        "columns": dict(col),
        "label_delay": mapping.describe_delay(),
        "scenario_names": mapping.scenario_names,
    }
    return History(tx, labels.copy(), source)


def read_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file (by suffix)."""
    if not path.exists():
        raise DataError(f"no data at {path}")
    if path.suffix.lower() in (".csv", ".gz") or path.name.lower().endswith(".csv.gz"):
        return pd.read_csv(path)
    return pd.read_parquet(path)


def detect_preset(raw: pd.DataFrame) -> str | None:
    """The preset whose every column the data has (the Handbook's raw file is recognised by its columns)."""
    for name, mapping in PRESETS.items():
        if set(mapping.columns.values()) <= set(raw.columns):
            return name
    return None


def load_history(
    data: Path | None = None,
    preset: str | None = None,
    local_dir: Path = Path(".local"),
    days: int = 60,
    seed: int = 0,
    mapping: ColumnMapping | None = None,
    columns: dict[str, str] | None = None,
    label_delay: float | str | None = None,
) -> History:
    """``data`` (Parquet or CSV) through ``mapping`` / ``preset`` (plus ``columns`` overrides); else
    .local/data/{transactions,labels}.parquet; else a freshly simulated history of ``days`` days (written
    there for next time). Our own files (the simulator's columns) need no mapping."""
    if data is not None and data.is_dir():
        # a directory `make data` wrote: its transactions (labels.parquet and simulation.json sit beside it)
        data = data / "transactions.parquet"
    if data is not None:
        raw = read_table(data)
        if mapping is None and preset is not None:
            if preset not in PRESETS:
                raise DataError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
            mapping = PRESETS[preset]
        if mapping is None and columns:
            base = {f: f for f in FIELDS if f in raw.columns}
            mapping = ColumnMapping({**base, **columns}, label_delay if label_delay is not None else 7.0)
        elif mapping is not None and (columns or label_delay is not None):
            mapping = replace(
                mapping,
                columns={**mapping.columns, **(columns or {})},
                label_delay=label_delay if label_delay is not None else mapping.label_delay,
            )
        if mapping is not None:
            history = apply_mapping(raw, mapping)
            return replace(history, source={"data": data.name, **history.source})
        labels_path = data.with_name("labels.parquet")
        labels = pd.read_parquet(labels_path) if labels_path.exists() else None
        return _ours(raw, labels, {"data": data.name})
    tx_path, lab_path = local_dir / "data" / "transactions.parquet", local_dir / "data" / "labels.parquet"
    if tx_path.exists() and lab_path.exists():
        return _ours(pd.read_parquet(tx_path), pd.read_parquet(lab_path), {"data": "transactions.parquet"})
    from fraudwatch.simulator import simulate

    history = simulate(days=days, seed=seed)
    history.write(local_dir / "data")
    return _ours(history.transactions, history.labels, {"data": f"simulated {days} days, seed {seed}"})


def _ours(transactions: pd.DataFrame, labels: pd.DataFrame | None, source: dict[str, Any]) -> History:
    """Our own columns (the simulator's). Ground truth comes from is_fraud on the transactions or labels."""
    tx = transactions.copy()
    tx["event_time"] = _utc(tx["event_time"])
    if "is_fraud" not in tx.columns:
        if labels is None:
            raise DataError("transactions carry no is_fraud and no labels file was found")
        truth = labels.set_index("transaction_id")["is_fraud"]
        tx["is_fraud"] = tx["transaction_id"].map(truth).fillna(False).astype(bool)
    if "fraud_scenario" not in tx.columns:
        tx["fraud_scenario"] = tx["is_fraud"].astype(np.int8)
    if labels is None:
        labels = tx[["transaction_id", "card_id", "terminal_id", "event_time", "is_fraud", "reported_at"]]
    labels = labels.copy()
    labels["event_time"] = _utc(labels["event_time"])
    labels["reported_at"] = _utc(labels["reported_at"])
    if "reported_at" not in tx.columns:
        tx["reported_at"] = tx["transaction_id"].map(labels.set_index("transaction_id")["reported_at"])
    tx["reported_at"] = _utc(tx["reported_at"])
    tx = tx.sort_values("event_time", kind="stable").reset_index(drop=True)
    return History(tx, labels, {**source, "label_delay": "reported_at of the labels"})


def data_hash(transactions: pd.DataFrame) -> str:
    """A content hash of the history (ids, times, entities, amounts, truth): what the model was trained on."""
    cols = [c for c in ("transaction_id", "event_time", "card_id", "terminal_id", "amount", "is_fraud")]
    hashed = pd.util.hash_pandas_object(transactions[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def read_analyst_labels(review_db: Path) -> pd.DataFrame:
    """The review queue's decisions (services/review SQLite): transaction_id, is_fraud, reported_at, source.

    These are the labels the queue also published on ``labels`` with the analyst as source; the queue's
    table is read because it holds every decision in one place (a topic's retention may have dropped some).
    An alert still open is no label. A missing file means no analyst has decided anything yet.
    """
    import sqlite3

    columns = ["transaction_id", "is_fraud", "reported_at", "source"]
    if not review_db.exists():
        return pd.DataFrame(columns=columns)
    with sqlite3.connect(f"file:{review_db}?mode=ro", uri=True) as con:
        rows = pd.read_sql(
            "SELECT transaction_id, status = 'fraud' AS is_fraud, decided_at, decided_by FROM alerts "
            "WHERE status IN ('fraud', 'genuine') AND decided_at IS NOT NULL",
            con,
        )
    return pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].astype(str),
            "is_fraud": rows["is_fraud"].astype(bool),
            # stored as float seconds: rounded to the microsecond the queue's clock had
            "reported_at": pd.to_datetime(
                np.round(rows["decided_at"].to_numpy(dtype=np.float64) * 1e6).astype(np.int64),
                unit="us",
                utc=True,
            ),
            "source": "analyst:" + rows["decided_by"].fillna("").astype(str),
        },
        columns=columns,
    )


def add_analyst_labels(history: History, analyst: pd.DataFrame) -> History:
    """The history with the analysts' decisions as labels: one label per transaction_id, the analyst's wins.

    Rule: an analyst who looked at the transaction overrides the label the history had (the simulator's,
    a chargeback feed's), both ``is_fraud`` and ``reported_at`` (the decision time: when the platform
    learnt it, which is what point-in-time terminal risk uses). Several decisions for one transaction (the
    queue refuses them, but two queues could) keep the latest. Decisions about transactions the history
    does not hold (live traffic after it) cannot be trained on: they are counted in ``source`` as
    ``analyst_labels_unmatched``, not invented rows.
    """
    if analyst.empty:
        return replace(history, source={**history.source, "analyst_labels": 0, "analyst_labels_unmatched": 0})
    latest = analyst.sort_values("reported_at", kind="stable").drop_duplicates("transaction_id", keep="last")
    latest = latest.set_index("transaction_id")
    tx = history.transactions.copy()
    matched = tx["transaction_id"].isin(latest.index)
    ids = tx.loc[matched, "transaction_id"]
    tx.loc[matched, "is_fraud"] = ids.map(latest["is_fraud"]).astype(bool).to_numpy()
    tx.loc[matched, "reported_at"] = ids.map(latest["reported_at"]).astype(tx["reported_at"].dtype)
    if "fraud_scenario" in tx.columns:
        # a fraud an analyst cleared has no scenario any more; one they confirmed keeps its own (or 1)
        scen = tx.loc[matched, "fraud_scenario"]
        confirmed = tx.loc[matched, "is_fraud"].to_numpy(dtype=bool)
        tx.loc[matched, "fraud_scenario"] = np.where(confirmed, np.maximum(scen.to_numpy(), 1), 0).astype(
            scen.dtype
        )
    cols = ["transaction_id", "card_id", "terminal_id", "event_time", "is_fraud", "reported_at"]
    from_analysts = tx.loc[matched, cols]
    others = history.labels[~history.labels["transaction_id"].isin(from_analysts["transaction_id"])]
    labels = pd.concat([others, from_analysts], ignore_index=True)
    unmatched = int(len(latest) - matched.sum())
    source = {**history.source, "analyst_labels": int(matched.sum()), "analyst_labels_unmatched": unmatched}
    return History(tx, labels, source)
