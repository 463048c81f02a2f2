"""`inbox sync` records a message without a Message-ID once, also when the folder is read again after a
UIDVALIDITY change or the message is filed in another synced folder (issue 11, item 23). Against a
real Dovecot on 127.0.0.1 (tests/dovecot.py)."""

from __future__ import annotations

import re

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from outreach.models import Event, EventKind
from outreach.tracking.classify import ClassifyOptions
from outreach.tracking.imap_sync import content_fingerprint, sync_inbox
from tests.dovecot import Mailbox
from tests.fixtures_tracking import UNSUBSCRIBE_ADDRESS, mail_fixture, seed_letters

OPTIONS = ClassifyOptions(unsubscribe_addresses=frozenset({UNSUBSCRIBE_ADDRESS}))


def without_message_id(name: str) -> bytes:
    """A fixture message as some mail systems send it: no Message-ID header (only the top-level one
    goes; a DSN keeps the one of the returned letter inside it)."""
    raw = mail_fixture(name)
    head, sep, body = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    head = re.sub(rb"(?mi)^Message-ID:.*(\r?\n[ \t].*)*\r?\n", b"", head + b"\n").rstrip(b"\n")
    assert not re.search(rb"(?mi)^message-id:", head)
    return head + sep + body


def _events(engine: Engine) -> list[Event]:
    with Session(engine) as session:
        return list(session.exec(select(Event).order_by(col(Event.id))).all())


NO_ID = ["reply-gmail.eml", "dsn-postfix-hard.eml", "oof-exchange.eml"]


def test_messages_without_message_id_are_not_recorded_twice_after_uidvalidity_changes(
    engine: Engine, mailbox: Mailbox
) -> None:
    seed_letters(engine)
    settings = mailbox.settings(folders=("INBOX", "Archief"))
    for name in NO_ID:
        mailbox.append(without_message_id(name), folder="Archief")
    first = sync_inbox(engine, settings, options=OPTIONS)
    assert first.folders[1].recorded == 3
    kinds = sorted(e.kind for e in _events(engine))

    mailbox.recreate_folder("Archief")  # a restore from backup: the same mail under a new UIDVALIDITY
    for name in NO_ID:
        mailbox.append(without_message_id(name), folder="Archief")
    mailbox.append(without_message_id("oof-gmail.eml"), folder="Archief")  # one really new message
    second = sync_inbox(engine, settings, options=OPTIONS)

    archive = second.folders[1]
    assert archive.reset
    assert (archive.new_messages, archive.recorded, archive.duplicates) == (4, 1, 3)
    assert [e.kind for e in second.events] == [EventKind.AUTO_REPLY]
    assert sorted(e.kind for e in _events(engine)) == sorted([*kinds, EventKind.AUTO_REPLY.value])


def test_a_message_without_message_id_filed_in_another_folder_is_recorded_once(
    engine: Engine, mailbox: Mailbox
) -> None:
    seed_letters(engine)
    settings = mailbox.settings(folders=("INBOX", "Verwerkt"))
    mailbox.append(without_message_id("reply-outlook.eml"))
    mailbox.append(mail_fixture("unrelated.eml"), folder="Verwerkt")  # the folder exists already
    sync_inbox(engine, settings, options=OPTIONS)
    mailbox.append(without_message_id("reply-outlook.eml"), folder="Verwerkt")  # staff filed a copy
    result = sync_inbox(engine, settings, options=OPTIONS)
    assert (result.folders[1].recorded, result.folders[1].duplicates) == (0, 1)
    assert [e.kind for e in _events(engine)] == [EventKind.REPLY.value, EventKind.UNMATCHED.value]


def test_the_fingerprint_ignores_what_servers_add_and_sees_what_differs() -> None:
    raw = without_message_id("reply-gmail.eml")
    crlf = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    refiled = b"Received: from restore.example (127.0.0.1)\r\nX-Dovecot-Flags: \\Seen\r\n" + crlf
    assert content_fingerprint(raw) == content_fingerprint(crlf) == content_fingerprint(refiled)
    other_body = crlf.replace(b"\r\n\r\n", b"\r\n\r\nNog een regel.\r\n", 1)
    other_date = re.sub(rb"(?m)^Date: .*$", b"Date: Mon, 1 Dec 2026 10:00:00 +0100", crlf)
    assert content_fingerprint(other_body) != content_fingerprint(crlf)
    assert content_fingerprint(other_date) != content_fingerprint(crlf)
