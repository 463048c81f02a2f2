"""Classification of inbound mail: the fixture messages as real clients write them, and the edge cases."""

from __future__ import annotations

import pytest

from outreach.models import EventKind
from outreach.tracking.bounces import is_permanent
from outreach.tracking.classify import ClassifyOptions, classify, unsubscribe_address_key
from tests.fixtures_tracking import LETTERS, UNSUBSCRIBE_ADDRESS, mail_fixture

OPTIONS = ClassifyOptions(unsubscribe_addresses=frozenset({UNSUBSCRIBE_ADDRESS}))


def message(headers: str, body: str = "Tekst.\n") -> bytes:
    base = (
        "From: Iemand <iemand@example.nl>\nTo: brieven@hetvergetenkind.nl\n"
        "Date: Tue, 10 Mar 2026 10:00:00 +0100\n"
    )
    return (base + headers.strip() + "\n\n" + body).encode()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("reply-outlook.eml", EventKind.REPLY),
        ("reply-gmail.eml", EventKind.REPLY),
        ("oof-exchange.eml", EventKind.AUTO_REPLY),
        ("oof-gmail.eml", EventKind.AUTO_REPLY),
        ("dsn-postfix-hard.eml", EventKind.BOUNCE),
        ("ndr-exchange.eml", EventKind.BOUNCE),
        ("dsn-postfix-soft.eml", EventKind.BOUNCE),
        ("bounce-qmail.eml", EventKind.BOUNCE),
        ("unsubscribe.eml", EventKind.OPT_OUT),
        ("unrelated.eml", EventKind.UNMATCHED),
    ],
)
def test_fixture_messages_are_classified(name: str, kind: EventKind) -> None:
    inbound = classify(mail_fixture(name), OPTIONS)
    assert inbound.kind is kind, inbound.reason
    if name in LETTERS:
        # The letter's token comes first: VERP address, returned Message-ID or In-Reply-To.
        assert inbound.tokens[0] == LETTERS[name].token
    else:
        assert inbound.tokens == ()


@pytest.mark.parametrize(
    ("name", "recipient", "status", "hard", "suppresses"),
    [
        ("dsn-postfix-hard.eml", "k.smit@haarlem.nl", "5.1.1", True, True),
        ("ndr-exchange.eml", "a.mulder@westland.nl", "5.1.10", True, True),
        ("dsn-postfix-soft.eml", "h.degroot@leiden.nl", "4.2.2", False, False),
        ("bounce-qmail.eml", "raadslid.dekker@zaannet.nl", "5.1.1", True, True),
    ],
)
def test_bounce_details(name: str, recipient: str, status: str, hard: bool, suppresses: bool) -> None:
    inbound = classify(mail_fixture(name))
    assert [(b.recipient, b.status, b.hard) for b in inbound.bounces] == [(recipient, status, hard)]
    assert inbound.suppresses is suppresses
    assert inbound.bounce_status == status


def test_postfix_dsn_is_a_bounce_although_marked_auto_replied() -> None:
    raw = mail_fixture("dsn-postfix-hard.eml")
    assert b"Auto-Submitted: auto-replied" in raw
    inbound = classify(raw)
    assert inbound.kind is EventKind.BOUNCE
    assert inbound.reason == "RFC 3464 delivery status report"


def test_qmail_bounce_goes_through_flufl_bounce() -> None:
    assert classify(mail_fixture("bounce-qmail.eml")).reason == "non-standard bounce (flufl.bounce)"


def test_reply_summary_keeps_the_reply_and_drops_the_quoted_letter() -> None:
    outlook = classify(mail_fixture("reply-outlook.eml"))
    assert "continuïteit van de jeugdhulp" in outlook.summary  # quoted-printable ISO-8859-1 decoded
    assert "Eén op de zeven" not in outlook.summary
    gmail = classify(mail_fixture("reply-gmail.eml"))
    assert "motie indienen" in gmail.summary
    assert "schreef" not in gmail.summary and "Eén op de zeven" not in gmail.summary
    assert len(gmail.summary) <= 300


def test_html_only_reply_is_summarised_without_the_gmail_quote() -> None:
    raw = message(
        "Subject: Re: Brief\nIn-Reply-To: <replygmail234567@hetvergetenkind.nl>\n"
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8",
        '<div dir="ltr">Graag een afspraak.</div><div class="gmail_quote">Op ma schreef u:'
        "<blockquote>Geachte heer</blockquote></div>",
    )
    inbound = classify(raw)
    assert inbound.kind is EventKind.REPLY
    assert inbound.summary == "Re: Brief — Graag een afspraak."


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Automatisch antwoord: Aandachtsvolle jeugdzorg",
        "Subject: Afwezigheidsbericht",
        "Subject: Afwezig tot 20 maart",
        "Subject: Out of Office: Aandachtsvolle jeugdzorg",
        "Subject: Automatic reply: Aandachtsvolle jeugdzorg",
        "Subject: Re: Brief\nX-Autoreply: yes",
        "Subject: Re: Brief\nX-Autorespond: Vacation",
        "Subject: Re: Brief\nPrecedence: auto_reply",
        "Subject: Re: Brief\nAuto-Submitted: auto-replied (vacation)",
    ],
)
def test_automatic_replies(headers: str) -> None:
    raw = message(headers + "\nIn-Reply-To: <oofexchange23456@hetvergetenkind.nl>")
    inbound = classify(raw)
    assert inbound.kind is EventKind.AUTO_REPLY
    assert inbound.tokens == ("oofexchange23456",)


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Re: Afwezigheid van kinderen op school",  # a person writing about absence
        "Subject: Re: Brief\nAuto-Submitted: no",
        "Subject: Re: Brief\nPrecedence: bulk",  # a newsletter is no automatic reply to our letter
    ],
)
def test_not_automatic_replies(headers: str) -> None:
    raw = message(headers + "\nIn-Reply-To: <replygmail234567@hetvergetenkind.nl>")
    assert classify(raw).kind is EventKind.REPLY


