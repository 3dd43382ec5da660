"""The review queue in a real browser: headless Chromium from Debian (``chromium`` + ``chromium-driver``,
driven by selenium through /usr/bin/chromedriver; nothing downloads a browser) against the real service
process (``python -m fraudwatch_review``) and the real broker.

An analyst logs in, sees the alerts, decides one; the test then finds the label on the real ``labels``
topic and the alert gone from the queue. A transaction id carrying ``<script>`` renders as text and runs
nothing. Set FRAUDWATCH_REVIEW_SCREENSHOT=docs/img/review-queue.png to refresh the README screenshot.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fraudwatch.config import Settings
from fraudwatch.events import parse_label
from tests.integration.test_review import TOKEN, labels_on, publish_alerts, scored_alert, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
XSS_ID = "tx-<script>window.__pwned=1</script>"
REASONS = [
    ["amount 1,240.00 is 11x the card's 30-day average", "first transaction at this terminal"],
    ["4 transactions in the last hour (usually 0.3)", "terminal had 3 confirmed frauds in the last 7 days"],
    ["card used abroad (NL) 40 minutes after a card-present purchase in BE"],
    ["night-time transaction (03:12), the card has never been used between midnight and 6"],
    ["amount 2,310.00 is the card's largest in 30 days"],
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(settings: Settings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDWATCH_")}
    env.update(
        FRAUDWATCH_ENVIRONMENT="test",
        FRAUDWATCH_LOCAL_DIR=str(settings.local_dir),
        FRAUDWATCH_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        FRAUDWATCH_TOPIC_ALERTS=settings.topic_alerts,
        FRAUDWATCH_TOPIC_LABELS=settings.topic_labels,
        FRAUDWATCH_API_TOKEN=TOKEN,
        FRAUDWATCH_REVIEW_PORT=str(port),
    )
    return env


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:  # noqa: S310 - our own local service
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture
def review(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings = make_settings(need=("kafka",), api_token=TOKEN)
    port = _free_port()
    log = (tmp_path / "review.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fraudwatch_review"], env=_env(settings, port), stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(base) or proc.poll() is not None, "the review service")
        assert proc.poll() is None, (tmp_path / "review.log").read_text()
        yield settings, base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists() and shutil.which("chromedriver")):
        pytest.skip(
            "headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1500,760"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_an_analyst_decides_an_alert_in_a_real_browser(browser: object, review: tuple[Settings, str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    settings, base = review
    run = uuid.uuid4().hex[:6]
    alerts = [
        scored_alert(
            f"tx-{run}-{i}",
            minutes_ago=2 + 7 * i,
            decision="decline" if i % 2 == 0 else "review",
            reasons=REASONS[i],
            amount=[1240.0, 86.2, 412.9, 57.0, 2310.0][i],
            terminal_id=f"term-{311 + 17 * i}",
            score=[0.97, 0.58, 0.91, 0.44, 0.88][i],
        )
        for i in range(len(REASONS))
    ]
    publish_alerts(settings, *alerts, scored_alert(XSS_ID, minutes_ago=60))
    browser.get(f"{base}/queue")
    assert browser.current_url.endswith("/login")  # no session yet
    browser.find_element(By.NAME, "analyst").send_keys("ana")
    browser.find_element(By.NAME, "token").send_keys(TOKEN)
    browser.find_element(By.CSS_SELECTOR, "#login button").click()

    def rows() -> list[str]:
        browser.get(f"{base}/queue")
        return [r.get_attribute("data-tx") or "" for r in browser.find_elements(By.CSS_SELECTOR, "tr.alert")]

    wait_for(lambda: len(rows()) == len(alerts) + 1, "every alert on the page")
    assert rows() == [a["transaction_id"] for a in alerts] + [XSS_ID]  # newest first
    if target := os.environ.get("FRAUDWATCH_REVIEW_SCREENSHOT"):
        browser.save_screenshot(target)

    # the <script> id is shown as text and ran nothing
    cell = browser.find_element(By.CSS_SELECTOR, "tr.alert:last-child td.tx")
    assert cell.text.splitlines()[0] == XSS_ID
    assert browser.execute_script("return window.__pwned === undefined") is True

    # decide the second alert: fraud, with a note
    target_tx = alerts[1]["transaction_id"]
    row = browser.find_element(By.CSS_SELECTOR, f'tr.alert[data-tx="{target_tx}"]')
    row.find_element(By.NAME, "note").send_keys("cardholder confirmed: not them")
    row.find_element(By.CSS_SELECTOR, "button.fraud").click()
    wait_for(
        lambda: "/queue" in browser.current_url and browser.find_elements(By.ID, "decided"), "the queue again"
    )
    assert target_tx not in rows()
    decided = browser.find_element(By.CSS_SELECTOR, f'tr.decision[data-tx="{target_tx}"]').text
    assert "fraud" in decided and "ana" in decided and "cardholder confirmed" in decided

    # and the XSS id can be decided too, by its exact value
    browser.find_element(By.CSS_SELECTOR, "tr.alert:last-child button.genuine").click()
    wait_for(lambda: XSS_ID not in rows(), "the <script> alert decided")

    labels = {
        m.key().decode(): parse_label(m.value()) for m in labels_on(settings, lambda out: len(out) >= 2)
    }
    assert set(labels) == {target_tx, XSS_ID}
    assert labels[target_tx].is_fraud is True and labels[target_tx].source == "analyst:ana"
    assert labels[target_tx].card_id == alerts[1]["card_id"]
    assert labels[XSS_ID].is_fraud is False
