"""Fixtures for the sending tests: SMTP servers on 127.0.0.1, a small approved campaign, bulk contacts."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from outreach.config import Settings
from outreach.letters.approval import record_approval
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.models import Contact, Municipality, utcnow
from outreach.registry.keys import email_hash, email_key, office_key
from outreach.registry.municipalities import load_municipalities
from tests.smtpd import SmtpServer, start_server

CAMPAIGN_TOML = """\
name = "Testbrief jeugdzorg"
subject = "Jeugdzorg in {{ municipality.name }}"
text = "brief.txt.j2"
griffie_copy = "none"

[from]
name = "Het Vergeten Kind"
address = "brieven@hetvergetenkind.nl"
reply_to = "brieven@hetvergetenkind.nl"
message_domain = "hetvergetenkind.nl"

[audience]
roles = ["raadslid"]

[unsubscribe]
mailto = "afmelden@hetvergetenkind.nl"

[sending]
max_per_connection = 50
"""

LETTER = """\
{{ aanhef }},

Wij schrijven u over de jeugdzorg in {{ municipality.name }}. Gezinnen verdienen hulp voordat een
kind uit huis moet.

Met vriendelijke groet,

Het Vergeten Kind
"""


@dataclass
class CampaignFactory:
    templates: Path
    engine: Engine

    def __call__(self, slug: str = "testbrief", *, extra: str = "", approve: bool = True) -> CampaignConfig:
        folder = self.templates / slug
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "campaign.toml").write_text(CAMPAIGN_TOML + extra, encoding="utf-8")
        (folder / "brief.txt.j2").write_text(LETTER, encoding="utf-8")
        campaign = load_campaign(self.templates, slug)
        if approve:
            record_approval(self.engine, campaign, "Test Reviewer")
        return campaign


@pytest.fixture
def campaign_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "letters"
    folder.mkdir()
    monkeypatch.setenv("OUTREACH_TEMPLATES", str(folder))
    return folder


@pytest.fixture
def make_campaign(campaign_templates: Path, engine: Engine) -> CampaignFactory:
    load_municipalities(engine)
    return CampaignFactory(campaign_templates, engine)


def add_raadsleden(engine: Engine, count: int, *, domain_count: int = 20, start: int = 0) -> list[str]:
    """``count`` active raadsleden spread over ``domain_count`` domains, inserted in one statement."""
    with engine.begin() as conn:
        municipality_id = conn.execute(
            Municipality.__table__.select().where(Municipality.__table__.c.cbs_code == "GM0344")  # type: ignore[attr-defined]
        ).first()
        assert municipality_id is not None, "load_municipalities() first"
        rows: list[dict[str, Any]] = []
        addresses = []
        now = utcnow()
        for n in range(start, start + count):
            address = f"raadslid{n}@gemeente{n % domain_count}.nl"
            key = email_key(address)
            addresses.append(address)
            rows.append(
                {
                    "municipality_id": municipality_id.id,
                    "role": "raadslid",
                    "achternaam": f"Jansen{n}",
                    "voorletters": "A.",
                    "email": address,
                    "email_normalized": address,
                    "email_key": key,
                    "email_hash": email_hash(key),
                    "office_key": office_key(key, "GM0344", "raadslid"),
                    "sort_name": f"jansen{n}",
                    "source": "tests",
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
        conn.execute(insert(Contact.__table__), rows)  # type: ignore[attr-defined]
    return addresses


@pytest.fixture
def smtpd() -> Iterator[Callable[..., SmtpServer]]:
    """Starts aiosmtpd servers on 127.0.0.1 on demand; all are stopped after the test."""
    servers: list[SmtpServer] = []

    def start(**kwargs: Any) -> SmtpServer:
        server = start_server(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass(frozen=True)
class Certificates:
    server_context: ssl.SSLContext
    ca_file: Path


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    """A throwaway CA and a certificate for 127.0.0.1, made for this test."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "test-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return Certificates(context, ca_file)


def smtp_settings(db_url: str, port: int, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": db_url,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "none",
        "smtp_timeout": 3.0,
    }
    values.update(overrides)
    return Settings(**values)
