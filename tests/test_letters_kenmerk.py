"""The kenmerk of each letter: stored once per campaign, unique per delivery, found back by the tracker."""

from __future__ import annotations

from email.message import EmailMessage

from sqlalchemy import Engine, select
from sqlmodel import Session

from outreach.db import session_scope
from outreach.letters.campaign_file import load_campaign
from outreach.letters.kenmerk import (
    campaign_kenmerk,
    delivery_kenmerk,
    find_kenmerk,
    store_campaign_kenmerk,
)
from outreach.letters.recipients import table
from outreach.models import Campaign, Event, EventKind
from outreach.tracking.classify import classify
from outreach.tracking.events import record_inbound
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES
from tests.fixtures_tracking import add_campaign, add_delivery


def _reply(subject: str, body: str, sender: str = "postbus@utrecht.nl") -> bytes:
    message = EmailMessage()
    message["From"] = f"Gemeente Utrecht <{sender}>"
    message["To"] = "wereldvanaandacht@hetvergetenkind.nl"
    message["Subject"] = subject
    message["Message-ID"] = "<doorgestuurd-1@utrecht.nl>"
    message.set_content(body)
    return message.as_bytes()


def _campaign_with_letters(engine: Engine) -> tuple[int, dict[str, int], dict[str, int]]:
    """The wethouders campaign with a stored kenmerk and two letters sent."""
    config = load_campaign(TEMPLATES, "wethouders-jeugd")
    with session_scope(engine) as session:
        campaign = add_campaign(session, "wethouders-jeugd", config.name)
        a = add_contact(session, "a.dekker@utrecht.nl", role="wethouder", achternaam="Dekker")
        b = add_contact(session, "b.smit@utrecht.nl", role="wethouder", achternaam="Smit")
        deliveries = {
            "a": int(add_delivery(session, campaign, a).id or 0),
            "b": int(add_delivery(session, campaign, b).id or 0),
        }
        contacts = {"a": int(a.id or 0), "b": int(b.id or 0)}
        campaign_id = int(campaign.id or 0)
    with engine.begin() as conn:
        store_campaign_kenmerk(conn, config, campaign_id)
    return campaign_id, deliveries, contacts


def test_the_campaign_kenmerk_is_stored_once_and_survives_a_new_prefix(registry: Engine) -> None:
    config = load_campaign(TEMPLATES, "wethouders-jeugd")
    with registry.connect() as conn:
        draft = campaign_kenmerk(conn, config)
    assert draft.startswith("HVK/") and draft.endswith("/0000")  # no campaign row yet
    campaign_id, _, _ = _campaign_with_letters(registry)
    with registry.connect() as conn:
        stored = conn.execute(select(table(Campaign).c.kenmerk)).scalar_one()
    year = stored.split("/")[1]
    assert stored == f"HVK/{year}/{campaign_id:04d}"
    renamed = config.__class__(**{**config.__dict__, "kenmerk_prefix": "XYZ"})
    with registry.begin() as conn:
        assert store_campaign_kenmerk(conn, renamed, campaign_id) == stored
        assert campaign_kenmerk(conn, renamed) == stored


def test_every_delivery_has_its_own_kenmerk(registry: Engine) -> None:
    _, deliveries, contacts = _campaign_with_letters(registry)
    with registry.connect() as conn:
        base = conn.execute(select(table(Campaign).c.kenmerk)).scalar_one()
        found = {
            who: find_kenmerk(conn, f"Uw brief {delivery_kenmerk(base, contacts[who])} ontvangen")
            for who in ("a", "b")
        }
    assert {who: m.delivery_id for who, m in found.items() if m} == deliveries


def test_a_forwarded_reply_that_quotes_the_kenmerk_is_attached_to_that_letter(registry: Engine) -> None:
    _, deliveries, contacts = _campaign_with_letters(registry)
    with registry.connect() as conn:
        base = conn.execute(select(table(Campaign).c.kenmerk)).scalar_one()
    kenmerk = delivery_kenmerk(base, contacts["b"])
    raw = _reply(
        "Doorgestuurd: uw brief over de jeugdzorg",
        f"Goedemiddag,\n\nDe wethouder vraagt ons u te antwoorden op uw brief met kenmerk {kenmerk}.\n"
        "Zij komt graag met u in gesprek.\n\nMet vriendelijke groet,\nBestuurssecretariaat\n",
    )
    inbound = classify(raw)
    assert inbound.kind is EventKind.REPLY and inbound.kenmerken == (kenmerk,)
    with registry.begin() as conn:
        outcome = record_inbound(conn, inbound, dedupe_key="imap:test:1:1", received_at=None)
    assert outcome.kind is EventKind.REPLY
    assert outcome.delivery_id == deliveries["b"]
    with Session(registry) as session:
        event = session.get(Event, outcome.event_id)
        assert event is not None and event.contact_id == contacts["b"]


def test_a_kenmerk_in_the_subject_is_enough(registry: Engine) -> None:
    _, deliveries, contacts = _campaign_with_letters(registry)
    with registry.connect() as conn:
        base = conn.execute(select(table(Campaign).c.kenmerk)).scalar_one()
    raw = _reply(
        f"RE: {delivery_kenmerk(base, contacts['a'])}", "Dank voor uw brief.", sender="x@example.org"
    )
    with registry.begin() as conn:
        outcome = record_inbound(conn, classify(raw), dedupe_key="imap:test:1:2", received_at=None)
    assert (outcome.kind, outcome.delivery_id) == (EventKind.REPLY, deliveries["a"])


def test_a_kenmerk_that_is_not_ours_stays_unmatched(registry: Engine) -> None:
    _, _, contacts = _campaign_with_letters(registry)
    for text in (
        f"Uw kenmerk HVK/2019/0001/{contacts['a']:04d}",  # another campaign number
        "Ons kenmerk ABC/2026/0001/99999",
        "geen kenmerk",
    ):
        with registry.begin() as conn:
            outcome = record_inbound(
                conn, classify(_reply("Vraag", text)), dedupe_key=f"imap:t:{text}", received_at=None
            )
        assert outcome.kind is EventKind.UNMATCHED and outcome.delivery_id is None, text
