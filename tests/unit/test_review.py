"""Review queue (services/review) without a broker: routes, auth, validation, 409, escaping, metrics.

The label publisher is replaced by :class:`RecordingPublisher` here (a unit test runs no Kafka); the real
publisher and consumer are tested against the real broker in tests/integration/test_review.py and in a real
browser in tests/e2e/test_review_browser.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from fraudwatch.config import Settings
from fraudwatch.events import Label, parse_label
from fraudwatch_review.app import create_app
from fraudwatch_review.auth import COOKIE, session_analyst, session_cookie
from fraudwatch_review.kafka import LabelPublisher, PublishFailed

TOKEN = "unit-test-token-0123456789"
SCRIPT_ID = '<script>alert("x")</script>&"\''


class RecordingPublisher(LabelPublisher):
    """Keeps the labels instead of sending them; ``fail`` makes the next publish fail like a broker outage."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.sent: list[Label] = []
        self.fail = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def publish(self, label: Label) -> None:
        if self.fail:
            raise PublishFailed("broker down (test)")
        self.sent.append(label)


def alert(tx: str, minutes_ago: float = 1.0, decision: str = "review", **over: Any) -> bytes:
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "transaction_id": tx,
        "event_time": (now - timedelta(minutes=minutes_ago + 0.1)).isoformat(),
        "card_id": "card-1",
        "terminal_id": "term-9",
        "amount": 912.5,
        "currency": "EUR",
        "country": "BE",
        "channel": "ecom",
        "score": 0.91 if decision == "decline" else 0.42,
        "decision": decision,
        "model_name": "fraud-detector",
        "model_version": "3",
        "reasons": ["amount 912.50 is 14x the card's 30-day average"],
        "scored_at": (now - timedelta(minutes=minutes_ago)).isoformat(),
    }
    record.update(over)
    return orjson.dumps(record)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(environment="test", local_dir=tmp_path, api_token=TOKEN, kafka_bootstrap="localhost:1")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    publisher = RecordingPublisher(settings)
    with TestClient(create_app(settings, publisher=publisher, consume=False)) as c:
        c.app.state.publisher = publisher  # type: ignore[attr-defined]
        yield c


def ingest(client: TestClient, *records: bytes) -> list[str]:
    return [client.app.state.ctx.consumer.ingest(r) for r in records]  # type: ignore[attr-defined]