def test_unsubscribe_by_subject_carries_the_token_of_the_mailto_link() -> None:
    # The letters' mailto link is "mailto:afmelden@...?subject=afmelden%20<token>".
    raw = message("To: afmelden@hetvergetenkind.nl\nSubject: afmelden unsubscribe23456")
    inbound = classify(raw)
    assert inbound.kind is EventKind.OPT_OUT
    assert inbound.tokens == ("unsubscribe23456",)


@pytest.mark.parametrize(
    ("subject", "kind"),
    [
        ("Uitschrijven", EventKind.OPT_OUT),
        ("Re: graag afmelden", EventKind.OPT_OUT),
        ("Unsubscribe", EventKind.OPT_OUT),
        ("Hoe kan ik me aanmelden?", EventKind.UNMATCHED),
    ],
)
def test_unsubscribe_subjects(subject: str, kind: EventKind) -> None:
    assert classify(message(f"Subject: {subject}")).kind is kind


def test_mail_to_the_unsubscribe_address_is_an_opt_out_whatever_the_subject() -> None:
    raw = message("To: Afmelden <AFMELDEN@hetvergetenkind.nl>\nSubject: Graag niet meer")
    assert classify(raw, OPTIONS).kind is EventKind.OPT_OUT
    assert classify(raw).kind is EventKind.UNMATCHED  # without knowing the campaign's address


def test_success_notice_is_not_a_bounce() -> None:
    raw = mail_fixture("dsn-postfix-hard.eml").replace(b"Action: failed", b"Action: delivered")
    raw = raw.replace(b"Status: 5.1.1", b"Status: 2.0.0")
    assert classify(raw).kind is not EventKind.BOUNCE


def test_policy_refusal_fails_the_letter_but_does_not_suppress_the_address() -> None:
    raw = mail_fixture("dsn-postfix-hard.eml").replace(b"Status: 5.1.1", b"Status: 5.7.1")
    inbound = classify(raw)
    assert inbound.hard_bounce and not inbound.suppresses


@pytest.mark.parametrize(
    ("status", "permanent"),
    [("5.1.1", True), ("5.2.2", False), ("552", False), ("4.4.1", False), ("550", True), (None, False)],
)
def test_permanent_statuses(status: str | None, permanent: bool) -> None:
    assert is_permanent(status) is permanent


def test_garbage_is_unmatched_not_an_exception() -> None:
    inbound = classify(b"\x00\xff\xfe not a mail \r\n\r\n\x00")
    assert inbound.kind is EventKind.UNMATCHED


def test_dates_are_naive_utc() -> None:
    inbound = classify(mail_fixture("reply-gmail.eml"))  # Wed, 11 Mar 2026 22:05:21 +0100
    assert inbound.date is not None and inbound.date.isoformat() == "2026-03-11T21:05:21"


@pytest.mark.parametrize(
    ("mailto", "key"),
    [
        ("mailto:Afmelden@HetVergetenKind.nl?subject=afmelden", "afmelden@hetvergetenkind.nl"),
        ("afmelden@hetvergetenkind.nl", "afmelden@hetvergetenkind.nl"),
        ("https://example.nl/afmelden", None),
    ],
)
def test_unsubscribe_address_key(mailto: str, key: str | None) -> None:
    assert unsubscribe_address_key(mailto) == key


def reply(body: str) -> bytes:
    return message(
        "Subject: RE: Gezinshulp eerst\nIn-Reply-To: <unsubscribe23456@hetvergetenkind.nl>\n"
        "MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8",
        body,
    )


DISCLAIMER = (
    "Dit bericht is uitsluitend bestemd voor de geadresseerde. Als dit bericht niet voor u bestemd is, "
    "wordt u verzocht de afzender hiervan op de hoogte te stellen en het bericht te verwijderen. " * 2
)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        # The privacy notice: "antwoord op dit bericht met 'afmelden'".
        ("afmelden\n\n> Geachte heer,\n> Eén op de zeven kinderen ...\n", EventKind.OPT_OUT),
        (
            f"Beste,\n\nGraag afmelden.\n\nMet vriendelijke groet,\nJan de Vries\n{DISCLAIMER}",
            EventKind.OPT_OUT,
        ),
        ("Ik wil niet langer post ontvangen, graag afmelden.", EventKind.OPT_OUT),
        ("Ik wil me zeker niet afmelden, dank voor de brief!", EventKind.REPLY),
        (
            "Geachte mevrouw Ende, dank voor uw brief. In de commissie Samenleving bespreken wij in "
            "april het jeugdbeleid; ik neem uw handreiking mee. Over het afmelden van kinderen bij de "
            "jeugdhulp als de wachtlijst te lang is, hebben wij eerder vragen gesteld.",
            EventKind.REPLY,
        ),
    ],
)
def test_a_short_reply_asking_to_unsubscribe_is_an_opt_out(body: str, kind: EventKind) -> None:
    inbound = classify(reply(body))
    assert inbound.kind is kind, inbound.reason
    assert inbound.tokens == ("unsubscribe23456",)
