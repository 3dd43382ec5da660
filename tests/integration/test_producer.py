"""The producer against a real broker, checked by an independent consumer (confluent-kafka)."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from fraudwatch.config import Settings
from fraudwatch.events import parse_label, parse_transaction
from fraudwatch.simulator import LiveSimulator, simulate
from fraudwatch_producer import LiveSource, ProducerOptions, ReplaySource, run
from fraudwatch_producer.sources import HANDBOOK_PRESET, load_history

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def consume(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[Any]:
    """Every message on ``topic`` once ``expected`` arrived (then one more second for any extra)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    extra_until = None
    try:
        while time.monotonic() < deadline:
            if len(out) >= expected and extra_until is None:
                extra_until = time.monotonic() + 1.0
            if extra_until is not None and time.monotonic() > extra_until:
                break
            for msg in consumer.consume(num_messages=10_000, timeout=0.2):
                assert msg.error() is None, msg.error()
                out.append(msg)
    finally:
        consumer.close()
    return out


def _check_transactions(msgs: list[Any]) -> dict[str, Any]:
    by_partition_card: dict[tuple[int, bytes], list[Any]] = defaultdict(list)
    txs = {}
    for msg in msgs:
        tx = parse_transaction(msg.value())
        assert msg.key() == tx.card_id.encode()
        assert not {"is_fraud", "fraud_scenario", "reported_at"} & set(tx.model_extra or {})
        by_partition_card[(msg.partition(), msg.key())].append(tx.event_time)
        txs[tx.transaction_id] = tx
    assert len(txs) == len(msgs), "duplicate transaction ids"
    for times in by_partition_card.values():
        assert times == sorted(times), "a card's transactions are out of event-time order in its partition"
    # A card lives on exactly one partition.
    cards = defaultdict(set)
    for partition, card in by_partition_card:
        cards[card].add(partition)
    assert all(len(p) == 1 for p in cards.values())
    return txs


def _live_opts(settings: Settings, **kwargs: Any) -> ProducerOptions:
    return ProducerOptions(
        bootstrap=settings.kafka_bootstrap,
        topic_transactions=settings.topic_transactions,
        topic_labels=settings.topic_labels,
        **kwargs,
    )


def test_live_transactions_and_labels(make_settings: Callable[..., Settings]) -> None:
    """A fixed rate: the simulated clock follows the events; a label goes out once the transactions sent
    before it have reached its reported_at (4,000 tx/s of 500 cards is ~3 simulated days a second)."""
    settings = make_settings(need=("kafka",))
    simulator = LiveSimulator(n_cards=500, n_terminals=200, seed=1)
    source = LiveSource(simulator)
    summary = asyncio.run(run(source, _live_opts(settings, rate=4_000, duration=3.0)))
    sent_tx = summary.sent[settings.topic_transactions]
    sent_labels = summary.sent[settings.topic_labels]
    assert sent_tx == summary.generated and 10_000 <= sent_tx <= 12_100
    assert sent_labels + summary.labels_pending == sent_tx
    assert sent_labels > 0.2 * sent_tx  # genuine labels (7 simulated days) have come due
    assert not summary.errors

    tx_msgs = consume(settings.kafka_bootstrap, settings.topic_transactions, sent_tx)
    txs = _check_transactions(tx_msgs)
    assert len(txs) == sent_tx
    assert min(t.event_time for t in txs.values()) >= simulator.start  # continues where history ends
    labels = consume(settings.kafka_bootstrap, settings.topic_labels, sent_labels)
    assert len(labels) == sent_labels
    # The simulated clock at each Kafka timestamp: the latest event_time produced up to then.
    produced = sorted(
        (m.timestamp()[1], txs[parse_transaction(m.value()).transaction_id].event_time) for m in tx_msgs
    )
    stamps = [ts for ts, _ in produced]
    reached = list(itertools.accumulate((et for _, et in produced), max))
    for msg in labels:
        label = parse_label(msg.value())
        assert msg.key() == label.transaction_id.encode()
        tx = txs[label.transaction_id]  # every label's transaction was produced
        assert (label.card_id, label.terminal_id, label.event_time) == (
            tx.card_id,
            tx.terminal_id,
            tx.event_time,
        )
        assert label.reported_at > tx.event_time
        clock = reached[bisect.bisect_right(stamps, msg.timestamp()[1]) - 1]
        assert label.reported_at <= clock, "a label was sent before the simulated clock reached reported_at"
    assert any(parse_label(m.value()).is_fraud for m in labels)


