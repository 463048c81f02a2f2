"""`outreach contacts export|forget|purge`: the person's rights, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database, session_scope
from outreach.errors import NotFoundError
from outreach.letters.pdf_store import PdfStore
from outreach.models import Contact, Delivery, DeliveryState, Event, EventKind, Suppression
from outreach.registry.keys import email_hash
from outreach.tracking.classify import classify
from outreach.tracking.events import record_inbound, track
from outreach.tracking.privacy import export_person, forget_person, purge_ended
from outreach.tracking.report import campaign_report
from tests.factories import add_contact, load_reference
from tests.fixtures_tracking import add_campaign, add_delivery

CONTACT = SQLModel.metadata.tables["contact"]
PERSON = "p.devries@utrecht.nl"
COLLEAGUE = "j.bakker@utrecht.nl"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_database(url)
    load_reference(engine)
    yield engine
    engine.dispose()


def seed(engine: Engine) -> dict[str, int]:
    """The person in two offices, a letter that bounced once and was answered, an unmatched mail from
    them, an opt-out; a colleague with a reply of their own."""
    with session_scope(engine) as session:
        campaign = add_campaign(session, "jeugdzorg-2026")
        wethouder = add_contact(
            session, PERSON, role="wethouder", cbs_code="GM0344", achternaam="Vries", tussenvoegsel="de",
            term_end=date(2026, 3, 25),
        )  # fmt: skip
        griffier = add_contact(session, PERSON.upper(), role="griffier", cbs_code="GM0307")
        colleague = add_contact(
            session, COLLEAGUE, role="raadslid", cbs_code="GM0344", term_end=date(2030, 3, 1)
        )
        letter = add_delivery(session, campaign, wethouder, token="replyoutlook2345")
        letter.last_error = f"550 5.2.1 <{PERSON}>: mailbox disabled"
        second = add_delivery(session, campaign, griffier, state=DeliveryState.PENDING)
        other = add_delivery(session, campaign, colleague)
        ids = {"letter": letter.id, "second": second.id, "other": other.id, "wethouder": wethouder.id}
    track(engine, EventKind.REPLY, PERSON, campaign="jeugdzorg-2026", text="Ik bel u volgende week")
    track(engine, EventKind.REPLY, COLLEAGUE, campaign="jeugdzorg-2026", text="Dank, wij komen erop terug")
    unmatched = (
        f"From: {PERSON}\nTo: brieven@hetvergetenkind.nl\nSubject: Vraag\n"
        "Message-ID: <abc@utrecht.nl>\n\nHoi\n"
    )
    with engine.begin() as conn:
        record_inbound(conn, classify(unmatched.encode()), dedupe_key="imap:m/INBOX:1:1", received_at=None)
    track(engine, EventKind.OPT_OUT, PERSON)
    return {k: v for k, v in ids.items() if v is not None}


def _all(engine: Engine, model: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model).order_by(model.id)).all())


def test_export_holds_everything_on_the_person(db: Engine) -> None:
    seed(db)
    document = export_person(db, "P.deVries@Utrecht.nl")
    assert document["email"] == PERSON
    assert [(c["role"], c["municipality"]["name"]) for c in document["contacts"]] == [
        ("wethouder", "Utrecht"),
        ("griffier", "Amersfoort"),
    ]
    assert document["contacts"][0]["tussenvoegsel"] == "de"
    assert [(x["campaign"], x["state"]) for x in document["letters"]] == [
        ("jeugdzorg-2026", "sent"),
        ("jeugdzorg-2026", "skipped"),  # skipped by the opt-out
    ]
    kinds = [e["kind"] for e in document["events"]]
    assert sorted(kinds) == ["opt-out", "reply", "unmatched"]
    assert "Dank, wij komen erop terug" not in json.dumps(document)  # nothing of the colleague
    assert document["suppression"]["reason"] == "opt-out"
    json.dumps(document)  # serialisable as is


def test_forget_erases_the_person_and_keeps_a_hashed_suppression(db: Engine) -> None:
    ids = seed(db)
    before = campaign_report(db, "jeugdzorg-2026").totals

    result = forget_person(db, PERSON)

    assert (result.contacts, result.letters, result.suppression) == (2, 2, "opt-out")
    assert [c.email_key for c in _all(db, Contact)] == [COLLEAGUE]
    deliveries = {d.id: d for d in _all(db, Delivery)}
    assert deliveries[ids["letter"]].contact_id is None and deliveries[ids["letter"]].last_error is None
    assert deliveries[ids["other"]].contact_id is not None
    events = _all(db, Event)
    theirs = [e for e in events if e.text != "Dank, wij komen erop terug"]
    assert len(theirs) == 3 and result.events == 3
    assert all(e.text is None and e.reference is None and e.contact_id is None for e in theirs)
    assert sorted(e.kind for e in theirs) == ["opt-out", "reply", "unmatched"]  # still counted
    suppression = _all(db, Suppression)
    assert [(s.key_hash, s.email_key, s.reason) for s in suppression] == [
        (email_hash(PERSON), None, "opt-out")
    ]
    # Nothing readable about the person is left anywhere.
    for model in (Contact, Delivery, Event, Suppression):
        for row in _all(db, model):
            assert PERSON not in json.dumps(row.model_dump(), default=str).casefold()
    # The campaign's numbers do not change.
    assert campaign_report(db, "jeugdzorg-2026").totals == before
    # What is left is a hash: export says so, and a second forget is harmless.
    assert export_person(db, PERSON)["contacts"] == []
    assert forget_person(db, PERSON).contacts == 0


def test_forget_someone_never_suppressed(db: Engine) -> None:
    seed(db)
    assert forget_person(db, COLLEAGUE).suppression == "forgotten"
    reasons = {s.key_hash: (s.email_key, s.reason) for s in _all(db, Suppression)}
    assert reasons[email_hash(COLLEAGUE)] == (None, "forgotten")
    with pytest.raises(NotFoundError):
        export_person(db, "nooit-gezien@example.nl")


def test_deleting_a_contact_sets_its_letters_contact_to_null(db: Engine) -> None:
    # The foreign key is ON DELETE SET NULL; SQLite honours it only with PRAGMA foreign_keys=ON.
    ids = seed(db)
    with db.begin() as conn:
        conn.execute(CONTACT.delete().where(CONTACT.c.id == ids["wethouder"]))
    assert {d.id: d.contact_id for d in _all(db, Delivery)}[ids["letter"]] is None


def test_purge_erases_offices_whose_term_ended(db: Engine) -> None:
    seed(db)
    preview = purge_ended(db, date(2026, 4, 1), dry_run=True)
    assert (preview.contacts, preview.people, preview.dry_run) == (1, 1, True)
    assert len(_all(db, Contact)) == 3

    result = purge_ended(db, date(2026, 4, 1))
    assert result.contacts == 1
    remaining = sorted((c.email_key, c.role) for c in _all(db, Contact))
    assert remaining == [(COLLEAGUE, "raadslid"), (PERSON, "griffier")]
    # The person still holds an office, so their opt-out stays readable.
    assert [s.email_key for s in _all(db, Suppression)] == [PERSON]
    reply = next(e for e in _all(db, Event) if e.kind == "reply" and e.text != "Dank, wij komen erop terug")
    assert reply.text is None and reply.contact_id is None


def test_cli_export_forget_purge(engine: Engine, db_url: str, runner: CliRunner) -> None:
    load_reference(engine)
    seed(engine)
    base = ["--database", db_url, "contacts"]

    exported = runner.invoke(app, [*base, "export", PERSON])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout)["email"] == PERSON

    refused = runner.invoke(app, [*base, "forget", PERSON], input="n\n")
    assert refused.exit_code == 1
    assert len(_all(engine, Contact)) == 3

    forgotten = runner.invoke(app, [*base, "forget", PERSON], input="y\n")
    assert forgotten.exit_code == 0, forgotten.output
    assert "2 contact row(s) deleted" in forgotten.stdout
    assert "hashed suppression (opt-out)" in forgotten.stdout

    dry = runner.invoke(app, [*base, "purge", "--ended-before", "2031-01-01", "--dry-run"])
    assert dry.exit_code == 0 and dry.stdout.startswith("Would erase 1 contact row(s)")
    purged = runner.invoke(app, [*base, "purge", "--ended-before", "2031-01-01", "--yes"])
    assert purged.exit_code == 0 and purged.stdout.startswith("Erased 1 contact row(s)")
    assert _all(engine, Contact) == []

    bad = runner.invoke(app, [*base, "purge", "--ended-before", "maart 2026"])
    assert bad.exit_code == 2
    unknown = runner.invoke(app, [*base, "export", "nooit-gezien@example.nl"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith(
        "Error: nothing is held on nooit-gezien@example.nl"
    )


def test_forget_and_purge_empty_the_pdf_letter_store(
    runner: CliRunner, engine: Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored PDF letter names its recipient but its key does not say whose it is: erasure empties it."""
    load_reference(engine)
    seed(engine)
    store = PdfStore(tmp_path / "store")
    monkeypatch.setenv("OUTREACH_PDF_CACHE", str(store.folder))
    base = ["--database", db_url, "contacts"]
    store.put("ab" + "0" * 62, b"%PDF-1.7 Geachte mevrouw")
    forgotten = runner.invoke(app, [*base, "forget", PERSON, "--yes"])
    assert forgotten.exit_code == 0, forgotten.output
    assert "Removed 1 stored PDF letter(s)" in forgotten.stdout
    assert list(store.folder.glob("*/*.pdf")) == []

    store.put("cd" + "0" * 62, b"%PDF-1.7 Beste raadslid")
    nothing_ended = runner.invoke(app, [*base, "purge", "--ended-before", "2000-01-01", "--yes"])
    assert nothing_ended.exit_code == 0 and store.has("cd" + "0" * 62)  # nobody erased: store kept
    purged = runner.invoke(app, [*base, "purge", "--ended-before", "2031-01-01", "--yes"])
    assert purged.exit_code == 0, purged.output
    assert not store.has("cd" + "0" * 62)
