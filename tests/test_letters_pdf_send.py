"""`outreach send` of a PDF campaign: letters laid out ahead of sending, attached as sent, never twice."""

from __future__ import annotations

import email
import email.policy
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, select
from sqlmodel import Session
from typer.testing import CliRunner

from outreach.cli import app
from outreach.letters.approval import record_approval
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.kenmerk import delivery_kenmerk
from outreach.letters.pdf_letters import letter_composer, prepare_for_sending
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import load_recipients, table
from outreach.models import Campaign, Contact, utcnow
from outreach.sending.plan import plan_deliveries
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES
from tests.smtpd import SmtpServer


def _campaign(registry: Engine, tmp_path: Path) -> CampaignConfig:
    """The shipped wethouders letter, approved, two wethouders with an address."""
    templates = tmp_path / "letters"
    shutil.copytree(TEMPLATES / "wethouders-jeugd", templates / "wethouders-jeugd")
    with Session(registry) as session:
        add_contact(session, "a.dekker@utrecht.nl", role="wethouder", portfolio="Jeugd", achternaam="Dekker")
        add_contact(session, "b.smit@zwolle.nl", role="wethouder", cbs_code="GM0193", portfolio="Jeugd")
        session.commit()
    campaign = load_campaign(templates, "wethouders-jeugd")
    record_approval(registry, campaign, "Freke")
    return campaign


def test_prepared_letters_are_what_the_sender_attaches(registry: Engine, tmp_path: Path) -> None:
    campaign = _campaign(registry, tmp_path)
    plan = plan_deliveries(registry, campaign)
    now = utcnow()
    report = prepare_for_sending(registry, campaign, plan.campaign_id, now=now)
    assert report is not None and not report.failures
    assert report.rendered == 2 and report.cached == 0  # the two wethouders; the griffies have no address
    composer = letter_composer(registry, campaign)
    with registry.connect() as conn:
        kenmerk = conn.execute(select(table(Campaign).c.kenmerk)).scalar_one()
        ids = list(
            conn.execute(select(table(Contact).c.id).where(table(Contact).c.role == "wethouder")).scalars()
        )
        recipients = load_recipients(conn, ids)
    assert composer.kenmerk == kenmerk
    for recipient in recipients.values():
        letter = composer.compose(recipient, token="abcdefghijklmnop", now=now)
        (part,) = list(letter.message.iter_attachments())
        assert delivery_kenmerk(kenmerk, recipient.contact_id).replace("/", "-") in (
            part.get_filename() or ""
        )
    assert composer.pdfs is not None and composer.pdfs.laid_out == 0  # every one came from the store


def test_send_of_a_pdf_campaign_attaches_each_letter(
    registry: Engine,
    db_url: str,
    tmp_path: Path,
    runner: CliRunner,
    smtpd: Callable[..., SmtpServer],
) -> None:
    campaign = _campaign(registry, tmp_path)
    server = smtpd()
    env = {
        "OUTREACH_DATABASE_URL": db_url,
        "OUTREACH_TEMPLATES": str(campaign.folder.parent),
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(server.port),
        "OUTREACH_SMTP_TLS": "none",
        "OUTREACH_PDF_CACHE": str(tmp_path / "store"),
    }
    args = ["send", "--campaign", campaign.slug, "--yes", "--ignore-window"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert len(server.handler.messages) == 2
    store = PdfStore(tmp_path / "store")
    stored = {path.read_bytes() for path in store.folder.glob("*/*.pdf")}
    for received in server.handler.messages:
        message = email.message_from_bytes(received.content, policy=email.policy.SMTP)
        (part,) = list(message.iter_attachments())
        assert part.get_content_type() == "application/pdf"
        assert part.get_payload(decode=True) in stored
        assert "Ons kenmerk: HVK/" in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    again = runner.invoke(app, args, env=env)
    assert again.exit_code == 0 and len(server.handler.messages) == 2  # exactly once
