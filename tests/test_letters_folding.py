"""No composed line is longer than RFC 5322 allows, whatever the registry holds (issue 11, item 2)."""

from __future__ import annotations

import csv
import email
import email.policy
import re
from collections.abc import Callable
from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.letters.compose import address_header, header_line
from outreach.models import Delivery
from outreach.sending.run import SendOptions, run_send
from tests.factories import add_contact
from tests.fixtures_registry import WriteCsv
from tests.fixtures_sending import CampaignFactory, smtp_settings
from tests.smtpd import SmtpServer

LONG_NAMES = {
    "no-spaces": "Wolfeschlegelsteinhausenbergerdorff" * 58,  # 2,030 characters, no place to fold
    "spaces": " ".join(["Jansen"] * 300),
    "non-ascii": "Zoë" * 700,
    "quoted": ("O'Neill, J.R.R. " * 130).strip(),  # needs quoting: commas and dots
}

RFC5322_LIMIT = 998  # octets per line, without CRLF (section 2.1.1)


def assert_lines_fit(raw: bytes, *, fields: tuple[bytes, ...] = (b"To", b"Subject")) -> None:
    """Every line within 998 octets; the lines of ``fields`` within the 78 columns RFC 5322 asks for."""
    for number, line in enumerate(raw.split(b"\r\n"), start=1):
        assert len(line) <= RFC5322_LIMIT, f"line {number} is {len(line)} octets"
    head, _, _ = raw.partition(b"\r\n\r\n")
    current = b""
    for line in head.split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):
            current = line.split(b":", 1)[0]
        if current in fields:
            assert len(line) <= 78, line[:100]


def to_display_name(raw: bytes) -> str:
    """The To line's display name as a mail client reads it. Python's own address parser puts a space
    between adjacent encoded words (RFC 2047 section 6.2 says to drop that whitespace), so encoded
    names are decoded with ``decode_header``, which follows the RFC."""
    value = email.message_from_bytes(raw, policy=email.policy.compat32)["To"]
    if "=?" not in value:
        parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)["To"].addresses[0]
        return str(parsed.display_name)
    decoded = str(make_header(decode_header(value.replace("\r\n", ""))))
    return decoded.rsplit(" <", 1)[0]


@pytest.mark.parametrize("kind", sorted(LONG_NAMES))
def test_address_header_folds_a_long_display_name(kind: str) -> None:
    name = LONG_NAMES[kind]
    line = address_header("To", name, "r@utrecht.nl").encode("ascii")
    assert_lines_fit(line)
    parsed = email.message_from_bytes(line + b"\r\n", policy=email.policy.SMTP)
    address = parsed["To"].addresses[0]
    assert isinstance(address, Address)
    assert address.addr_spec == "r@utrecht.nl"
    assert to_display_name(line + b"\r\n") == name


def test_subject_with_an_unbreakable_word_is_folded() -> None:
    subject = "Jeugdzorg " + "x" * 290
    line = header_line("Subject", subject).encode("ascii")
    assert_lines_fit(line)
    parsed = email.message_from_bytes(line + b"\r\n", policy=email.policy.SMTP)
    assert parsed["Subject"] == subject


def test_a_2000_character_name_reaches_a_real_server(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    with Session(engine) as session:
        for kind, name in LONG_NAMES.items():
            add_contact(session, f"{kind}@utrecht.nl", voornaam="A", achternaam=name)
        session.commit()
    server = smtpd()  # aiosmtpd refuses a line over 1,000 octets with "500 Line too long"
    summary = run_send(
        engine,
        smtp_settings(db_url, server.port),
        campaign,
        SendOptions(concurrency=2, backoff_initial=0.01, backoff_max=0.05),
    )
    with Session(engine) as session:
        states = {row.state for row in session.exec(select(Delivery).order_by(col(Delivery.id)))}
    assert states == {"sent"}, summary
    assert len(server.handler.messages) == len(LONG_NAMES)
    for received in server.handler.messages:
        assert_lines_fit(received.content)
        kind = received.rcpt_tos[0].split("@")[0]
        assert to_display_name(received.content) == f"A {LONG_NAMES[kind]}"


def test_import_refuses_an_unreasonably_long_name(
    runner: CliRunner, db_url: str, registry_engine: Engine, write_csv: WriteCsv
) -> None:
    rows = [
        ["Voornaam", "Achternaam", "Functie", "Fractie", "E-mail", "Gemeente"],
        ["Anouk", "Jansen", "raadslid", "D66", "a.jansen@utrecht.nl", "Utrecht"],
        ["Ruben", "x" * 2000, "raadslid", "D66", "r.x@utrecht.nl", "Utrecht"],
        ["Piet", "Bakker", "raadslid", "P" * 300, "p.bakker@utrecht.nl", "Utrecht"],
    ]
    source = write_csv(rows)
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert re.search(r"inserted\s+1\n", result.stdout) and re.search(r"rejected\s+2\n", result.stdout)
    assert re.search(r"2\s+value too long\n", result.stdout)
    with source.with_name("lijst.rejects.csv").open(encoding="utf-8-sig", newline="") as fh:
        rejects = list(csv.reader(fh, delimiter=";"))
    assert [row[:2] for row in rejects[1:]] == [
        ["3", "column B (Achternaam) is 2000 characters long; at most 200"],
        ["4", "column D (Fractie) is 300 characters long; at most 200"],
    ]