def login(client: TestClient, analyst: str = "ana") -> None:
    r = client.post("/login", data={"analyst": analyst, "token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/queue"


def sent(client: TestClient) -> list[Label]:
    return client.app.state.publisher.sent  # type: ignore[attr-defined,no-any-return]


def metric(client: TestClient, name: str, **labels: str) -> float | None:
    text = client.get("/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def queued(page: str) -> list[str]:
    """The transaction ids of the open-alert rows of a rendered page, in order."""
    return re.findall(r'<tr class="alert" data-tx="([^"]*)"', page)


# ------------------------------------------------------------------------------------------------ auth
def test_page_and_api_need_the_token_or_a_session(client: TestClient) -> None:
    r = client.get("/queue", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert client.get("/api/alerts").status_code == 401
    assert client.get("/api/alerts", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/alerts", headers=AUTH).status_code == 200
    r = client.post("/api/decisions", json={"transaction_id": "t", "outcome": "fraud", "analyst": "x"})
    assert r.status_code == 401
    r = client.post("/queue/decide", data={"transaction_id": "t", "outcome": "fraud"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")


def test_login_checks_the_token_and_sets_a_signed_httponly_cookie(
    client: TestClient, settings: Settings
) -> None:
    r = client.post("/login", data={"analyst": "ana", "token": "nope"})
    assert r.status_code == 401
    assert COOKIE not in client.cookies
    r = client.post("/login", data={"analyst": "ana", "token": TOKEN}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert TOKEN not in cookie  # the cookie carries a MAC of the token, never the token
    assert session_analyst(settings, client.cookies[COOKIE]) == "ana"
    assert client.get("/queue").status_code == 200


def test_a_forged_or_foreign_cookie_is_refused(client: TestClient, settings: Settings) -> None:
    other = Settings(environment="test", local_dir=settings.local_dir, api_token="another-token-0123456789")
    for value in ("ana", "ana.deadbeef", session_cookie(other, "ana"), "<b>.x"):
        client.cookies.set(COOKIE, value)
        assert client.get("/queue", follow_redirects=False).status_code == 303, value
        assert client.get("/api/alerts").status_code == 401, value


def test_login_validates_the_analyst_name(client: TestClient) -> None:
    r = client.post("/login", data={"analyst": "<img src=x>", "token": TOKEN})
    assert r.status_code == 422
    assert "analyst" in r.text and "<img" not in r.text


# ------------------------------------------------------------------------------------------------ queue
def test_queue_lists_open_alerts_newest_first_with_what_the_analyst_needs(client: TestClient) -> None:
    assert (
        ingest(client, alert("tx-old", 90), alert("tx-new", 2, "decline"), alert("tx-mid", 30))
        == ["queued"] * 3
    )
    login(client)
    page = client.get("/queue").text
    assert page.index("tx-new") < page.index("tx-mid") < page.index("tx-old")
    for text in ("912.50 EUR", "card-1", "term-9", "0.910", "decline", "14x the card", "v3", "2 min"):
        assert text in page, text
    body = client.get("/api/alerts", headers=AUTH).json()
    assert [a["transaction_id"] for a in body["alerts"]] == ["tx-new", "tx-mid", "tx-old"]
    assert body["open"] == 3


def test_filters_by_decision_and_time(client: TestClient) -> None:
    ingest(client, alert("tx-r-old", 600), alert("tx-d", 5, "decline"), alert("tx-r", 10))
    login(client)
    assert queued(client.get("/queue", params={"decision": "decline"}).text) == ["tx-d"]
    assert queued(client.get("/queue", params={"hours": 1}).text) == ["tx-d", "tx-r"]
    assert queued(client.get("/queue", params={"decision": "review", "hours": 24}).text) == [
        "tx-r",
        "tx-r-old",
    ]
    since = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    got = client.get("/api/alerts", headers=AUTH, params={"decision": "review", "since": since}).json()
    assert [a["transaction_id"] for a in got["alerts"]] == ["tx-r"]


def test_the_state_age_shown_is_the_records_own_when_it_carries_one(client: TestClient) -> None:
    ingest(client, alert("tx-aged", 1, state_age_seconds=3 * 86400))
    login(client)
    row = client.get("/queue").text.split('data-tx="tx-aged"')[1].split("</tr>")[0]
    assert "3 d" in row and "since scored" not in row


def test_redelivered_alerts_are_queued_once_and_invalid_ones_skipped(client: TestClient) -> None:
    assert ingest(client, alert("tx-1"), alert("tx-1"), b"{not json", alert("tx-2", score=7)) == [
        "queued",
        "duplicate",
        "invalid",
        "invalid",
    ]
    assert client.get("/api/alerts", headers=AUTH).json()["open"] == 1
    assert metric(client, "fraudwatch_review_alerts_consumed_total", result="duplicate") == 1
    assert metric(client, "fraudwatch_review_alerts_consumed_total", result="invalid") == 2


# ------------------------------------------------------------------------------------------------ decide
def test_a_decision_publishes_a_label_and_the_alert_leaves_the_queue(client: TestClient) -> None:
    ingest(client, alert("tx-1", 3), alert("tx-2", 1))
    login(client, "ana")
    before = datetime.now(UTC)
    r = client.post(
        "/queue/decide",
        data={
            "transaction_id": "tx-1",
            "outcome": "fraud",
            "note": "card holder confirmed",
            "back": "/queue?hours=1",
        },
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, "/queue?hours=1")
    [label] = sent(client)
    assert (label.transaction_id, label.card_id, label.terminal_id, label.is_fraud) == (
        "tx-1",
        "card-1",
        "term-9",
        True,
    )
    assert label.source == "analyst:ana"
    assert label.reported_at >= before
    # what goes on the wire is a Label every consumer (stream, training) accepts
    assert parse_label(label.model_dump_json(exclude_none=True)) == label
    page = client.get("/queue").text
    queued = page.split('id="decided"')[0]
    assert "tx-1" not in queued and "tx-2" in queued
    decided = page.split('id="decided"')[1]
    assert (
        "tx-1" in decided and "ana" in decided and "card holder confirmed" in decided and "fraud" in decided
    )


def test_a_decided_alert_cannot_be_decided_twice(client: TestClient) -> None:
    ingest(client, alert("tx-1"))
    body = {"transaction_id": "tx-1", "outcome": "genuine", "analyst": "bob"}
    r = client.post("/api/decisions", json=body, headers=AUTH)
    assert r.status_code == 200
    assert (r.json()["status"], r.json()["decided_by"]) == ("genuine", "bob")
    r = client.post("/api/decisions", json={**body, "outcome": "fraud", "analyst": "eve"}, headers=AUTH)
    assert r.status_code == 409
    assert "bob" in r.json()["detail"]
    login(client, "eve")
    r = client.post("/queue/decide", data={"transaction_id": "tx-1", "outcome": "fraud"})
    assert r.status_code == 409 and "already decided" in r.text
    assert [lb.is_fraud for lb in sent(client)] == [False]  # one label only


def test_a_failed_publish_leaves_the_alert_open(client: TestClient) -> None:
    ingest(client, alert("tx-1"))
    client.app.state.publisher.fail = True  # type: ignore[attr-defined]
    r = client.post(
        "/api/decisions", json={"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a"}, headers=AUTH
    )
    assert r.status_code == 503
    assert [a["transaction_id"] for a in client.get("/api/alerts", headers=AUTH).json()["alerts"]] == ["tx-1"]
    assert metric(client, "fraudwatch_review_label_publish_failures_total") == 1
    client.app.state.publisher.fail = False  # type: ignore[attr-defined]
    r = client.post(
        "/api/decisions", json={"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a"}, headers=AUTH
    )
    assert r.status_code == 200


def test_unknown_alert_is_404(client: TestClient) -> None:
    r = client.post(
        "/api/decisions", json={"transaction_id": "nope", "outcome": "fraud", "analyst": "a"}, headers=AUTH
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"transaction_id": "tx-1", "outcome": "maybe", "analyst": "a"}, "outcome"),
        ({"transaction_id": "tx-1", "analyst": "a"}, "outcome"),
        ({"transaction_id": "", "outcome": "fraud", "analyst": "a"}, "transaction_id"),
        ({"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a", "note": "x\x00y"}, "note"),
        ({"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a", "note": "n" * 1001}, "note"),
        ({"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a b"}, "analyst"),
        ({"transaction_id": "tx-1", "outcome": "fraud"}, "analyst"),
        ({"transaction_id": "tx-1", "outcome": "fraud", "analyst": "a", "is_fraud": True}, "is_fraud"),
    ],
)
def test_invalid_decisions_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    ingest(client, alert("tx-1"))
    r = client.post("/api/decisions", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert field in {e["field"] for e in r.json()["detail"]}
    assert sent(client) == []


def test_invalid_form_and_filters_are_422(client: TestClient) -> None:
    ingest(client, alert("tx-1"))
    login(client)
    r = client.post("/queue/decide", data={"transaction_id": "tx-1", "outcome": "<b>x</b>"})
    assert r.status_code == 422 and "outcome" in r.text and "<b>x</b>" not in r.text
    for params in ({"decision": "approve"}, {"hours": -1}, {"hours": "soon"}):
        r = client.get("/queue", params=params)
        assert r.status_code == 422, params
    r = client.get("/api/alerts", headers=AUTH, params={"since": "2026-01-01T00:00:00"})  # no time zone
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "since"
    assert sent(client) == []


def test_the_form_only_redirects_back_to_the_queue(client: TestClient) -> None:
    ingest(client, alert("tx-1"))
    login(client)
    r = client.post(
        "/queue/decide",
        data={"transaction_id": "tx-1", "outcome": "genuine", "back": "https://evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/queue"


# ------------------------------------------------------------------------------------------------ escaping
def test_user_controlled_strings_render_as_text(client: TestClient) -> None:
    ingest(
        client,
        alert(
            SCRIPT_ID,
            card_id="<img src=x onerror=alert(1)>",
            terminal_id='"><svg onload=alert(2)>',
            reasons=["<iframe src=javascript:alert(3)>"],
            model_version="<b>9</b>",
        ),
    )
    login(client)
    page = client.get("/queue").text
    for raw in ("<script>", "<img src=x", "<svg", "<iframe", "<b>9</b>"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#34;&#39;" in page
    # and the escaped id is decided by its exact value
    r = client.post(
        "/queue/decide", data={"transaction_id": SCRIPT_ID, "outcome": "fraud"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert sent(client)[0].transaction_id == SCRIPT_ID


# ------------------------------------------------------------------------------------------------ metrics
def test_queue_metrics(client: TestClient) -> None:
    ingest(client, alert("tx-1", 30), alert("tx-2", 20), alert("tx-3", 10, model_version="4"))
    assert metric(client, "fraudwatch_review_open_alerts") == 3
    for tx, outcome in (("tx-1", "fraud"), ("tx-2", "genuine"), ("tx-3", "fraud")):
        body = {"transaction_id": tx, "outcome": outcome, "analyst": "a"}
        assert client.post("/api/decisions", json=body, headers=AUTH).status_code == 200
    assert metric(client, "fraudwatch_review_open_alerts") == 0
    assert metric(client, "fraudwatch_review_decisions_total", outcome="fraud", model_version="3") == 1
    assert metric(client, "fraudwatch_review_decisions_total", outcome="genuine", model_version="3") == 1
    assert metric(client, "fraudwatch_review_confirmed_precision", model_version="3") == 0.5
    assert metric(client, "fraudwatch_review_confirmed_precision", model_version="4") == 1.0
    assert metric(client, "fraudwatch_review_decision_delay_seconds_count", outcome="fraud") == 2
    # tx-1 waited 30 minutes: in the 1800 s bucket's complement, under the 3600 s one
    assert (
        metric(client, "fraudwatch_review_decision_delay_seconds_bucket", outcome="genuine", le="900.0") == 0
    )
    assert (
        metric(client, "fraudwatch_review_decision_delay_seconds_bucket", outcome="genuine", le="1800.0") == 1
    )


def test_label_for_never_reports_before_the_transaction() -> None:
    from fraudwatch_review.kafka import label_for

    ahead = datetime.now(UTC) + timedelta(days=2)  # a simulated clock running ahead of the wall clock
    label = label_for("t", "c", "m", ahead, True, "ana")
    assert label.reported_at == ahead
    assert label.source == "analyst:ana"


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503  # the alert consumer is not running in this app
