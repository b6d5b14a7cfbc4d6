"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium):
log in, see the queue, retry a message, and the charts render."""

from __future__ import annotations

import shutil
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.admin.conftest import ADMIN_PASSWORD, base_url
from tests.helpers.server import ServerThread

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()) or shutil.which("chromium") is None,
    reason="Debian's chromium and chromium-driver are missing (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _queue_remote_message(server: ServerThread) -> str:
    with smtplib.SMTP(*server.address, timeout=20) as client:
        client.ehlo("client.test")
        client.mail("sender@client.test")
        client.rcpt("someone@remote.test")  # no DNS answers here: it stays queued
        code, reply = client.data(b"Subject: hello\r\n\r\nHello.\r\n")
        assert code == 250
    return reply.decode().rsplit(" ", 1)[-1]


def test_log_in_see_the_queue_retry_and_the_charts(admin_server: ServerThread, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    queue_id = _queue_remote_message(admin_server)
    url = base_url(admin_server)
    wait = WebDriverWait(browser, 20)

    browser.get(url + "/")
    wait.until(expected_conditions.url_contains("/login"))
    browser.find_element(By.ID, "password").send_keys("not it")
    browser.find_element(By.ID, "login-button").click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "login-problem"), "Wrong password"))

    browser.find_element(By.ID, "password").send_keys(ADMIN_PASSWORD)
    browser.find_element(By.ID, "login-button").click()
    wait.until(expected_conditions.presence_of_element_located((By.ID, "queue-table")))

    row = f'#queue-table tr[data-queue-id="{queue_id}"]'
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, row)))
    assert "someone@remote.test" in browser.find_element(By.CSS_SELECTOR, row).text
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "queue-size"), "1"))

    browser.find_element(By.ID, "queue-search").send_keys("nothing-like-it")
    browser.find_element(By.CSS_SELECTOR, "#queue-form button[type=submit]").click()
    wait.until(expected_conditions.invisibility_of_element_located((By.CSS_SELECTOR, row)))
    browser.find_element(By.ID, "queue-search").clear()
    browser.find_element(By.ID, "queue-search").send_keys(queue_id[:8])
    browser.find_element(By.CSS_SELECTOR, "#queue-form button[type=submit]").click()
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, row)))

    browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="retry"]').click()
    wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "status"), f"retried {queue_id}"))

    # The charts: an SVG polyline per series, drawn from the server's samples.
    chart = browser.find_element(By.ID, "throughput-chart")
    wait.until(lambda _: chart.get_attribute("data-points") not in (None, "", "0"))
    lines = chart.find_elements(By.CSS_SELECTOR, "polyline[data-series]")
    assert {line.get_attribute("data-series") for line in lines} == {"received", "delivered", "bounced"}
    assert chart.size["width"] > 100
    assert chart.size["height"] > 50
    assert browser.find_elements(By.CSS_SELECTOR, "#queue-chart polyline")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert [entry for entry in errors if "/login" not in entry["message"]] == []  # the wrong password's 401
    browser.save_screenshot(str(Path(admin_server.config.data_dir) / "dashboard.png"))
