"""The shared web foundation (outreach/web/): headers, limits, error pages, access log, runner, browser."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from outreach.web.app import create_app
from outreach.web.limits import IpNetwork, RateLimiter, client_address, parse_networks
from outreach.web.pages import Pages
from outreach.web.security import DEFAULT_CSP, SecurityHeaders
from tests.webserver import access_lines, serve

TOKEN = "ABCDEFGHJKMNPQRS"
LIMITER = RateLimiter(per_minute=60, burst=3)


async def home(request: Request) -> Response:
    pages: Pages = request.app.state.pages
    return pages.render(request, "error.html", {"status": 200, "title": "Hallo <wereld>", "text": "tekst"})


async def echo(request: Request) -> Response:
    form = await request.form()
    return PlainTextResponse(f"{request.path_params['token']}:{form.get('x')}")


async def boom(request: Request) -> Response:
    raise RuntimeError("secret detail in the traceback")


async def framed(request: Request) -> Response:
    return PlainTextResponse("framed", headers={"content-security-policy": "sandbox; default-src 'none'"})


async def limited(request: Request) -> Response:
    LIMITER.check(client_address(request))
    return PlainTextResponse("ok")


def make_app(security: SecurityHeaders | None = None) -> Starlette:
    return create_app(
        [
            Route("/", home),
            Route("/echo/{token}", echo, methods=["POST"]),
            Route("/boom", boom),
            Route("/framed", framed),
            Route("/limited", limited),
        ],
        security=security,
        max_body_bytes=1024,
    )


@pytest.fixture
def base_url() -> Iterator[str]:
    with serve(make_app()) as url:
        yield url


def test_every_response_carries_the_security_headers(base_url: str) -> None:
    for path in ("/", "/nergens", "/static/site.css", "/boom"):
        response = httpx.get(base_url + path)
        assert response.headers["content-security-policy"] == DEFAULT_CSP, path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer", path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert "strict-transport-security" not in response.headers, "no HSTS for an http base URL"
    assert "server" not in httpx.get(base_url + "/").headers


def test_hsts_only_for_an_https_base_url() -> None:
    assert SecurityHeaders.for_base_url("https://hvk.example.nl").hsts
    assert not SecurityHeaders.for_base_url("http://127.0.0.1:8080").hsts
    assert not SecurityHeaders.for_base_url(None).hsts
    with serve(make_app(SecurityHeaders.for_base_url("https://hvk.example.nl"))) as url:
        assert httpx.get(url + "/").headers["strict-transport-security"].startswith("max-age=")


def test_a_response_may_set_its_own_csp(base_url: str) -> None:
    assert httpx.get(base_url + "/framed").headers["content-security-policy"] == "sandbox; default-src 'none'"


def test_pages_escape_values(base_url: str) -> None:
    body = httpx.get(base_url + "/").text
    assert "Hallo &lt;wereld&gt;" in body
    assert "<wereld>" not in body
    assert '<link rel="stylesheet" href="/static/site.css?v=' in body
    assert "style=" not in body and "<script" not in body


def test_unknown_paths_get_a_404_page(base_url: str) -> None:
    first = httpx.get(base_url + "/nergens")
    second = httpx.get(base_url + "/echo/")
    trailing = httpx.get(base_url + "/boom/")
    for response in (first, second, trailing):
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "Pagina niet gevonden" in response.text
    assert first.text == second.text == trailing.text, "one 404 page for every unknown path"


def test_wrong_method_gets_a_405_page_with_allow(base_url: str) -> None:
    response = httpx.get(base_url + f"/echo/{TOKEN}")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert "Dat kan hier niet" in response.text


def test_a_crash_is_a_500_page_without_traceback(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        response = httpx.get(base_url + "/boom")
    assert response.status_code == 500
    assert "Er ging iets mis" in response.text
    assert "secret detail" not in response.text and "Traceback" not in response.text
    assert response.headers["content-security-policy"] == DEFAULT_CSP


def test_request_size_limit_by_length_and_while_streaming(base_url: str) -> None:
    assert httpx.post(base_url + f"/echo/{TOKEN}", data={"x": "klein"}).text == f"{TOKEN}:klein"
    declared = httpx.post(base_url + f"/echo/{TOKEN}", data={"x": "y" * 5000})
    assert declared.status_code == 413
    assert "Verzoek te groot" in declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        yield b"x="
        for _ in range(10):
            yield b"y" * 500

    streamed = httpx.post(
        base_url + f"/echo/{TOKEN}",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert "Verzoek te groot" in streamed.text


def test_rate_limit_answers_429_with_retry_after(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        statuses = [client.get("/limited").status_code for _ in range(5)]
        refused = client.get("/limited")
    assert statuses[:3] == [200, 200, 200]
    assert 429 in statuses[3:]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "Even geduld" in refused.text


def test_head_has_no_body(base_url: str) -> None:
    page = httpx.head(base_url + "/")
    missing = httpx.head(base_url + "/nergens")
    assert page.status_code == 200 and page.content == b""
    assert missing.status_code == 404 and missing.content == b""


def test_access_log_names_the_route_never_the_token(base_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="outreach.web.access"):
        httpx.post(base_url + f"/echo/{TOKEN}", data={"x": "1"})
        httpx.get(base_url + f"/nergens/{TOKEN}")
        lines = access_lines(caplog, 2)
    assert any(line.startswith("POST /echo/{token} 200 ") for line in lines), lines
    assert any(line.startswith("GET (no route) 404 ") for line in lines), lines
    assert not any(TOKEN in r.getMessage() for r in caplog.records)


def _request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 5000)})


def test_x_forwarded_for_only_from_a_trusted_proxy() -> None:
    proxies = parse_networks(["127.0.0.1", "10.0.0.0/8"])

    def address(peer: str, *forwarded: str, trusted: tuple[IpNetwork, ...] = proxies) -> str:
        return client_address(_request(peer, list(forwarded)), trusted)

    assert address("203.0.113.9", "198.51.100.1") == "203.0.113.9", "an untrusted peer cannot claim another"
    assert address("127.0.0.1", "198.51.100.1") == "198.51.100.1"
    assert address("127.0.0.1", "6.6.6.6, 198.51.100.1, 10.1.2.3") == "198.51.100.1", "right-most untrusted"
    assert address("127.0.0.1", "6.6.6.6", "198.51.100.1") == "198.51.100.1", "several header lines"
    assert address("127.0.0.1") == "127.0.0.1"
    assert address("127.0.0.1", "198.51.100.1", trusted=()) == "127.0.0.1", "no proxy configured"
    with pytest.raises(ValueError, match="'nonsense'"):
        parse_networks(["nonsense"])


def test_token_bucket_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert [limiter.allow("a"), limiter.allow("a")] == [0, 0]
    assert limiter.allow("a") == pytest.approx(1.0)
    assert limiter.allow("b") == 0, "buckets are per client"
    now[0] = 1.0
    assert limiter.allow("a") == 0
    small = RateLimiter(per_minute=60, max_keys=2, clock=lambda: now[0])
    for key in ("a", "b", "c"):
        small.allow(key)
    assert list(small._buckets) == ["b", "c"], "the least recently seen client is forgotten first"


def test_a_real_browser_renders_the_shared_layout(base_url: str, browser: webdriver.Chrome) -> None:
    browser.get(base_url + "/nergens")
    assert "Pagina niet gevonden" in browser.title
    header = browser.find_element(By.CSS_SELECTOR, "header.site")
    # The style sheet was allowed by the CSP and applied: the header has the accent colour.
    assert header.value_of_css_property("background-color") == "rgba(11, 85, 99, 1)"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "nl"
