"""The review in a real Chromium (selenium): what a reviewer does, and what the letter frame never does."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait
from typer.testing import CliRunner

from outreach.cli import app as cli
from tests.fixtures_review import ReviewSite, StartReview


def wait_for(browser: webdriver.Chrome, css: str) -> None:
    WebDriverWait(browser, 15).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_filter_open_step_and_approve_then_send_accepts(
    site: ReviewSite, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    browser.get(site.url + "/")
    assert browser.title.startswith("Overview of 2026")
    browser.find_element(By.LINK_TEXT, "Recipients").click()
    Select(browser.find_element(By.NAME, "municipality")).select_by_visible_text("Utrecht")
    browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(browser, "table.recipients")
    assert browser.find_element(By.ID, "count").text.startswith("5 recipients")
    municipalities = {
        td.text for td in browser.find_elements(By.CSS_SELECTOR, "table.recipients td:nth-child(5)")
    }
    assert municipalities == {"Utrecht"}

    browser.find_element(By.CSS_SELECTOR, "table.recipients tbody tr:first-child a").click()
    wait_for(browser, "iframe.letter")
    first = browser.find_element(By.TAG_NAME, "h1").text
    assert first.startswith("Letter to ") and "1 of 5" in browser.page_source
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.letter"))
    assert "Geachte" in browser.find_element(By.TAG_NAME, "body").text
    browser.switch_to.default_content()

    browser.find_element(By.ID, "next").click()
    wait_for(browser, "nav.stepper")
    assert browser.find_element(By.TAG_NAME, "h1").text != first
    assert "2 of 5" in browser.find_element(By.CSS_SELECTOR, "nav.stepper").text

    browser.find_element(By.LINK_TEXT, "Decide").click()
    browser.find_element(By.ID, "approve-name").send_keys("Anna Reviewer")
    browser.find_element(By.ID, "approve-comment").send_keys("Gelezen in de browser")
    browser.find_element(By.CSS_SELECTOR, "#approve-form button[type=submit]").click()
    wait_for(browser, "p.notice[role=status]")
    assert "Recorded: approved by Anna Reviewer" in browser.find_element(By.CSS_SELECTOR, "p.notice").text
    assert "Gelezen in de browser" in browser.find_element(By.CSS_SELECTOR, "table.history").text

    result = CliRunner().invoke(
        cli,
        ["--database", str(site.engine.url), "--templates", str(site.templates), "send", "-c", "2026",
         "--dry-run", "--yes", "--outbox", str(tmp_path / "outbox")],
    )  # fmt: skip
    assert "Error" not in result.stderr, result.stderr
    assert "Dry run: wrote 4 letters" in result.stdout
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 4


class _Probe(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Probe.hits.append(self.path)
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def probe() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that notes every request: the 'remote' content of a letter."""
    _Probe.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_letter_frame_runs_no_script_and_loads_nothing_remote(
    start_review: StartReview, review_templates: Path, browser: webdriver.Chrome, probe: str
) -> None:
    html = review_templates / "2026" / "brief.html.j2"
    hostile = (
        f'<img id="pixel" src="{probe}/pixel.png" alt="">'
        f'<link rel="stylesheet" href="{probe}/style.css">'
        "<script>document.body.setAttribute('data-ran', 'yes');"
        " parent.document.title = 'script ran';</script>"
    )
    html.write_text(
        html.read_text(encoding="utf-8").replace("</body>", hostile + "</body>"), encoding="utf-8"
    )
    with start_review() as site:
        browser.get(site.url + "/recipients?q=anna")
        browser.find_element(By.CSS_SELECTOR, "table.recipients tbody a").click()
        wait_for(browser, "iframe.letter")
        frame = browser.find_element(By.CSS_SELECTOR, "iframe.letter")
        assert frame.get_attribute("sandbox") == ""
        browser.switch_to.frame(frame)
        wait_for(browser, "#pixel")
        body = browser.find_element(By.TAG_NAME, "body")
        assert "Geachte mevrouw Van Dijk" in body.text
        assert body.get_attribute("data-ran") is None
        browser.switch_to.default_content()
        time.sleep(0.5)  # time for any request the frame might still make
        assert browser.title.startswith("Letter to Anna van Dijk")
    assert _Probe.hits == []


def test_logging_in_with_the_password(start_review: StartReview, browser: webdriver.Chrome) -> None:
    """On a network address: the login page, a wrong password, the right one; the session cookie is
    HttpOnly, so the page's own scripts (if there were any) could not read it."""
    with start_review(password="een lang wachtwoord", loopback=False) as site:
        browser.get(site.url + "/recipients")
        assert browser.current_url == site.url + "/login"
        browser.find_element(By.ID, "password").send_keys("fout")
        browser.find_element(By.CSS_SELECTOR, "form.narrow button").click()
        wait_for(browser, "p.notice[role=alert]")
        browser.find_element(By.ID, "password").send_keys("een lang wachtwoord")
        browser.find_element(By.CSS_SELECTOR, "form.narrow button").click()
        wait_for(browser, "ul.figures")
        assert browser.title.startswith("Overview of 2026")
        cookie = browser.get_cookie("outreach_review")
        assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""
