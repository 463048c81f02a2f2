"""`outreach serve`'s pages over real HTTP: the app under uvicorn on 127.0.0.1, letters really sent."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update

from outreach.db import open_database
from outreach.models import EventKind
from outreach.registry.keys import email_hash
from outreach.tracking.events import CONTACT, DELIVERY, EVENT, SUPPRESSION
from outreach.tracking.privacy import export_person, forget_person
from outreach.tracking.report import build_report
from outreach.web.public.store import mask_email
from outreach.web.security import DEFAULT_CSP
from tests.fixtures_sending import add_raadsleden
from tests.fixtures_web import WebSite, start_site
from tests.smtpd import free_port
from tests.webserver import access_lines

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
SCANNER = {"user-agent": "Mozilla/5.0 (compatible; SafeLinks link checker)"}


def events(engine: Engine, kind: str | None = None) -> list[Any]:
    query = select(EVENT)
    if kind:
        query = query.where(EVENT.c.kind == kind)
    with engine.connect() as conn:
        return list(conn.execute(query.order_by(EVENT.c.id)))


def suppression(engine: Engine, address: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(SUPPRESSION).where(SUPPRESSION.c.key_hash == email_hash(address))).first()


def test_the_letter_carries_the_links_outreach_serve_answers(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    assert letter.unsubscribe_url == f"{site.base_url}/afmelden/{letter.token}"
    assert letter.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "mailto:afmelden@hetvergetenkind.nl" in str(letter.message["List-Unsubscribe"])
    assert letter.optin_url == f"{site.base_url}/aanmelden/{letter.token}"


def test_get_and_head_show_the_page_and_change_nothing(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    before = site.counts()
    with httpx.Client(headers=SCANNER) as scanner:  # a link scanner fetching every link, several times
        for url in (letter.unsubscribe_url, letter.optin_url):
            for _ in range(3):
                assert scanner.get(url).status_code == 200
                head = scanner.head(url)
                assert head.status_code == 200 and head.content == b""
    assert site.counts() == before
    page = httpx.get(letter.unsubscribe_url)
    assert "<h1>Afmelden</h1>" in page.text
    assert "Het Vergeten Kind" in page.text
    assert mask_email(addresses[0]) in page.text and addresses[0] not in page.text
    assert 'value="alles" checked' in page.text and 'value="campagne"' in page.text
    assert "Alle post van Het Vergeten Kind" in page.text and "Alleen deze campagne" in page.text
    assert '<form method="post">' in page.text and '<button type="submit">Afmelden</button>' in page.text


def test_masking_keeps_enough_to_recognise() -> None:
    assert mask_email("j.jansen@utrecht.nl") == "j.***@utrecht.nl"
    assert mask_email("jan@utrecht.nl") == "j***@utrecht.nl"
    assert mask_email("j@utrecht.nl") == "j***@utrecht.nl"


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_opts_out_and_suppresses_at_once(
    sent: tuple[WebSite, list[str]], encoding: str
) -> None:
    site, addresses = sent
    address = addresses[0]
    site.campaign("tweede")
    from outreach.sending.plan import plan_deliveries

    plan_deliveries(site.engine, site.campaign("tweede"))  # a letter to them waits in another campaign
    letter = site.letter(address)
    if encoding == "urlencoded":
        response = httpx.post(letter.unsubscribe_url, data=ONE_CLICK)
    else:
        response = httpx.post(letter.unsubscribe_url, files={"List-Unsubscribe": (None, "One-Click")})
        assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert "U bent afgemeld" in response.text
    [event] = events(site.engine, EventKind.OPT_OUT)
    assert event.source == "web"
    with site.engine.connect() as conn:
        delivery = conn.execute(select(DELIVERY).where(DELIVERY.c.token == letter.token)).one()
        waiting = conn.execute(
            select(DELIVERY.c.state, DELIVERY.c.skip_reason)
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .where(CONTACT.c.email_key == address, DELIVERY.c.id != delivery.id)
        ).one()
    assert (event.delivery_id, event.campaign_id, event.contact_id) == (
        delivery.id,
        delivery.campaign_id,
        delivery.contact_id,
    )
    assert suppression(site.engine, address).reason == "opt-out"
    assert suppression(site.engine, address).source == "web"
    assert tuple(waiting) == ("skipped", "suppressed: opt-out")
    assert suppression(site.engine, addresses[1]) is None, "only the letter's own address"


def test_a_repeated_post_changes_nothing_more(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    url = site.letter(addresses[0]).unsubscribe_url
    first = httpx.post(url, data=ONE_CLICK)
    after_first = site.counts()
    second = httpx.post(url, data=ONE_CLICK)
    third = httpx.post(url, data={"keuze": "alles"})
    assert first.status_code == second.status_code == third.status_code == 200
    assert site.counts() == after_first
    assert len(events(site.engine, EventKind.OPT_OUT)) == 1
    assert "U ontvangt al geen post meer" in httpx.get(url).text


def test_this_campaign_only_skips_its_letters_without_suppressing(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    address = addresses[0]
    from outreach.sending.plan import plan_deliveries

    with site.engine.begin() as conn:  # the same mailbox in a second office: a second letter of 'eerste'
        row = conn.execute(select(CONTACT).where(CONTACT.c.email_key == address)).one()._asdict()
        row.pop("id")
        row["office_key"] += "|tweede-ambt"
        row["role"] = "wethouder"
        conn.execute(CONTACT.insert().values(**row))
    with site.engine.begin() as conn:  # the audience is raadsleden; plan the wethouder's letter by hand
        campaign_id = conn.execute(
            select(DELIVERY.c.campaign_id).where(DELIVERY.c.token == site.letter(address).token)
        ).scalar_one()
        second_office = conn.execute(
            select(CONTACT.c.id).where(CONTACT.c.email_key == address, CONTACT.c.role == "wethouder")
        ).scalar_one()
        conn.execute(
            DELIVERY.insert().values(campaign_id=campaign_id, contact_id=second_office, state="pending")
        )
    plan_deliveries(site.engine, site.campaign("tweede"))
    response = httpx.post(site.letter(address).unsubscribe_url, data={"keuze": "campagne"})
    assert response.status_code == 200
    assert "Wij sturen u niets meer over" in response.text
    assert suppression(site.engine, address) is None
    with site.engine.connect() as conn:
        states = dict(
            conn.execute(
                select(DELIVERY.c.contact_id, DELIVERY.c.state).where(DELIVERY.c.campaign_id == campaign_id)
            ).all()
        )
        others = list(
            conn.execute(select(DELIVERY.c.state).where(DELIVERY.c.campaign_id != campaign_id)).scalars()
        )
    assert states[second_office] == "skipped"
    assert set(others) == {"pending"}, "the other campaign's letters still go"
    [event] = events(site.engine, EventKind.OPT_OUT)
    assert "alleen campagne eerste" in event.text
    page = httpx.get(site.letter(address).unsubscribe_url).text
    assert "U bent al afgemeld voor deze campagne" in page
    # Later the person opts out of everything after all: that is recorded and suppresses.
    assert httpx.post(site.letter(address).unsubscribe_url, data={"keuze": "alles"}).status_code == 200
    assert suppression(site.engine, address).reason == "opt-out"
    assert len(events(site.engine, EventKind.OPT_OUT)) == 2


def test_a_post_without_a_choice_is_refused(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    before = site.counts()
    url = site.letter(addresses[0]).unsubscribe_url
    too_many = {f"veld{n}": "x" for n in range(20)} | ONE_CLICK
    for data in ({}, {"keuze": "iets"}, {"List-Unsubscribe": "Two-Clicks"}, too_many):
        response = httpx.post(url, data=data)
        assert response.status_code == 400
        assert "Dit verzoek begrijpen we niet" in response.text
    assert site.counts() == before


def test_an_unknown_token_gets_the_same_404_as_any_unknown_path(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    before = site.counts()
    reference = httpx.get(site.base_url + "/bestaat-niet")
    assert reference.status_code == 404
    for method, path in (
        ("GET", "/afmelden/aaaaaaaaaaaaaaaa"),
        ("POST", "/afmelden/aaaaaaaaaaaaaaaa"),
        ("GET", "/afmelden/geen-token"),
        ("GET", "/aanmelden/aaaaaaaaaaaaaaaa"),
        ("POST", "/aanmelden/aaaaaaaaaaaaaaaa"),
        ("GET", "/afmelden/"),
        ("GET", "/afmelden/" + site.letter(addresses[0]).token + "/extra"),
    ):
        response = httpx.request(method, site.base_url + path, data=ONE_CLICK if method == "POST" else None)
        assert response.status_code == 404, path
        assert response.text == reference.text, path
    assert site.counts() == before


def test_opt_in_shows_what_they_receive_and_records_its_proof(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    url = site.letter(addresses[1]).optin_url
    page = httpx.get(url)
    assert page.status_code == 200
    assert "Wat u ontvangt" in page.text and "Een paar keer per jaar" in page.text
    assert '<input type="hidden" name="tekst" value="2026-1">' in page.text
    assert "opheffen" not in page.text, "no opt-out to lift"
    response = httpx.post(url, data={"tekst": "2026-1"})
    assert response.status_code == 200 and "Bedankt, u bent aangemeld" in response.text
    assert "Wij hebben vastgelegd wanneer u zich aanmeldde en welke tekst u zag." in response.text
    again = httpx.post(url, data={"tekst": "2026-1"})  # a double click: nothing more is recorded
    assert again.status_code == 200 and "vastgelegd" not in again.text
    [event] = events(site.engine, EventKind.OPT_IN)
    assert event.source == "web" and event.delivery_id is not None and event.campaign_id is not None
    assert "tekst 2026-1" in event.text and "campagne eerste" in event.text
    assert event.reference == "optin-text:2026-1"
    with site.engine.connect() as conn:
        contact = conn.execute(select(CONTACT).where(CONTACT.c.email_key == addresses[1])).one()
    assert contact.opted_in_at == event.occurred_at
    assert "tekst 2026-1" in contact.opt_in_topics
    assert "U bent al aangemeld" in httpx.get(url).text


def test_opt_in_lifts_an_opt_out_only_when_ticked(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    httpx.post(letter.unsubscribe_url, data=ONE_CLICK)
    page = httpx.get(letter.optin_url).text
    assert 'name="opheffen" value="ja"' in page and "checked" not in page
    before = site.counts()
    kept = httpx.post(letter.optin_url, data={"tekst": "2026-1"})
    assert kept.status_code == 200 and "Uw afmelding blijft staan" in kept.text
    assert site.counts() == before
    assert suppression(site.engine, addresses[0]).reason == "opt-out"
    lifted = httpx.post(letter.optin_url, data={"tekst": "2026-1", "opheffen": "ja"})
    assert "Uw eerdere afmelding is opgeheven" in lifted.text
    assert suppression(site.engine, addresses[0]) is None
    [event] = events(site.engine, EventKind.OPT_IN)
    assert "eerdere afmelding opgeheven" in event.text


def test_opt_in_never_lifts_a_hard_bounce(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    from outreach.tracking.events import suppress

    with site.engine.begin() as conn:
        suppress(
            conn, addresses[2], "hard-bounce", "imap", site.letter(addresses[2]).message["Date"].datetime
        )
    url = site.letter(addresses[2]).optin_url
    assert "opheffen" not in httpx.get(url).text
    response = httpx.post(url, data={"tekst": "2026-1", "opheffen": "ja"})
    assert "kunnen dit adres op dit moment geen post sturen" in response.text
    assert suppression(site.engine, addresses[2]).reason == "hard-bounce"


def test_opt_in_refuses_an_unknown_text_version(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    before = site.counts()
    url = site.letter(addresses[1]).optin_url
    assert httpx.post(url, data={"tekst": "1999-9"}).status_code == 400
    assert httpx.post(url, data={}).status_code == 400
    assert site.counts() == before


def test_web_events_in_report_export_and_forget(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    httpx.post(site.letter(addresses[0]).unsubscribe_url, data=ONE_CLICK)
    httpx.post(site.letter(addresses[1]).optin_url, data={"tekst": "2026-1"})
    report = build_report(site.engine, "eerste", templates=site.templates)
    assert report.totals.opted_out == 1
    exported = json.loads(json.dumps(export_person(site.engine, addresses[0]), default=str))
    assert [(e["kind"], e["source"]) for e in exported["events"]] == [("opt-out", "web")]
    exported = json.loads(json.dumps(export_person(site.engine, addresses[1]), default=str))
    assert [(e["kind"], e["source"]) for e in exported["events"]] == [("opt-in", "web")]
    for address in addresses[:2]:
        forget_person(site.engine, address)
    for event in events(site.engine):
        if event.source == "web":
            assert event.contact_id is None and event.text is None and event.reference is None
    assert build_report(site.engine, "eerste", templates=site.templates).totals.opted_out == 1
    # The erased person's link answers (their letter still exists) but shows no address and records nothing.
    before = site.counts()
    page = httpx.get(site.letter(addresses[0]).unsubscribe_url)
    assert page.status_code == 200 and "@" not in page.text.split("<main")[1].split("</main>")[0].replace(
        "mailto:", ""
    )
    assert httpx.post(site.letter(addresses[0]).unsubscribe_url, data=ONE_CLICK).status_code == 200
    assert httpx.get(site.letter(addresses[1]).optin_url).status_code == 404
    assert site.counts() == before


def test_pages_carry_the_security_headers_and_no_cookies(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    for response in (
        httpx.get(letter.unsubscribe_url),
        httpx.get(letter.optin_url),
        httpx.post(letter.unsubscribe_url, data=ONE_CLICK),
        httpx.get(site.base_url + "/bestaat-niet"),
    ):
        assert response.headers["content-security-policy"] == DEFAULT_CSP
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" not in response.headers
        assert "style=" not in response.text and "<script" not in response.text
    assert "strict-transport-security" not in httpx.get(letter.unsubscribe_url).headers
    refused = httpx.put(letter.unsubscribe_url)
    assert refused.status_code == 405
    assert set(refused.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


def test_hsts_when_the_base_url_is_https(
    engine: Engine, db_url: str, campaign_templates: Path, make_campaign: Any
) -> None:
    run = start_site(engine, db_url, campaign_templates, web_base_url="https://post.hetvergetenkind.nl")
    for site in run():
        response = httpx.get(site.base_url + "/healthz")
        assert response.text == "ok\n"
        assert response.headers["strict-transport-security"].startswith("max-age=")


def test_request_size_limit(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    before = site.counts()
    response = httpx.post(site.letter(addresses[0]).unsubscribe_url, data={**ONE_CLICK, "x": "y" * 20_000})
    assert response.status_code == 413 and "Verzoek te groot" in response.text
    assert site.counts() == before


def test_rate_limit_per_client_and_x_forwarded_for_only_from_the_trusted_proxy(
    engine: Engine, db_url: str, campaign_templates: Path, make_campaign: Any
) -> None:
    add_raadsleden(engine, 1)
    for trusted in ((), ("127.0.0.1",)):
        run = start_site(engine, db_url, campaign_templates, web_rate_limit=5.0, web_trusted_proxies=trusted)
        for site in run():
            site.send("eerste")  # the second round: already sent, nothing more
            with engine.connect() as conn:
                token = conn.execute(select(DELIVERY.c.token)).scalar_one()
            url = f"{site.base_url}/afmelden/{token}"
            with httpx.Client() as client:
                statuses = [
                    client.get(url, headers={"x-forwarded-for": "198.51.100.7"}).status_code for _ in range(6)
                ]
                other = client.get(url, headers={"x-forwarded-for": "198.51.100.8"})
                limited = client.post(url, data=ONE_CLICK, headers={"x-forwarded-for": "198.51.100.7"})
            assert statuses[:5] == [200] * 5 and statuses[5] == 429
            assert limited.status_code == 429 and "Even geduld" in limited.text
            assert int(limited.headers["retry-after"]) >= 1
            if trusted:
                assert other.status_code == 200, "behind the trusted proxy each client has its own bucket"
            else:
                assert other.status_code == 429, "X-Forwarded-For from anyone else is not believed"
            assert httpx.get(site.base_url + "/healthz").status_code == 200, (
                "the proxy's check is not limited"
            )
    assert not events(engine, EventKind.OPT_OUT), "a refused request records nothing"


def test_sent_letter_one_click_suppresses_the_next_send(sent: tuple[WebSite, list[str]]) -> None:
    site, addresses = sent
    letter = site.letter(addresses[0])
    # What a mail client does for RFC 8058: POST the body to the List-Unsubscribe https URL, no cookies.
    response = httpx.post(
        letter.unsubscribe_url,
        content=letter.message["List-Unsubscribe-Post"].encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    summary = site.send("tweede")
    assert summary.sent == 2
    assert [len(site.sent[a]) for a in addresses] == [1, 2, 2]


def _opt_out_while_sending(site: WebSite, addresses: list[str]) -> None:
    """Campaign 'tweede' runs slowly; the last recipient unsubscribes (from 'eerste''s letter) once the
    first letter of 'tweede' is out. Their 'tweede' letter, not yet claimed or composed, must not go."""
    import threading

    last = addresses[-1]
    url = site.letter(last).unsubscribe_url
    site.smtp.handler.delay = 0.03
    done: list[Any] = []
    runner = threading.Thread(
        target=lambda: done.append(site.send("tweede", concurrency=1, batch_size=5, compose_process=False))
    )
    messages = len(site.smtp.handler.messages)
    runner.start()
    deadline = time.monotonic() + 30
    while len(site.smtp.handler.messages) == messages and time.monotonic() < deadline:
        time.sleep(0.005)
    assert httpx.post(url, data=ONE_CLICK).status_code == 200
    runner.join(60)
    assert done, "the send finished"
    assert runner.is_alive() is False
    assert len(site.sent[last]) == 1, "the opted-out recipient got no letter of 'tweede'"
    assert all(len(site.sent[a]) == 2 for a in addresses[:-1])
    with site.engine.connect() as conn:
        state = conn.execute(
            select(DELIVERY.c.state, DELIVERY.c.skip_reason)
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .where(CONTACT.c.email_key == last, DELIVERY.c.sent_at.is_(None))
        ).one()
    assert tuple(state) == ("skipped", "suppressed: opt-out")


def test_an_opt_out_while_a_send_runs_is_honoured_sqlite(web_site: WebSite) -> None:
    addresses = add_raadsleden(web_site.engine, 30)
    web_site.send("eerste")
    _opt_out_while_sending(web_site, addresses)


@pytest.mark.postgres
def test_an_opt_out_while_a_send_runs_is_honoured_postgresql(
    pg_url: str, campaign_templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from outreach.registry.municipalities import load_municipalities

    engine = open_database(pg_url)
    try:
        load_municipalities(engine)
        addresses = add_raadsleden(engine, 30)
        for site in start_site(engine, pg_url, campaign_templates)():
            site.send("eerste")
            _opt_out_while_sending(site, addresses)
            assert suppression(engine, addresses[-1]).source == "web"
    finally:
        engine.dispose()


def test_healthz(web_site: WebSite) -> None:
    response = httpx.get(web_site.base_url + "/healthz")
    assert response.status_code == 200 and response.text == "ok\n"
    assert httpx.get(web_site.base_url + "/robots.txt").text == "User-agent: *\nDisallow: /\n"


@pytest.fixture
def served(
    tmp_path: Path, make_campaign: Any, engine: Engine, db_url: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`outreach -v serve` as a process of its own, on a free port of 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "OUTREACH_DATABASE_URL": db_url, "OUTREACH_WEB_BASE_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", "-v", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"outreach serve did not start: {process.communicate()[0]}")
        time.sleep(0.05)
    try:
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_outreach_serve_logs_routes_never_tokens(
    served: tuple[str, subprocess.Popen[str]], engine: Engine, db_url: str, make_campaign: Any
) -> None:
    base, process = served
    add_raadsleden(engine, 1)
    from outreach.sending.plan import plan_deliveries

    campaign = make_campaign("eerste")
    plan_deliveries(engine, campaign)
    token = "abcdefghijklmnop"
    with engine.begin() as conn:
        conn.execute(update(DELIVERY).values(token=token))
    assert httpx.get(f"{base}/afmelden/{token}").status_code == 200
    assert httpx.post(f"{base}/afmelden/{token}", data=ONE_CLICK).status_code == 200
    assert httpx.get(f"{base}/aanmelden/{token}").status_code == 200
    assert httpx.get(f"{base}/afmelden/{token[::-1]}").status_code == 404
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=20)[0]
    assert process.returncode == 0, output
    assert "GET /afmelden/{token} 200" in output and "POST /afmelden/{token} 200" in output
    assert "GET /afmelden/{token} 404" in output
    assert token not in output and token[::-1] not in output
    assert "@gemeente" not in output, "no addresses either"


def test_outreach_serve_names_an_address_it_cannot_bind(runner: Any, db_url: str) -> None:
    import socket

    from outreach.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["--database", db_url, "serve", "--port", str(port)])
    assert result.exit_code == 1
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.output


def test_web_settings_from_the_environment_and_outreach_toml(tmp_path: Path) -> None:
    from outreach.config import load_settings
    from outreach.errors import ConfigError

    (tmp_path / "outreach.toml").write_text(
        '[web]\nbase_url = "https://post.hetvergetenkind.nl/"\n'
        'trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\nrate_limit = 30\n',
        encoding="utf-8",
    )
    settings = load_settings(environ={}, cwd=tmp_path)
    assert settings.web_base_url == "https://post.hetvergetenkind.nl"
    assert settings.web_trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert settings.web_rate_limit == 30.0
    env = load_settings(environ={"OUTREACH_WEB_BASE_URL": "http://127.0.0.1:8080"}, cwd=tmp_path)
    assert env.web_base_url == "http://127.0.0.1:8080"
    for name, value, says in (
        ("OUTREACH_WEB_BASE_URL", "post.hetvergetenkind.nl", "an http(s) address"),
        ("OUTREACH_WEB_BASE_URL", "https://x.nl/?a=1", "an http(s) address"),
        ("OUTREACH_WEB_TRUSTED_PROXIES", "127.0.0.1, proxy", "IP addresses or networks"),
        ("OUTREACH_WEB_RATE_LIMIT", "0", "a positive number"),
    ):
        with pytest.raises(ConfigError, match=f"{name}: .* is not .*{re.escape(says)}"):
            load_settings(environ={name: value}, cwd=tmp_path)


def test_outreach_send_uses_the_base_url_for_the_letters_links(
    runner: Any, db_url: str, engine: Engine, make_campaign: Any, tmp_path: Path
) -> None:
    from outreach.cli import app

    make_campaign("eerste")
    add_raadsleden(engine, 1)
    outbox = tmp_path / "outbox"
    result = runner.invoke(
        app,
        ["--database", db_url, "send", "--campaign", "eerste", "--dry-run", "--outbox", str(outbox)],
        env={"OUTREACH_WEB_BASE_URL": "https://post.hetvergetenkind.nl"},
    )
    assert "Dry run: wrote 1 letters" in result.output, result.output
    [eml] = outbox.glob("*.eml")
    raw = eml.read_text()
    assert re.search(
        r"List-Unsubscribe: <mailto:[^>]+>,\s+<https://post\.hetvergetenkind\.nl/afmelden/[a-z2-7]{16}>", raw
    )
    assert "List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw


def test_concurrent_posts_are_recorded_once_each(web_site: WebSite) -> None:
    """Many clients at once (the writer commits them in batches): each letter's opt-out exactly once,
    also when the same letter is posted several times in the same moment."""
    import asyncio

    addresses = add_raadsleden(web_site.engine, 20)
    web_site.send("eerste")
    urls = [web_site.letter(a).unsubscribe_url for a in addresses] * 3

    async def post_all() -> list[int]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=30)) as client:
            responses = await asyncio.gather(*(client.post(url, data=ONE_CLICK) for url in urls))
        return [r.status_code for r in responses]

    assert asyncio.run(post_all()) == [200] * 60
    recorded = events(web_site.engine, EventKind.OPT_OUT)
    assert len(recorded) == 20
    assert len({e.delivery_id for e in recorded}) == 20
    with web_site.engine.connect() as conn:
        reasons = conn.execute(select(SUPPRESSION.c.reason, SUPPRESSION.c.source)).all()
    assert sorted(tuple(r) for r in reasons) == [("opt-out", "web")] * 20


def _opt_out_batch(engine: Engine, statements: str, batch: list[Any], now: datetime) -> list[Any]:
    """``opt_out_many`` in a transaction of its own: SQLAlchemy Core, or the driver's SQL (the writer's
    path on SQLite, outreach/web/public/sqlite_batch.py)."""
    from outreach.sqlite_driver import conversions, sqlite_transaction
    from outreach.web.public.sqlite_batch import DriverStatements
    from outreach.web.public.store import CoreStatements, opt_out_many

    if statements == "core":
        with engine.begin() as conn:
            return opt_out_many(CoreStatements(conn), batch, now=now)
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        with sqlite_transaction(driver):
            return opt_out_many(DriverStatements(driver, conversions(engine.dialect)), batch, now=now)
    finally:
        raw.close()


@pytest.mark.parametrize("statements", ["core", "driver"])
def test_one_batch_records_each_choice_once(sent: tuple[WebSite, list[str]], statements: str) -> None:
    """The writer's batch: duplicates within it, both scopes, an unknown token, in one transaction; by
    SQLAlchemy Core (PostgreSQL's path) and by the driver's own SQL (SQLite's), with the same result."""
    from outreach.web.public.store import SKIP_CAMPAIGN, OptOutRequest, find_letters

    site, addresses = sent
    one, two = (site.letter(a).token for a in addresses[:2])
    batch = [
        OptOutRequest(one, "all", one_click=True),
        OptOutRequest(one.upper(), "all", one_click=True),  # the same letter again (case folded)
        OptOutRequest(two, "campaign"),
        OptOutRequest("aaaaaaaaaaaaaaaa", "all"),
        OptOutRequest(one, "campaign"),
    ]
    opted_in = datetime(2026, 11, 3, 9, 15, 0, 250000)
    with site.engine.begin() as conn:  # two unsent letters, which the opt-outs must stop; one opt-in
        conn.execute(
            update(DELIVERY).where(DELIVERY.c.token.in_([one, two])).values(state="pending", sent_at=None)
        )
        conn.execute(update(CONTACT).where(CONTACT.c.email == addresses[0]).values(opted_in_at=opted_in))
    with site.engine.connect() as conn:
        expected = find_letters(conn, [one])[one]  # as SQLAlchemy reads it
    assert expected.opted_in_at == opted_in
    now = datetime(2026, 12, 2, 6, 30, 15, 123456)
    outcomes = _opt_out_batch(site.engine, statements, batch, now)
    assert [None if o is None else (o[1].recorded, o[1].suppressed) for o in outcomes] == [
        (True, True),
        (False, False),
        (True, False),
        None,
        (True, False),
    ]
    assert outcomes[0] is not None and outcomes[0][0] == expected
    recorded = events(site.engine, EventKind.OPT_OUT)
    assert len(recorded) == 3
    assert {(e.occurred_at, e.recorded_at, e.source) for e in recorded} == {(now, now, "web")}
    assert sorted(e.text for e in recorded) == [
        "afgemeld via one-click (List-Unsubscribe-Post): alle post",
        "afgemeld via webpagina: alleen campagne eerste",
        "afgemeld via webpagina: alleen campagne eerste",
    ]
    assert suppression(site.engine, addresses[0]).reason == "opt-out"
    assert suppression(site.engine, addresses[0]).created_at == now
    assert suppression(site.engine, addresses[1]) is None
    with site.engine.connect() as conn:
        letters = dict(
            conn.execute(
                select(DELIVERY.c.token, DELIVERY.c.skip_reason).where(DELIVERY.c.token.in_([one, two]))
            ).all()
        )
    assert letters == {one: "suppressed: opt-out", two: SKIP_CAMPAIGN}
    again = _opt_out_batch(site.engine, statements, batch, now)  # the same batch again: nothing new
    assert [o[1].recorded for o in again if o is not None] == [False] * 4
    assert len(events(site.engine, EventKind.OPT_OUT)) == 3


def test_both_one_click_encodings_answer_the_same_page(sent: tuple[WebSite, list[str]]) -> None:
    """A form-urlencoded one-click POST is answered in front of the app (outreach/web/public/oneclick.py),
    a multipart one by the app itself: the same page, the same headers, the same single record."""
    site, addresses = sent
    url = site.letter(addresses[0]).unsubscribe_url
    by_app = httpx.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    in_front = httpx.post(url, data=ONE_CLICK)
    assert by_app.status_code == in_front.status_code == 200
    assert in_front.text == by_app.text
    assert mask_email(addresses[0]) in in_front.text and site.letter(addresses[0]).token in in_front.text
    assert {k: v for k, v in in_front.headers.items() if k != "date"} == {
        k: v for k, v in by_app.headers.items() if k != "date"
    }
    assert len(events(site.engine, EventKind.OPT_OUT)) == 1
    # A second letter: a page of the same campaign from the one rendered before, with its own address.
    other = httpx.post(site.letter(addresses[1]).unsubscribe_url, data=ONE_CLICK)
    assert mask_email(addresses[1]) in other.text and mask_email(addresses[0]) not in other.text
    assert (
        other.text
        == httpx.post(
            site.letter(addresses[1]).unsubscribe_url, files={"List-Unsubscribe": (None, "One-Click")}
        ).text
    )


def test_a_database_failure_during_a_one_click_post_is_a_500_page(
    sent: tuple[WebSite, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    site, addresses = sent
    with site.engine.begin() as conn:  # the opt-out cannot be recorded: its table is gone
        conn.exec_driver_sql("DROP TABLE event")
    with caplog.at_level(logging.INFO, logger="outreach.web"):
        response = httpx.post(site.letter(addresses[0]).unsubscribe_url, data=ONE_CLICK)
        lines = access_lines(caplog, 1)
    assert response.status_code == 500
    assert "Er ging iets mis" in response.text
    assert "Traceback" not in response.text and "event" not in response.text.split("<main")[1]
    assert response.headers["content-security-policy"] == DEFAULT_CSP
    assert response.headers["cache-control"] == "no-store"
    assert suppression(site.engine, addresses[0]) is None
    assert any(line.startswith("POST /afmelden/{token} 500 ") for line in lines), lines
    assert not any(site.letter(addresses[0]).token in r.getMessage() for r in caplog.records)