def test_live_simulated_clock_with_speedup(make_settings: Callable[..., Settings]) -> None:
    """Paced by the clock (2 simulated days per second): event_time is simulated time, the Kafka record
    timestamp stays the real produce time, and every record left no earlier than the clock reached it."""
    settings = make_settings(need=("kafka",))
    speedup = 2 * 86_400.0
    simulator = LiveSimulator(n_cards=500, n_terminals=200, seed=2)
    source = LiveSource(simulator, speedup=speedup)
    wall_before = time.time()
    summary = asyncio.run(run(source, _live_opts(settings, rate=0, speedup=speedup, duration=5.0)))
    wall_after = time.time()
    assert not summary.errors
    sent_tx, sent_labels = summary.sent[settings.topic_transactions], summary.sent[settings.topic_labels]
    # ~1,250 transactions a simulated day: about 10 days in 5 s (less the broker round trips).
    assert 7_000 <= sent_tx <= 14_000 and sent_labels > 0
    wall0 = source.clock.wall0
    assert wall0 is not None

    def clock_at(kafka_ms: int) -> datetime:
        # Kafka timestamps are whole milliseconds (rounded down): allow one millisecond of simulated time.
        return simulator.start + timedelta(seconds=(kafka_ms / 1000 + 0.001 - wall0) * speedup)

    tx_msgs = consume(settings.kafka_bootstrap, settings.topic_transactions, sent_tx)
    txs = _check_transactions(tx_msgs)
    assert len(txs) == sent_tx
    for msg in tx_msgs:
        kafka_ms = msg.timestamp()[1]
        assert wall_before - 1 <= kafka_ms / 1000 <= wall_after + 1  # the real produce time
        event_time = txs[parse_transaction(msg.value()).transaction_id].event_time
        assert simulator.start <= event_time <= clock_at(kafka_ms)
    span = max(t.event_time for t in txs.values()) - simulator.start
    assert timedelta(days=7) < span <= timedelta(days=10.5)
    labels = consume(settings.kafka_bootstrap, settings.topic_labels, sent_labels)
    assert len(labels) == sent_labels
    for msg in labels:
        label = parse_label(msg.value())
        assert label.reported_at <= clock_at(msg.timestamp()[1]), "label sent before its reported_at"
        assert txs[label.transaction_id].event_time < label.reported_at
    # What was still pending at the stop was not yet due on the simulated clock.
    assert summary.labels_pending == sent_tx - sent_labels
    assert summary.sim_clock_ns is not None


