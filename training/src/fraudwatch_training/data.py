"""Training data: load a transaction history (our Parquet files, the simulator, or a foreign dataset through
a column mapping such as the Fraud Detection Handbook's) into the platform's columns."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["HANDBOOK_COLUMNS", "PRESETS", "History", "data_hash", "from_mapping", "load_history"]

# The Handbook's raw columns -> ours. TX_DATETIME has no zone: it is taken as UTC.
HANDBOOK_COLUMNS: dict[str, str] = {
    "TRANSACTION_ID": "transaction_id",
    "TX_DATETIME": "event_time",
    "CUSTOMER_ID": "card_id",
    "TERMINAL_ID": "terminal_id",
    "TX_AMOUNT": "amount",
    "TX_FRAUD": "is_fraud",
    "TX_FRAUD_SCENARIO": "fraud_scenario",
}
PRESETS: dict[str, dict[str, str]] = {"handbook": HANDBOOK_COLUMNS}
HANDBOOK_LABEL_DELAY_DAYS = 7.0  # the Handbook's feedback delay: a fraud is known 7 days after it happens


@dataclass(frozen=True)
class History:
    """Transactions in event-time order with their ground truth (is_fraud, fraud_scenario) and the labels
    as the platform would receive them (reported_at)."""

    transactions: pd.DataFrame
    labels: pd.DataFrame

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.transactions["event_time"].min())

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.transactions["event_time"].max())


def _utc(values: pd.Series) -> pd.Series:
    ts = pd.to_datetime(values)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def from_mapping(
    raw: pd.DataFrame, mapping: dict[str, str], label_delay_days: float = HANDBOOK_LABEL_DELAY_DAYS
) -> History:
    """A foreign dataset -> History. Labels are reported ``label_delay_days`` after the transaction."""
    missing = [c for c in mapping if c not in raw.columns and mapping[c] != "fraud_scenario"]
    if missing:
        raise ValueError(f"the data has no columns {missing} (have {list(raw.columns)})")
    tx = raw.rename(columns=mapping)[[v for k, v in mapping.items() if k in raw.columns]].copy()
    tx["transaction_id"] = tx["transaction_id"].astype(str)
    tx["card_id"] = tx["card_id"].astype(str)
    tx["terminal_id"] = tx["terminal_id"].astype(str)
    tx["amount"] = tx["amount"].astype(float)
    tx["event_time"] = _utc(tx["event_time"])
    tx["is_fraud"] = tx["is_fraud"].astype(bool)
    if "fraud_scenario" not in tx.columns:
        tx["fraud_scenario"] = tx["is_fraud"].astype(np.int8)
    tx["reported_at"] = tx["event_time"] + pd.Timedelta(days=label_delay_days)
    tx = tx.sort_values("event_time", kind="stable").reset_index(drop=True)
    labels = tx[["transaction_id", "card_id", "terminal_id", "event_time", "is_fraud", "reported_at"]]
    return History(tx, labels.copy())


def load_history(
    data: Path | None = None,
    preset: str | None = None,
    local_dir: Path = Path(".local"),
    days: int = 60,
    seed: int = 0,
    mapping: dict[str, str] | None = None,
) -> History:
    """``data`` (Parquet or CSV) through ``preset`` / ``mapping``; else .local/data/{transactions,labels}.parquet;
    else a freshly simulated history of ``days`` days (written there for next time)."""
    if data is not None:
        raw = pd.read_csv(data) if data.suffix == ".csv" else pd.read_parquet(data)
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; known: {sorted(PRESETS)}")
            mapping = {**PRESETS[preset], **(mapping or {})}
        if mapping:
            return from_mapping(raw, mapping)
        labels_path = data.with_name("labels.parquet")
        labels = pd.read_parquet(labels_path) if labels_path.exists() else None
        return _ours(raw, labels)
    tx_path, lab_path = local_dir / "data" / "transactions.parquet", local_dir / "data" / "labels.parquet"
    if tx_path.exists() and lab_path.exists():
        return _ours(pd.read_parquet(tx_path), pd.read_parquet(lab_path))
    from fraudwatch.simulator import simulate

    history = simulate(days=days, seed=seed)
    history.write(local_dir / "data")
    return _ours(history.transactions, history.labels)


def _ours(transactions: pd.DataFrame, labels: pd.DataFrame | None) -> History:
    """Our own columns (the simulator's). Ground truth comes from is_fraud on the transactions or labels."""
    tx = transactions.copy()
    tx["event_time"] = _utc(tx["event_time"])
    if "is_fraud" not in tx.columns:
        if labels is None:
            raise ValueError("transactions carry no is_fraud and no labels file was found")
        truth = labels.set_index("transaction_id")["is_fraud"]
        tx["is_fraud"] = tx["transaction_id"].map(truth).fillna(False).astype(bool)
    if "fraud_scenario" not in tx.columns:
        tx["fraud_scenario"] = tx["is_fraud"].astype(np.int8)
    if labels is None:
        labels = tx[["transaction_id", "card_id", "terminal_id", "event_time", "is_fraud", "reported_at"]]
    labels = labels.copy()
    labels["event_time"] = _utc(labels["event_time"])
    labels["reported_at"] = _utc(labels["reported_at"])
    tx = tx.sort_values("event_time", kind="stable").reset_index(drop=True)
    return History(tx, labels)


def data_hash(transactions: pd.DataFrame) -> str:
    """A content hash of the history (ids, times, entities, amounts, truth): what the model was trained on."""
    cols = [c for c in ("transaction_id", "event_time", "card_id", "terminal_id", "amount", "is_fraud")]
    hashed = pd.util.hash_pandas_object(transactions[cols], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]
