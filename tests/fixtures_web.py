"""Fixtures for the public pages: letters really sent through the test SMTP server, with the links
`outreach serve` answers, and that app running under uvicorn on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette

from outreach.config import Settings
from outreach.letters.approval import record_approval
from outreach.letters.campaign import CampaignConfig, with_web_base_url
from outreach.letters.campaign_file import load_campaign
from outreach.sending.run import SendOptions, SendSummary, run_send
from outreach.tracking.events import DELIVERY, EVENT, SUPPRESSION
from outreach.web.public.app import build_public_app
from tests.fixtures_sending import CAMPAIGN_TOML, LETTER, add_raadsleden, smtp_settings
from tests.smtpd import SmtpServer, start_server
from tests.webserver import serve

# The letter of the web tests invites an opt-in, as the charity's letters do.
WEB_LETTER = LETTER + "\nWilt u voortaan onze mailings ontvangen? Meld u aan: {{ optin_url }}\n"
_OPTIN_RE = re.compile(r"(http://127\.0\.0\.1:\d+/aanmelden/[a-z2-7]{16})")


@dataclass(frozen=True)
class ReceivedLetter:
    address: str
    message: EmailMessage

    @property
    def unsubscribe_url(self) -> str:
        """The https (here http, on loopback) entry of List-Unsubscribe, as a mail client reads it."""
        for part in str(self.message["List-Unsubscribe"]).split(","):
            part = part.strip().strip("<>")
            if part.startswith("http"):
                return part
        raise AssertionError(f"no web unsubscribe URL in {self.message['List-Unsubscribe']!r}")

    @property
    def optin_url(self) -> str:
        body = self.message.get_body(("plain",))
        assert body is not None
        found = _OPTIN_RE.search(body.get_content())
        assert found, "the letter carries {{ optin_url }}"
        return found.group(1)

    @property
    def token(self) -> str:
        return self.unsubscribe_url.rsplit("/", 1)[1]


@dataclass
class WebSite:
    """The public app on uvicorn, its database, and a way to send campaigns whose links point at it."""

    engine: Engine
    db_url: str
    templates: Path
    base_url: str
    smtp: SmtpServer
    app: Starlette
    sent: dict[str, list[ReceivedLetter]] = field(default_factory=dict)

    def settings(self, **overrides: Any) -> Settings:
        return smtp_settings(
            self.db_url, self.smtp.port, templates=self.templates, web_base_url=self.base_url, **overrides
        )

    def campaign(self, slug: str) -> CampaignConfig:
        """An approved campaign whose letter carries the web links (as `outreach send` loads it)."""
        folder = self.templates / slug
        if not folder.is_dir():
            folder.mkdir(parents=True)
            (folder / "campaign.toml").write_text(CAMPAIGN_TOML, encoding="utf-8")
            (folder / "brief.txt.j2").write_text(WEB_LETTER, encoding="utf-8")
            record_approval(self.engine, load_campaign(self.templates, slug), "Test Reviewer")
        return with_web_base_url(load_campaign(self.templates, slug), self.base_url)

    def send(self, slug: str, **options: Any) -> SendSummary:
        """Send the campaign through the test SMTP server; its letters are kept by recipient."""
        before = len(self.smtp.handler.messages)
        values: dict[str, Any] = {"concurrency": 2, "backoff_initial": 0.01, "backoff_max": 0.05}
        values.update(options)
        summary = run_send(self.engine, self.settings(), self.campaign(slug), SendOptions(**values))
        for received in self.smtp.handler.messages[before:]:
            message = email.message_from_bytes(received.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            for address in received.rcpt_tos:
                self.sent.setdefault(address, []).append(ReceivedLetter(address, message))
        return summary

    def letter(self, address: str, index: int = 0) -> ReceivedLetter:
        return self.sent[address][index]

    def counts(self) -> tuple[int, int, tuple[tuple[str, int], ...]]:
        """(events, suppressions, deliveries per state): what a request must not change."""
        with self.engine.connect() as conn:
            events = conn.execute(select(func.count()).select_from(EVENT)).scalar_one()
            suppressions = conn.execute(select(func.count()).select_from(SUPPRESSION)).scalar_one()
            states = conn.execute(
                select(DELIVERY.c.state, func.count()).group_by(DELIVERY.c.state).order_by(DELIVERY.c.state)
            ).all()
        return int(events), int(suppressions), tuple((str(s), int(n)) for s, n in states)


def start_site(
    engine: Engine, db_url: str, templates: Path, **settings: Any
) -> Callable[[], Iterator[WebSite]]:
    def run() -> Iterator[WebSite]:
        smtp = start_server(pipelining=True)
        values: dict[str, Any] = {"database_url": db_url, "templates": templates, "web_rate_limit": 100_000.0}
        values.update(settings)
        app = build_public_app(engine, Settings(**values))
        try:
            with serve(app) as base_url:
                yield WebSite(engine, db_url, templates, base_url, smtp, app)
        finally:
            smtp.stop()

    return run


@pytest.fixture
def web_site(engine: Engine, db_url: str, make_campaign: Any, campaign_templates: Path) -> Iterator[WebSite]:
    """The public app on uvicorn over this test's SQLite database (municipalities loaded, no contacts)."""
    yield from start_site(engine, db_url, campaign_templates)()


@pytest.fixture
def sent(web_site: WebSite) -> tuple[WebSite, list[str]]:
    """Three raadsleden who received campaign 'eerste' (through the test SMTP server)."""
    addresses = add_raadsleden(web_site.engine, 3)
    assert web_site.send("eerste").sent == 3
    return web_site, addresses