def test_replay_history_in_event_time_order(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(need=("kafka",))
    history = simulate(3, 200, 60, seed=2)
    tx_path, _ = history.write(tmp_path)
    frame = load_history(tx_path)
    source = ReplaySource(frame.sample(frac=1.0, random_state=0).sort_values("event_time"), speedup=0)
    opts = ProducerOptions(
        bootstrap=settings.kafka_bootstrap,
        topic_transactions=settings.topic_transactions,
        topic_labels=settings.topic_labels,
        replay=True,
    )
    summary = asyncio.run(run(source, opts))
    n = len(history.transactions)
    assert summary.sent == {settings.topic_transactions: n, settings.topic_labels: n}
    msgs = consume(settings.kafka_bootstrap, settings.topic_transactions, n)
    txs = _check_transactions(msgs)
    assert set(txs) == set(history.transactions["transaction_id"])
    for partition in {m.partition() for m in msgs}:
        times = [
            txs[parse_transaction(m.value()).transaction_id].event_time
            for m in msgs
            if m.partition() == partition
        ]
        assert times == sorted(times)
    labels = [parse_label(m.value()) for m in consume(settings.kafka_bootstrap, settings.topic_labels, n)]
    expected = history.labels.set_index("transaction_id")
    assert len(labels) == n
    for label in labels:
        row = expected.loc[label.transaction_id]
        assert label.is_fraud == bool(row["is_fraud"])
        assert label.reported_at == row["reported_at"].to_pydatetime()


def test_replay_handbook_columns(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(need=("kafka",))
    tx = simulate(2, 100, 40, seed=3).transactions
    handbook = tx.rename(columns={v: k for k, v in HANDBOOK_PRESET.items()})[list(HANDBOOK_PRESET)]
    handbook["TRANSACTION_ID"] = range(len(handbook))  # the Handbook's ids and customers are integers
    handbook["CUSTOMER_ID"] = handbook["CUSTOMER_ID"].str.removeprefix("card-").astype(int)
    handbook["TX_DATETIME"] = handbook["TX_DATETIME"].dt.tz_localize(None)
    path = tmp_path / "handbook.csv"
    handbook.to_csv(path, index=False)
    source = ReplaySource(load_history(path, HANDBOOK_PRESET), speedup=0)
    opts = ProducerOptions(
        bootstrap=settings.kafka_bootstrap,
        topic_transactions=settings.topic_transactions,
        topic_labels=settings.topic_labels,
        replay=True,
    )
    summary = asyncio.run(run(source, opts))
    assert summary.sent[settings.topic_transactions] == len(handbook)
    txs = _check_transactions(consume(settings.kafka_bootstrap, settings.topic_transactions, len(handbook)))
    assert {t.currency for t in txs.values()} == {"EUR"}
    assert set(txs) == {str(i) for i in range(len(handbook))}


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return str(resp.read().decode())


def _sent(text: str, topic: str) -> float:
    m = re.search(rf'fraudwatch_producer_sent_total\{{topic="{re.escape(topic)}"\}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def test_cli_sigterm_flushes_and_exits_zero(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings(need=("kafka",))
    env = {
        **os.environ,
        "FRAUDWATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FRAUDWATCH_TOPIC_TRANSACTIONS": settings.topic_transactions,
        "FRAUDWATCH_TOPIC_LABELS": settings.topic_labels,
        "FRAUDWATCH_PRODUCER_METRICS_PORT": str(settings.producer_metrics_port),
    }
    cmd = [
        sys.executable,
        "-m",
        "fraudwatch_producer",
        "--rate",
        "3000",
        "--cards",
        "300",
        "--terminals",
        "100",
        "--history",
        str(tmp_path / "no-history"),
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = _scrape(settings.producer_metrics_port)
            except OSError:
                text = ""
            if _sent(text, settings.topic_transactions) >= 3_000 and _sent(text, settings.topic_labels) > 0:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        for name in (
            "fraudwatch_producer_sent_total",
            "fraudwatch_producer_errors_total",
            "fraudwatch_producer_achieved_rate",
            "fraudwatch_producer_target_rate",
            "fraudwatch_producer_lag_seconds",
        ):
            assert name in text, name
        assert "fraudwatch_producer_target_rate 3000.0" in text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    m = re.search(r"stopped by signal: ([\d,]+) transactions \(.*\) and ([\d,]+) labels sent", out)
    assert m, out
    n_tx, n_labels = (int(g.replace(",", "")) for g in m.groups())
    assert n_tx >= 3_000
    assert (
        len(_check_transactions(consume(settings.kafka_bootstrap, settings.topic_transactions, n_tx))) == n_tx
    )
    assert len(consume(settings.kafka_bootstrap, settings.topic_labels, n_labels)) == n_labels
