"""`outreach track reply|optin|optout|note`: responses recorded by hand, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database, session_scope
from outreach.errors import NotFoundError
from outreach.models import Contact, Delivery, DeliveryState, Event, EventKind, Suppression
from outreach.registry.keys import email_hash
from outreach.tracking.classify import classify
from outreach.tracking.events import record_inbound, track
from tests.factories import add_contact, load_reference
from tests.fixtures_tracking import add_campaign, add_delivery, mail_fixture

WETHOUDER = "P.deVries@Utrecht.nl"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, db_url: str) -> str:
    if request.param == "sqlite":
        return db_url
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = open_database(url)
    load_reference(engine)
    yield engine
    engine.dispose()


def _two_campaigns(engine: Engine) -> dict[str, int]:
    """A wethouder with a sent letter in 2025 and a pending one in 2026; a second office (griffier of
    another municipality) with the same address and a deferred letter."""
    with session_scope(engine) as session:
        old = add_campaign(session, "verkiezingen-2025", "Verkiezingen 2025")
        new = add_campaign(session, "jeugdzorg-2026", "Jeugdzorg 2026")
        wethouder = add_contact(session, WETHOUDER, role="wethouder", cbs_code="GM0344", achternaam="Vries")
        other = add_contact(session, WETHOUDER, role="griffier", cbs_code="GM0307")
        colleague = add_contact(session, "j.bakker@utrecht.nl", role="raadslid", cbs_code="GM0344")
        ids = {
            "sent": add_delivery(session, old, wethouder).id,
            "pending": add_delivery(session, new, wethouder, state=DeliveryState.PENDING).id,
            "deferred": add_delivery(session, new, other, state=DeliveryState.DEFERRED).id,
            "colleague": add_delivery(session, new, colleague, state=DeliveryState.PENDING).id,
        }
    return {k: v for k, v in ids.items() if v is not None}


def _get(engine: Engine, model: Any, ident: int) -> Any:
    with Session(engine) as session:
        return session.get(model, ident)


def _all(engine: Engine, model: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model).order_by(model.id)).all())


def test_reply_goes_on_the_letter_of_the_campaign(db: Engine) -> None:
    ids = _two_campaigns(db)
    result = track(
        db, EventKind.REPLY, "p.devries@utrecht.nl", campaign="verkiezingen-2025", text="Belt terug"
    )
    event = _get(db, Event, result.event_id)
    assert (event.kind, event.delivery_id, event.source, event.text) == (
        "reply",
        ids["sent"],
        "manual",
        "Belt terug",
    )
    assert result.campaign == "verkiezingen-2025"


def test_without_campaign_the_last_letter_sent_is_used(db: Engine) -> None:
    ids = _two_campaigns(db)
    result = track(db, EventKind.NOTE, WETHOUDER, text="Gesproken op het congres")
    assert result.delivery_id == ids["sent"] and result.campaign == "verkiezingen-2025"


def test_opt_out_suppresses_at_once_and_skips_unsent_letters_of_every_campaign(db: Engine) -> None:
    ids = _two_campaigns(db)
    result = track(db, EventKind.OPT_OUT, "P.DEVRIES@utrecht.nl", text="Per telefoon")
    assert result.suppressed and result.skipped == 2
    suppression = _all(db, Suppression)[0]
    assert (suppression.key_hash, suppression.email_key) == (
        email_hash("p.devries@utrecht.nl"),
        "p.devries@utrecht.nl",
    )
    assert (suppression.reason, suppression.source) == ("opt-out", "manual")
    for name in ("pending", "deferred"):
        delivery = _get(db, Delivery, ids[name])
        assert (delivery.state, delivery.skip_reason) == ("skipped", "suppressed: opt-out")
    assert _get(db, Delivery, ids["sent"]).state == "sent"  # what went out stays sent
    assert _get(db, Delivery, ids["colleague"]).state == "pending"  # nobody else is touched

    again = track(db, EventKind.OPT_OUT, WETHOUDER)
    assert not again.suppressed and again.skipped == 0
    assert len(_all(db, Suppression)) == 1


def test_opt_out_of_an_unknown_address_is_still_honoured(db: Engine) -> None:
    result = track(db, EventKind.OPT_OUT, "onbekend@example.nl")
    assert result.suppressed and not result.known_contact
    assert _get(db, Event, result.event_id).contact_id is None


def test_opt_in_records_what_and_when_and_lifts_an_opt_out_only(db: Engine) -> None:
    _two_campaigns(db)
    track(db, EventKind.OPT_OUT, WETHOUDER)
    when = datetime(2026, 4, 1, 12, 0)
    result = track(db, EventKind.OPT_IN, WETHOUDER, text="Nieuwsbrief jeugdzorg", at=when)
    assert result.lifted
    assert _all(db, Suppression) == []
    contacts = [c for c in _all(db, Contact) if c.email_key == "p.devries@utrecht.nl"]
    assert len(contacts) == 2
    assert {(c.opted_in_at, c.opt_in_topics) for c in contacts} == {(when, "Nieuwsbrief jeugdzorg")}

    with session_scope(db) as session:
        session.add(
            Suppression(
                key_hash=email_hash("j.bakker@utrecht.nl"),
                email_key="j.bakker@utrecht.nl",
                reason="hard-bounce",
                source="imap",
            )
        )
    assert not track(db, EventKind.OPT_IN, "j.bakker@utrecht.nl").lifted
    assert [s.reason for s in _all(db, Suppression)] == ["hard-bounce"]


def test_unknown_contact_and_campaign_are_clear_errors(db: Engine) -> None:
    _two_campaigns(db)
    with pytest.raises(NotFoundError, match=r"no contact with e-mail iemand@example\.nl"):
        track(db, EventKind.REPLY, "iemand@example.nl")
    with pytest.raises(NotFoundError, match="campaign 'bestaat-niet'"):
        track(db, EventKind.REPLY, WETHOUDER, campaign="bestaat-niet")
    assert _all(db, Event) == []


def test_an_unmatched_inbox_message_is_attached_by_hand(db: Engine) -> None:
    ids = _two_campaigns(db)
    with db.begin() as conn:
        unmatched = record_inbound(
            conn, classify(mail_fixture("unrelated.eml")), dedupe_key="imap:x/INBOX:1:9", received_at=None
        )
    assert unmatched.kind is EventKind.UNMATCHED and unmatched.event_id is not None
    result = track(
        db, EventKind.REPLY, WETHOUDER, campaign="verkiezingen-2025", unmatched_id=unmatched.event_id
    )
    assert result.event_id == unmatched.event_id
    event = _get(db, Event, unmatched.event_id)
    assert (event.kind, event.delivery_id, event.source) == ("reply", ids["sent"], "imap")
    assert event.dedupe_key == "imap:x/INBOX:1:9"  # a re-sync still recognises it
    with pytest.raises(NotFoundError, match="not an unmatched inbox message"):
        track(db, EventKind.NOTE, WETHOUDER, unmatched_id=unmatched.event_id)


@pytest.fixture
def amsterdam(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Amsterdam")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("amsterdam")
def test_cli_track_commands(engine: Engine, db_url: str, runner: CliRunner) -> None:
    load_reference(engine)
    ids = _two_campaigns(engine)
    base = ["--database", db_url, "track"]

    reply = runner.invoke(
        app,
        [
            *base,
            "reply",
            "--contact",
            WETHOUDER,
            "--campaign",
            "verkiezingen-2025",
            "--text",
            "Graag een afspraak",
            "--at",
            "2026-03-12 14:30",
        ],
    )
    assert reply.exit_code == 0, reply.output
    assert reply.stdout.startswith("Recorded reply for p.devries@utrecht.nl (campaign verkiezingen-2025")
    event = _all(engine, Event)[0]
    assert event.delivery_id == ids["sent"]
    # --at is the local (Dutch) time the staff member typed; 14:30 CET is 13:30 UTC.
    assert event.occurred_at == datetime(2026, 3, 12, 13, 30)

    optout = runner.invoke(app, [*base, "optout", "--contact", WETHOUDER])
    assert optout.exit_code == 0, optout.output
    assert "now suppressed" in optout.stdout and "2 letter(s) not yet sent" in optout.stdout

    missing = runner.invoke(app, [*base, "note", "--contact", "niemand@example.nl", "--text", "x"])
    assert missing.exit_code == 1
    assert missing.stderr.startswith("Error: no contact with e-mail niemand@example.nl")

    bad_date = runner.invoke(app, [*base, "note", "--contact", WETHOUDER, "--at", "12 maart"])
    assert bad_date.exit_code == 2

    optin = runner.invoke(app, [*base, "optin", "--contact", WETHOUDER, "--text", "Nieuwsbrief"])
    assert optin.exit_code == 0 and "opt-out of this address is lifted" in optin.stdout


def _bounce_letter(db: Engine, state: DeliveryState) -> int:
    with session_scope(db) as session:
        campaign = add_campaign(session)
        contact = add_contact(session, "k.smit@haarlem.nl", cbs_code="GM0392")
        letter = add_delivery(session, campaign, contact, token="bouncepostfix234", state=state)
        assert letter.id is not None
        return letter.id


def test_a_bounce_settles_a_letter_in_state_unknown(db: Engine) -> None:
    letter = _bounce_letter(db, DeliveryState.UNKNOWN)
    with db.begin() as conn:
        outcome = record_inbound(
            conn,
            classify(mail_fixture("dsn-postfix-hard.eml")),
            dedupe_key="imap:x/INBOX:1:1",
            received_at=None,
        )
    assert outcome.failed_delivery and outcome.suppressed
    assert _get(db, Delivery, letter).state == DeliveryState.FAILED.value


def test_a_bounced_griffie_copy_suppresses_the_griffie_not_the_letter(db: Engine) -> None:
    # griffie_copy = "cc": one message, one token, two recipients; only the copy bounced.
    letter = _bounce_letter(db, DeliveryState.SENT)
    raw = mail_fixture("dsn-postfix-hard.eml").replace(b"k.smit@haarlem.nl", b"griffie@haarlem.nl")
    with db.begin() as conn:
        outcome = record_inbound(conn, classify(raw), dedupe_key="imap:x/INBOX:1:2", received_at=None)
    assert outcome.delivery_id == letter and outcome.kind is EventKind.BOUNCE
    assert not outcome.failed_delivery and outcome.suppressed
    assert _get(db, Delivery, letter).state == DeliveryState.SENT.value
    assert [(s.email_key, s.reason) for s in _all(db, Suppression)] == [("griffie@haarlem.nl", "hard-bounce")]


def test_an_unsubscribe_with_the_letters_token_suppresses_the_addressee_not_the_sender(db: Engine) -> None:
    # A secretary uses the mailto link of the wethouder's letter: the token says whose letter it was.
    with session_scope(db) as session:
        campaign = add_campaign(session)
        wethouder = add_contact(session, "e.vandam@groningen.nl", cbs_code="GM0014", role="wethouder")
        letter = add_delivery(session, campaign, wethouder, token="unsubscribe23456")
    raw = mail_fixture("unsubscribe.eml").replace(b"e.vandam@groningen.nl", b"secretariaat@groningen.nl")
    with db.begin() as conn:
        outcome = record_inbound(conn, classify(raw), dedupe_key="imap:x/INBOX:1:3", received_at=None)
    assert (outcome.kind, outcome.delivery_id, outcome.suppressed) == (EventKind.OPT_OUT, letter.id, True)
    assert [s.email_key for s in _all(db, Suppression)] == ["e.vandam@groningen.nl"]
