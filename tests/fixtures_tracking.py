"""Fixtures for the tracking tests: a real Dovecot on 127.0.0.1 and the fixture messages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from outreach.db import session_scope
from outreach.letters.ids import message_id, new_token
from outreach.models import Campaign, Contact, Delivery, DeliveryState
from tests.dovecot import DovecotServer, DovecotUnavailable, Mailbox
from tests.factories import add_contact, load_reference

MAIL_DIR = Path(__file__).resolve().parent / "data" / "mail"


def mail_fixture(name: str) -> bytes:
    """A fixture message from tests/data/mail, as a mail client wrote it."""
    return (MAIL_DIR / name).read_bytes()


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[DovecotServer]:
    """A Dovecot of this test alone (configuration, certificate and maildir under tmp_path), started
    here and stopped when the test ends."""
    try:
        server = DovecotServer(tmp_path / "dovecot")
    except DovecotUnavailable as exc:
        pytest.skip(f"no IMAP server for the tracking tests: {exc}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> Mailbox:
    """The charity's mailbox on the test Dovecot, INBOX empty."""
    return dovecot.mailbox


@dataclass(frozen=True)
class Letter:
    """A letter of the fixture campaign: who got it and the token its Message-ID carries."""

    token: str
    email: str
    cbs_code: str
    role: str
    party: str | None = None


# The letters the fixture messages in tests/data/mail answer, bounce or unsubscribe from.
LETTERS = {
    "reply-outlook.eml": Letter("replyoutlook2345", "j.devries@utrecht.nl", "GM0344", "wethouder"),
    "reply-gmail.eml": Letter(
        "replygmail234567", "fractie.groenlinks.zwolle@gmail.com", "GM0193", "raadslid", "GroenLinks"
    ),
    "oof-exchange.eml": Letter("oofexchange23456", "p.jansen@amersfoort.nl", "GM0307", "wethouder"),
    "oof-gmail.eml": Letter("oofgmail23456777", "m.visser.raad@gmail.com", "GM0150", "raadslid", "VVD"),
    "dsn-postfix-hard.eml": Letter("bouncepostfix234", "k.smit@haarlem.nl", "GM0392", "raadslid", "D66"),
    "ndr-exchange.eml": Letter("bounceexchange23", "a.mulder@westland.nl", "GM1783", "raadslid", "CDA"),
    "dsn-postfix-soft.eml": Letter("softbouncefull22", "h.degroot@leiden.nl", "GM0546", "raadslid", "PvdA"),
    "bounce-qmail.eml": Letter("legacyqmail23456", "raadslid.dekker@zaannet.nl", "GM0479", "raadslid", "SP"),
    "unsubscribe.eml": Letter("unsubscribe23456", "e.vandam@groningen.nl", "GM0014", "raadslid", "VVD"),
}
UNSUBSCRIBE_ADDRESS = "afmelden@hetvergetenkind.nl"
SENT_AT = datetime(2026, 3, 9, 9, 0, 0)


def add_campaign(session: Session, slug: str = "jeugdzorg-2026", name: str = "Jeugdzorg 2026") -> Campaign:
    campaign = Campaign(slug=slug, name=name)
    session.add(campaign)
    session.flush()
    return campaign


def add_delivery(
    session: Session,
    campaign: Campaign,
    contact: Contact,
    *,
    token: str | None = None,
    state: DeliveryState = DeliveryState.SENT,
    domain: str = "hetvergetenkind.nl",
    sent_at: datetime | None = SENT_AT,
) -> Delivery:
    """A delivery as the sender leaves it: token and Message-ID set when first claimed (so a pending
    letter has none), sent_at when sent."""
    claimed = state is not DeliveryState.PENDING
    token = token or (new_token() if claimed else None)
    delivery = Delivery(
        campaign_id=campaign.id or 0,
        contact_id=contact.id,
        state=state.value,
        token=token,
        message_id=message_id(token, domain) if token else None,
        attempts=1 if claimed else 0,
        sent_at=sent_at if state in (DeliveryState.SENT, DeliveryState.FAILED) else None,
    )
    session.add(delivery)
    session.flush()
    return delivery


def seed_letters(engine: Engine, slug: str = "jeugdzorg-2026") -> dict[str, int]:
    """The fixture campaign: one sent letter per fixture message; returns delivery ids by token."""
    load_reference(engine)
    ids: dict[str, int] = {}
    with session_scope(engine) as session:
        campaign = add_campaign(session, slug)
        for letter in LETTERS.values():
            contact = add_contact(
                session, letter.email, role=letter.role, cbs_code=letter.cbs_code, party=letter.party
            )
            delivery = add_delivery(session, campaign, contact, token=letter.token)
            assert delivery.id is not None
            ids[letter.token] = delivery.id
    return ids
