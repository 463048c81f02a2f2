"""`outreach inbox sync` against a real Dovecot on 127.0.0.1 (tests/dovecot.py)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database
from outreach.errors import ConfigError, ImapError
from outreach.models import Delivery, DeliveryState, Event, EventKind, InboxCursor, Suppression
from outreach.registry.keys import email_hash
from outreach.tracking.classify import ClassifyOptions
from outreach.tracking.imap_sync import sync_inbox, unsubscribe_addresses
from outreach.tracking.report import campaign_report
from tests.conftest import REPO
from tests.dovecot import Mailbox
from tests.fixtures_tracking import LETTERS, UNSUBSCRIBE_ADDRESS, mail_fixture, seed_letters

OPTIONS = ClassifyOptions(unsubscribe_addresses=frozenset({UNSUBSCRIBE_ADDRESS}))
ALL_MESSAGES = sorted([*LETTERS, "unrelated.eml"])


def _events(engine: Engine) -> list[Event]:
    with Session(engine) as session:
        return list(session.exec(select(Event).order_by(col(Event.id))).all())


def _by_delivery(engine: Engine) -> dict[int | None, Event]:
    return {e.delivery_id: e for e in _events(engine)}


def _deliveries(engine: Engine) -> dict[int | None, Delivery]:
    with Session(engine) as session:
        return {d.id: d for d in session.exec(select(Delivery)).all()}


def _suppressions(engine: Engine) -> dict[str | None, str]:
    with Session(engine) as session:
        rows = session.exec(select(Suppression)).all()
        return {s.email_key: s.reason for s in rows}


def test_sync_records_every_fixture_message(engine: Engine, mailbox: Mailbox) -> None:
    ids = seed_letters(engine)
    for name in ALL_MESSAGES:
        mailbox.append(mail_fixture(name))

    result = sync_inbox(engine, mailbox.settings(), options=OPTIONS)

    assert [(f.folder, f.new_messages, f.recorded) for f in result.folders] == [("INBOX", 10, 10)]
    events = _by_delivery(engine)
    expected = {
        "reply-outlook.eml": (EventKind.REPLY, None, None),
        "reply-gmail.eml": (EventKind.REPLY, None, None),
        "oof-exchange.eml": (EventKind.AUTO_REPLY, None, None),
        "oof-gmail.eml": (EventKind.AUTO_REPLY, None, None),
        "dsn-postfix-hard.eml": (EventKind.BOUNCE, "hard", "5.1.1"),
        "ndr-exchange.eml": (EventKind.BOUNCE, "hard", "5.1.10"),
        "dsn-postfix-soft.eml": (EventKind.BOUNCE, "soft", "4.2.2"),
        "bounce-qmail.eml": (EventKind.BOUNCE, "hard", "5.1.1"),
        "unsubscribe.eml": (EventKind.OPT_OUT, None, None),
    }
    for name, (kind, bounce_type, status) in expected.items():
        event = events[ids[LETTERS[name].token]]
        assert (event.kind, event.bounce_type, event.status_code) == (kind.value, bounce_type, status), name
        assert event.source == "imap"
        assert event.contact_id is not None and event.campaign_id is not None
    unmatched = events[None]
    assert unmatched.kind == EventKind.UNMATCHED.value
    assert unmatched.text == "From: lotte.hermans@ziggo.nl; Subject: Vraag over vrijwilligerswerk"
    assert [e.summary for e in result.unmatched] == [unmatched.text]

    # The reply's own words are kept as its summary, with the time the person wrote it (UTC).
    gmail = events[ids["replygmail234567"]]
    assert gmail.text is not None and "motie indienen" in gmail.text
    assert gmail.occurred_at == datetime(2026, 3, 11, 21, 5, 21)
    assert gmail.reference == "<CAH+3kz7N4qJ0Jq5bPZ_x9KmYtX3vQ7w2Lr8n5Fh0cQ1pA@mail.gmail.com>"

    # Hard bounces fail the letter and suppress the address; the soft bounce does neither.
    deliveries = _deliveries(engine)
    failed = {t for t, i in ids.items() if deliveries[i].state == DeliveryState.FAILED.value}
    assert failed == {"bouncepostfix234", "bounceexchange23", "legacyqmail23456"}
    assert deliveries[ids["softbouncefull22"]].state == DeliveryState.SENT.value
    assert _suppressions(engine) == {
        "k.smit@haarlem.nl": "hard-bounce",
        "a.mulder@westland.nl": "hard-bounce",
        "raadslid.dekker@zaannet.nl": "hard-bounce",
        "e.vandam@groningen.nl": "opt-out",
    }
    assert result.suppressed == 4 and result.failed_deliveries == 3

    # The report counts letters, not messages.
    totals = campaign_report(engine, "jeugdzorg-2026").totals
    assert (totals.letters, totals.sent, totals.failed, totals.delivered) == (9, 9, 3, 6)
    assert (totals.bounced, totals.replied, totals.auto_replied, totals.opted_out) == (4, 2, 2, 1)
    assert totals.response_rate == round(2 / 6, 4)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_engine(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_database(url)
    yield engine
    engine.dispose()


def test_a_second_sync_adds_nothing_and_reads_only_new_mail(any_engine: Engine, mailbox: Mailbox) -> None:
    engine = any_engine
    seed_letters(engine)
    for name in ("reply-outlook.eml", "dsn-postfix-hard.eml"):
        mailbox.append(mail_fixture(name))
    sync_inbox(engine, mailbox.settings(), options=OPTIONS)
    before = [(e.id, e.kind, e.dedupe_key) for e in _events(engine)]

    again = sync_inbox(engine, mailbox.settings(), options=OPTIONS)
    assert again.events == [] and again.folders[0].new_messages == 0
    assert [(e.id, e.kind, e.dedupe_key) for e in _events(engine)] == before

    mailbox.append(mail_fixture("oof-gmail.eml"))
    third = sync_inbox(engine, mailbox.settings(), options=OPTIONS)
    assert [(f.new_messages, f.recorded) for f in third.folders] == [(1, 1)]
    assert [e.kind for e in third.events] == [EventKind.AUTO_REPLY]
    with Session(engine) as session:
        cursor = session.exec(select(InboxCursor)).one()
    assert cursor.mailbox == f"{mailbox.username}@127.0.0.1/INBOX"
    assert cursor.last_uid == 3
    assert [e.dedupe_key for e in _events(engine)][-1] == f"imap:{cursor.mailbox}:{cursor.uidvalidity}:3"


def test_sync_leaves_messages_unread(engine: Engine, mailbox: Mailbox) -> None:
    seed_letters(engine)
    mailbox.append(mail_fixture("reply-outlook.eml"))
    sync_inbox(engine, mailbox.settings(), options=OPTIONS)
    client = mailbox.client()
    try:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search(["ALL"]))
    finally:
        client.logout()
    assert all(b"\\Seen" not in f for f in flags.values())


def test_uidvalidity_change_reads_the_folder_again_without_duplicates(
    engine: Engine, mailbox: Mailbox
) -> None:
    seed_letters(engine)
    settings = mailbox.settings(folders=("INBOX", "Archief"))
    mailbox.append(mail_fixture("reply-gmail.eml"), folder="Archief")
    first = sync_inbox(engine, settings, options=OPTIONS)
    validity = first.folders[1].uidvalidity

    mailbox.recreate_folder("Archief")  # e.g. a restore from backup: same mail, new UIDVALIDITY
    mailbox.append(mail_fixture("reply-gmail.eml"), folder="Archief")
    mailbox.append(mail_fixture("reply-outlook.eml"), folder="Archief")
    second = sync_inbox(engine, settings, options=OPTIONS)

    archive = second.folders[1]
    assert archive.uidvalidity != validity and archive.reset
    assert (archive.new_messages, archive.recorded, archive.duplicates) == (2, 1, 1)
    assert sorted(e.kind for e in _events(engine)) == [EventKind.REPLY.value] * 2


def test_a_message_moved_to_another_synced_folder_is_recorded_once(engine: Engine, mailbox: Mailbox) -> None:
    seed_letters(engine)
    mailbox.append(mail_fixture("reply-outlook.eml"))
    settings = mailbox.settings(folders=("INBOX", "Verwerkt"))
    mailbox.append(mail_fixture("unrelated.eml"), folder="Verwerkt")
    sync_inbox(engine, settings, options=OPTIONS)
    mailbox.append(mail_fixture("reply-outlook.eml"), folder="Verwerkt")  # staff filed it
    result = sync_inbox(engine, settings, options=OPTIONS)
    assert result.events == [] and result.folders[1].duplicates == 1
    assert len(_events(engine)) == 2


def test_starttls_and_plain_connections(engine: Engine, mailbox: Mailbox) -> None:
    seed_letters(engine)
    mailbox.append(mail_fixture("reply-outlook.eml"))
    assert len(sync_inbox(engine, mailbox.settings(tls="starttls"), options=OPTIONS).events) == 1
    assert sync_inbox(engine, mailbox.settings(tls="none"), options=OPTIONS).events == []


def test_untrusted_certificate_is_refused_with_a_hint(engine: Engine, mailbox: Mailbox) -> None:
    with pytest.raises(ImapError) as info:
        sync_inbox(engine, mailbox.settings(ca_file=False))
    assert f"127.0.0.1:{mailbox.server.imaps_port}" in info.value.message
    assert "certificate is not trusted" in info.value.message
    assert info.value.hint is not None and "OUTREACH_IMAP_CA_FILE" in info.value.hint
    with pytest.raises(ImapError, match="certificate is not trusted"):
        sync_inbox(engine, mailbox.settings(tls="starttls", ca_file=False))


def test_wrong_password_names_the_user_never_the_password(engine: Engine, mailbox: Mailbox) -> None:
    settings = dataclasses.replace(mailbox.settings(), imap_password="not-the-password")
    with pytest.raises(ImapError) as info:
        sync_inbox(engine, settings)
    assert mailbox.username in info.value.message
    assert "not-the-password" not in info.value.message and mailbox.password not in info.value.message


def test_missing_folder_and_settings(engine: Engine, mailbox: Mailbox) -> None:
    with pytest.raises(ImapError, match="cannot open folder 'Bestaat niet'"):
        sync_inbox(engine, mailbox.settings(folders=("Bestaat niet",)))
    with pytest.raises(ConfigError, match="OUTREACH_IMAP_PASSWORD"):
        sync_inbox(engine, dataclasses.replace(mailbox.settings(), imap_password=None))


def test_connection_refused_names_host_and_port(engine: Engine, mailbox: Mailbox) -> None:
    settings = dataclasses.replace(mailbox.settings(), imap_port=1)
    with pytest.raises(ImapError, match=r"127\.0\.0\.1:1: cannot connect"):
        sync_inbox(engine, settings)


def test_cli_inbox_sync_and_unmatched(
    engine: Engine, db_url: str, mailbox: Mailbox, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_letters(engine)
    for name in ALL_MESSAGES:
        mailbox.append(mail_fixture(name))
    for name, value in mailbox.environment().items():
        monkeypatch.setenv(name, value)

    result = runner.invoke(app, ["--database", db_url, "inbox", "sync", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["recorded"] == {
        "reply": 2,
        "auto-reply": 2,
        "bounce": 4,
        "opt-out": 1,
        "note": 0,
        "unmatched": 1,
    }
    assert document["failed_letters"] == 3
    assert mailbox.password not in result.output

    again = runner.invoke(app, ["--database", db_url, "inbox", "sync"])
    assert again.exit_code == 0, again.output
    assert "0 new message(s)" in again.stdout
    assert "Recorded: 0 replies" in again.stdout

    listed = runner.invoke(app, ["--database", db_url, "inbox", "unmatched"])
    assert "From: lotte.hermans@ziggo.nl; Subject: Vraag over vrijwilligerswerk" in listed.stdout

    with Session(engine) as session:
        count = session.exec(select(func.count()).select_from(Suppression)).one()
        assert count == 4
        key_hash = session.exec(
            select(Suppression.key_hash).where(Suppression.email_key == "e.vandam@groningen.nl")
        ).one()
    assert key_hash == email_hash("e.vandam@groningen.nl")


def test_cli_sync_without_settings_is_a_clear_error(db_url: str, engine: Engine, runner: CliRunner) -> None:
    result = runner.invoke(app, ["--database", db_url, "inbox", "sync"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: inbox sync needs OUTREACH_IMAP_HOST")
    assert "Traceback" not in result.output


def test_an_unsubscribe_address_that_is_also_the_reply_address_is_not_used(
    engine: Engine, tmp_path: Path
) -> None:
    # The real campaigns ask people to unsubscribe at the address replies go to.
    assert unsubscribe_addresses(engine, REPO / "templates" / "letters") == frozenset()
    templates = tmp_path / "letters"
    shutil.copytree(REPO / "templates" / "letters" / "2026", templates / "2026")
    toml = templates / "2026" / "campaign.toml"
    toml.write_text(
        toml.read_text(encoding="utf-8").replace(
            'mailto = "wereldvanaandacht@hetvergetenkind.nl"', 'mailto = "Afmelden@HetVergetenKind.nl"'
        ),
        encoding="utf-8",
    )
    assert unsubscribe_addresses(engine, templates) == frozenset({"afmelden@hetvergetenkind.nl"})
