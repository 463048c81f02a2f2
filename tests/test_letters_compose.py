"""Composed messages, parsed back by the standard library: structure, headers, encodings, injection."""

from __future__ import annotations

import email
import email.policy
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from outreach.errors import AddressError, CampaignError, HeaderInjectionError, TemplateError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.compose import ComposedLetter, LetterComposer, check_header_value, header_line
from outreach.letters.recipients import Recipient, load_recipients
from tests.factories import add_contact
from tests.fixtures_letters import MINIMAL_TOML, NOW, TEMPLATES, CampaignWriter

TOKEN = "abcdefghijklmnop"


def recipient(engine: Engine, email_address: str = "anna@utrecht.nl", **fields: Any) -> Recipient:
    """A recipient stored through the factories, with a griffie in the same municipality."""
    with Session(engine) as session:
        cbs = str(fields.pop("cbs_code", "GM0344"))
        if fields.pop("with_griffie", True):
            add_contact(session, f"griffie-{email_address}", role="griffie", cbs_code=cbs)
        contact = add_contact(session, email_address, cbs_code=cbs, **fields)
        session.commit()
        contact_id = int(contact.id or 0)
    with engine.connect() as conn:
        return load_recipients(conn, [contact_id])[contact_id]


def parsed(letter: ComposedLetter) -> EmailMessage:
    """Parse the raw bytes afresh with the default policy, as a receiving client would."""
    message = email.message_from_bytes(letter.as_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n")


def html_of(message: EmailMessage) -> str:
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


@pytest.fixture
def campaign_2026() -> CampaignConfig:
    return load_campaign(TEMPLATES, "2026")


def test_2026_letter_structure_mixed_alternative_and_pdf(
    registry: Engine, campaign_2026: CampaignConfig
) -> None:
    anna = recipient(
        registry, voornaam="Anna", tussenvoegsel="van", achternaam="Dijk", aanspreekvorm="mevrouw"
    )
    letter = LetterComposer(campaign_2026).compose(anna, token=TOKEN, now=NOW)
    message = parsed(letter)
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["multipart/alternative", "application/pdf"]
    assert [p.get_content_type() for p in parts[0].iter_parts()] == ["text/plain", "text/html"]
    pdf = parts[1]
    assert pdf.get_filename() == "handreiking-gezinshulp-eerst.pdf"
    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_content() == campaign_2026.attachments[0].read_bytes()
    assert message.defects == [] and all(not p.defects for p in message.walk())


def test_2026_letter_headers(registry: Engine, campaign_2026: CampaignConfig) -> None:
    anna = recipient(
        registry, voornaam="Anna", tussenvoegsel="van", achternaam="Dijk", aanspreekvorm="mevrouw"
    )
    letter = LetterComposer(campaign_2026).compose(anna, token=TOKEN, now=NOW)
    message = parsed(letter)
    assert message["From"] == "Het Vergeten Kind <wereldvanaandacht@hetvergetenkind.nl>"
    assert message["Reply-To"] == "wereldvanaandacht@hetvergetenkind.nl"
    assert message["To"] == "Anna van Dijk <anna@utrecht.nl>"
    assert message["Cc"] == "Griffie Utrecht <griffie-anna@utrecht.nl>"
    assert message["Subject"] == "Gezinshulp eerst: minder kinderen onnodig uit huis in Utrecht"
    assert message["Message-ID"] == f"<{TOKEN}@hetvergetenkind.nl>" == letter.message_id
    assert message["Date"] == "Mon, 26 Jan 2026 10:00:00 +0100"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Auto-Response-Suppress"] == "OOF, AutoReply"
    assert message["List-Unsubscribe"] == (
        f"<mailto:wereldvanaandacht@hetvergetenkind.nl?subject=afmelden%20{TOKEN}>"
    )
    assert message["List-Unsubscribe-Post"] is None  # no URL in this campaign
    assert message["MIME-Version"] == "1.0"
    assert letter.envelope_to == ["anna@utrecht.nl", "griffie-anna@utrecht.nl"]


def test_2026_letter_text(registry: Engine, campaign_2026: CampaignConfig) -> None:
    anna = recipient(
        registry,
        voornaam="Anna",
        tussenvoegsel="van",
        achternaam="Dijk",
        aanspreekvorm="mevrouw",
        party="D66",
    )
    message = parsed(LetterComposer(campaign_2026).compose(anna, token=TOKEN, now=NOW))
    text = text_of(message)
    assert text.startswith("Maandag 26 januari 2026\n\nGeachte mevrouw Van Dijk,\n")
    assert "als raadslid voor D66" in text
    assert "PS Een kopie van deze brief sturen wij aan de griffie van\nUtrecht" in text
    assert "omdat u\nlid bent van de gemeenteraad van Utrecht." in text  # privacy notice
    assert "gerechtvaardigd belang" in text and '"afmelden"' in text
    html = html_of(message)
    assert "Geachte mevrouw Van Dijk," in html
    assert 'class="privacy"' in html and html.index('class="privacy"') < html.index("</body>")


def test_lines_are_crlf_and_short(registry: Engine, campaign_2026: CampaignConfig) -> None:
    letter = LetterComposer(campaign_2026).compose(recipient(registry), token=TOKEN, now=NOW)
    raw = letter.as_bytes()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    # RFC 5322 2.1.1: 78 is the SHOULD; a List-Unsubscribe URL cannot be folded (RFC 2369), 998 is the MUST.
    lines = raw.split(b"\r\n")
    assert max(len(line) for line in lines) <= 998
    assert max(len(line) for line in lines if not line.startswith(b"List-Unsubscribe:")) <= 78


def test_no_griffie_on_file_means_no_cc(registry: Engine, campaign_2026: CampaignConfig) -> None:
    bert = recipient(registry, "bert@utrecht.nl", with_griffie=False)
    letter = LetterComposer(campaign_2026).compose(bert, token=TOKEN, now=NOW)
    assert parsed(letter)["Cc"] is None
    assert letter.envelope_to == ["bert@utrecht.nl"]
    assert "PS Een kopie" not in letter.text


def test_non_ascii_display_name_and_subject_round_trip(
    registry: Engine, write_campaign: CampaignWriter
) -> None:
    toml = MINIMAL_TOML.replace(
        'subject = "Brief voor {{ municipality.name }}"',
        'subject = "Zorg in {{ municipality.name }}: één vraag"',
    ).replace('name = "Het Vergeten Kind"', 'name = "Stichting Het Vergeten Kind – Zoë"')
    campaign = write_campaign(toml=toml)
    person = recipient(
        registry, "soren@sudwestfryslan.nl", cbs_code="GM1900", voornaam="Søren", achternaam="Ærø"
    )
    message = parsed(LetterComposer(campaign).compose(person, token=TOKEN, now=NOW))
    assert message["Subject"] == "Zorg in Súdwest-Fryslân: één vraag"
    to = message["To"].addresses[0]
    assert (to.display_name, to.addr_spec) == ("Søren Ærø", "soren@sudwestfryslan.nl")
    assert message["From"].addresses[0].display_name == "Stichting Het Vergeten Kind – Zoë"
    assert message.as_bytes().isascii()


def test_display_name_with_specials_is_quoted(registry: Engine, write_campaign: CampaignWriter) -> None:
    person = recipient(registry, voornaam="J.P.", achternaam='de "Boer", Jr')
    message = parsed(LetterComposer(write_campaign()).compose(person, token=TOKEN, now=NOW))
    to = message["To"].addresses[0]
    assert to == Address(display_name='J.P. de "Boer", Jr', addr_spec="anna@utrecht.nl")


def test_idn_domain_is_encoded(registry: Engine, write_campaign: CampaignWriter) -> None:
    person = recipient(registry, "info@gemeente-súdwest.nl", with_griffie=False)
    letter = LetterComposer(write_campaign()).compose(person, token=TOKEN, now=NOW)
    assert letter.envelope_to == ["info@xn--gemeente-sdwest-cvb.nl"]
    assert parsed(letter)["To"] == "info@xn--gemeente-sdwest-cvb.nl"


def test_text_only_campaign_is_a_single_part(registry: Engine, write_campaign: CampaignWriter) -> None:
    message = parsed(LetterComposer(write_campaign()).compose(recipient(registry), token=TOKEN, now=NOW))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert message.get_content_charset() == "utf-8"
    assert text_of(message).startswith("Geacht raadslid,\n\nDit is een brief aan Utrecht.\n")


def test_unsubscribe_url_adds_one_click_post(registry: Engine, write_campaign: CampaignWriter) -> None:
    toml = MINIMAL_TOML + (
        '\n[unsubscribe]\nmailto = "afmelden@hetvergetenkind.nl"\n'
        'url = "https://www.hetvergetenkind.nl/afmelden?t={{ token }}"\n'
    )
    letter = LetterComposer(write_campaign(toml=toml)).compose(recipient(registry), token=TOKEN, now=NOW)
    message = parsed(letter)
    assert message["List-Unsubscribe"] == (
        f"<mailto:afmelden@hetvergetenkind.nl?subject=afmelden%20{TOKEN}>, "
        f"<https://www.hetvergetenkind.nl/afmelden?t={TOKEN}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert f"https://www.hetvergetenkind.nl/afmelden?t={TOKEN}" in letter.text


def test_html_template_escapes_contact_data(registry: Engine, write_campaign: CampaignWriter) -> None:
    toml = MINIMAL_TOML.replace('text = "brief.txt.j2"', 'text = "brief.txt.j2"\nhtml = "brief.html.j2"')
    html = "<html><body><p>{{ aanhef }}, {{ contact.party }}</p></body></html>"
    campaign = write_campaign(toml=toml, files={"brief.html.j2": html})
    person = recipient(registry, party="<script>alert(1)</script> & Co")
    message = parsed(LetterComposer(campaign).compose(person, token=TOKEN, now=NOW))
    body = html_of(message)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in body
    assert "<script>" not in body


def test_privacy_notice_can_be_switched_off(registry: Engine, write_campaign: CampaignWriter) -> None:
    campaign = write_campaign(toml=MINIMAL_TOML + "\n[privacy]\nnotice = false\n")
    letter = LetterComposer(campaign).compose(recipient(registry), token=TOKEN, now=NOW)
    assert "Waarom ontvangt u dit bericht?" not in letter.text


def test_separate_copy_for_the_griffie(registry: Engine) -> None:
    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    with Session(registry) as session:
        griffie = add_contact(session, "griffie@utrecht.nl", role="griffie")
        wethouder = add_contact(session, "weth@utrecht.nl", role="wethouder", portfolio="Jeugd")
        session.commit()
        ids = [int(griffie.id or 0), int(wethouder.id or 0)]
    with registry.connect() as conn:
        recipients = load_recipients(conn, ids)
    composer = LetterComposer(campaign)
    copy = composer.compose(recipients[ids[0]], token=TOKEN, now=NOW)
    letter = composer.compose(recipients[ids[1]], token="bcdefghijklmnopq", now=NOW)
    assert copy.envelope_to == ["griffie@utrecht.nl"]
    assert copy.is_copy and not letter.is_copy
    assert letter.envelope_to == ["weth@utrecht.nl"]  # separate, not Cc
    assert parsed(letter)["Cc"] is None
    copy_message = parsed(copy)
    assert copy_message["Subject"] == "Kopie: Vaste gezichten voor kinderen in de jeugdzorg van Utrecht"
    assert copy_message["To"] == "Griffie Utrecht <griffie@utrecht.nl>"
    text = text_of(copy_message)
    # The campaign words the copy itself ({% if copy %}), so no automatic "Kopie voor de griffie" line.
    assert text.startswith("Geachte griffie,\n\nIn de bijlage vindt u een afschrift van de brief")
    assert "de wethouder met jeugd in de portefeuille van Utrecht" in text
    assert "Kopie voor de griffie" not in text and "Kopie voor de griffie" not in html_of(copy_message)
    assert "PS Een afschrift" not in text
    assert "PS Een afschrift van deze brief sturen wij aan de griffie van\nUtrecht." in letter.text
    assert "In de bijlage vindt u onze brief" in letter.text
    assert "In de bijlage vindt u een afschrift van de brief" in text


# ------------------------------------------------------------------------------------ header injection


@pytest.mark.parametrize(
    "field",
    [
        {"achternaam": "Dijk\r\nBcc: stiekem@example.org"},
        {"voornaam": "Anna\nX-Evil: 1"},
        {"voornaam": "Anna\x00"},
        {"tussenvoegsel": "van\x1b", "achternaam": "Dijk"},
        {"voornaam": "=?utf-8?q?Anna=0D=0ABcc=3A_x=40y=2Enl?="},
    ],
)
def test_control_characters_in_names_are_rejected(
    registry: Engine, write_campaign: CampaignWriter, field: dict[str, str]
) -> None:
    person = recipient(registry, **field)
    with pytest.raises(HeaderInjectionError) as info:
        LetterComposer(write_campaign()).compose(person, token=TOKEN, now=NOW)
    assert "anna@utrecht.nl" in info.value.message


@pytest.mark.parametrize(
    "party",
    ["D66\r\nBcc: x@y.nl", "D66\nBcc: x@y.nl", "=?utf-8?b?RDY2DQpCY2M6IHhAeS5ubA==?=", "D66\u2028x", "D66\t"],
)
def test_control_characters_in_the_subject_are_rejected(
    registry: Engine, write_campaign: CampaignWriter, party: str
) -> None:
    toml = MINIMAL_TOML.replace(
        'subject = "Brief voor {{ municipality.name }}"', 'subject = "Brief voor {{ contact.party }}"'
    )
    campaign = write_campaign(toml=toml)
    person = recipient(registry, party=party)
    with pytest.raises(HeaderInjectionError) as info:
        LetterComposer(campaign).compose(person, token=TOKEN, now=NOW)
    assert "Subject" in info.value.message and "anna@utrecht.nl" in info.value.message


def test_an_encoded_word_without_control_characters_is_allowed() -> None:
    check_header_value("Subject", "=?utf-8?q?caf=C3=A9?= is fine")


@pytest.mark.parametrize(
    "value", ["=?iso-8859-1?q?x=0Dy?=", "Beste =?UTF-8?B?YQpi?= lezer", "=?utf-8?Q?a=00?="]
)
def test_encoded_control_characters_in_any_charset_or_case_are_rejected(value: str) -> None:
    with pytest.raises(HeaderInjectionError):
        check_header_value("Subject", value)


@pytest.mark.parametrize(
    "subject",
    [
        "Één brief over jeugdzorg in Súdwest-Fryslân, Noardeast-Fryslân en De Fryske Marren — met bijlage",
        "ë" * 200,
        "Zorg 🧒 voor kinderen in 's-Hertogenbosch: één vraag aan het college " * 3,
    ],
)
def test_long_non_ascii_subjects_fold_into_valid_encoded_words(subject: str) -> None:
    line = header_line("Subject", subject)
    physical = line.split("\r\n")[:-1]
    assert all(len(p) <= 78 for p in physical)
    assert all(len(word) <= 75 for p in physical for word in p.split() if word.startswith("=?"))
    message = email.message_from_bytes(line.encode("ascii") + b"\r\nbody\r\n", policy=email.policy.default)
    assert message["Subject"] == subject


def test_attachment_file_name_with_a_control_character_is_rejected(write_campaign: CampaignWriter) -> None:
    toml = MINIMAL_TOML.replace(
        'name = "Testbrief"', 'name = "Testbrief"\nattachments = ["bijlage\\r\\nX-Evil: 1.pdf"]'
    )
    with pytest.raises(CampaignError, match="control character"):
        write_campaign(toml=toml, files={"bijlage\r\nX-Evil: 1.pdf": b"%PDF-1.4\n"})


def test_unsubscribe_url_with_a_line_break_is_rejected(
    registry: Engine, write_campaign: CampaignWriter
) -> None:
    toml = MINIMAL_TOML + '\n[unsubscribe]\nurl = "https://example.nl/af?p={{ contact.party }}"\n'
    campaign = write_campaign(toml=toml)
    with pytest.raises(HeaderInjectionError):
        LetterComposer(campaign).compose(recipient(registry, party="x\r\nBcc: y@z.nl"), token=TOKEN, now=NOW)


def test_an_address_that_needs_smtputf8_is_refused(registry: Engine, write_campaign: CampaignWriter) -> None:
    person = recipient(registry, "ännä@utrecht.nl", with_griffie=False)
    with pytest.raises(AddressError, match="SMTPUTF8"):
        LetterComposer(write_campaign()).compose(person, token=TOKEN, now=NOW)


def test_the_message_property_is_an_email_message(registry: Engine, campaign_2026: CampaignConfig) -> None:
    letter = LetterComposer(campaign_2026).compose(recipient(registry), token=TOKEN, now=NOW)
    assert isinstance(letter.message, EmailMessage)
    assert letter.message["Message-ID"] == letter.message_id
    assert [p.get_content_type() for p in letter.message.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/pdf",
    ]


def test_compose_refuses_a_token_that_is_not_one(registry: Engine, write_campaign: CampaignWriter) -> None:
    with pytest.raises(ValueError, match="not a delivery token"):
        LetterComposer(write_campaign()).compose(recipient(registry), token="abc>\r\nX: y", now=NOW)


def test_a_subject_too_long_for_a_header_is_a_template_error(
    registry: Engine, write_campaign: CampaignWriter
) -> None:
    toml = MINIMAL_TOML.replace("{{ municipality.name }}", "{{ contact.party }}")
    campaign = write_campaign(toml=toml)
    with pytest.raises(TemplateError, match=r"campaign.toml \[subject\]: the subject is 511 characters long"):
        LetterComposer(campaign).compose(recipient(registry, party="x" * 500), token=TOKEN, now=NOW)
