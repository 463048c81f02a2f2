"""The formal PDF letter ([letter] in campaign.toml), read back from the PDF as a wethouder gets it."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pytest
from pypdf import PdfReader
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner, Result

from outreach.cli import app
from outreach.errors import CampaignError, TemplateError
from outreach.letters.address import MAX_LINES, address_lines
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.compose import LetterComposer
from outreach.letters.pdf import WINDOW, LetterRenderer
from outreach.letters.pdf_letters import CampaignPdfs, LetterJob, attachment_name, prepare_pdfs
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import Recipient, load_recipients, postal_lines
from outreach.letters.render import CampaignTemplates
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES

# Tuesday 1 December 2026, 10:00 in Utrecht.
DATE = datetime(2026, 12, 1, 9, 0)
KENMERK = "HVK/2026/0003/0412"
MM = 72 / 25.4  # PDF points per millimetre

WETHOUDER = Recipient(
    contact_id=412,
    role="wethouder",
    email="j.devries@utrecht.nl",
    voorletters="J.M.",
    tussenvoegsel="de",
    achternaam="Vries",
    aanspreekvorm="mevrouw",
    portfolio="Jeugd, Onderwijs en Zorg",
    municipality_id=1,
    municipality="Utrecht",
    cbs_code="GM0344",
    griffie_email="griffie@utrecht.nl",
    postal=postal_lines("Postbus 16200", "3500 CE", "Utrecht"),
)
GRIFFIE = Recipient(
    contact_id=7,
    role="griffie",
    email="griffie@utrecht.nl",
    municipality_id=1,
    municipality="Utrecht",
    cbs_code="GM0344",
    postal=postal_lines("Postbus 16200", "3500 CE", "Utrecht"),
)


@pytest.fixture(scope="module")
def campaign() -> CampaignConfig:
    return load_campaign(TEMPLATES, "wethouders-jeugd")


def letter_pdf(campaign: CampaignConfig, recipient: Recipient, *, kenmerk: str = KENMERK) -> bytes:
    pdfs = CampaignPdfs(campaign, CampaignTemplates(campaign))
    return pdfs.pdf(recipient, now=DATE, kenmerk=kenmerk)


@pytest.fixture(scope="module")
def wethouder_pdf(campaign: CampaignConfig) -> bytes:
    return letter_pdf(campaign, WETHOUDER)


@pytest.fixture(scope="module")
def griffie_pdf(campaign: CampaignConfig) -> bytes:
    return letter_pdf(campaign, GRIFFIE, kenmerk="HVK/2026/0003/0007")


def window_lines(data: bytes) -> tuple[list[str], list[dict[str, float]]]:
    """The text lines of page 1 whose words lie in the band of the window, and all words there."""
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        words = pdf.pages[0].extract_words()
    # Everything between the letterhead and the reference block: the address block, wherever it landed.
    band = [w for w in words if 40 * MM <= w["top"] <= 90 * MM and w["x0"] < 110 * MM]
    lines: dict[float, list[str]] = {}
    for word in band:
        lines.setdefault(round(word["top"], 0), []).append(" ".join(word["text"].split()))
    return [" ".join(v) for _, v in sorted(lines.items())], band


def page_texts(data: bytes) -> list[str]:
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def test_the_address_lies_in_the_envelope_window(wethouder_pdf: bytes) -> None:
    lines, words = window_lines(wethouder_pdf)
    assert lines == [
        "Mevrouw J.M. de Vries",
        "Wethouder",
        "Gemeente Utrecht",
        "Postbus 16200",
        "3500 CE UTRECHT",
    ]
    assert len(lines) <= MAX_LINES
    for word in words:
        assert WINDOW.left * MM <= word["x0"] and word["x1"] <= WINDOW.right * MM, word
        assert WINDOW.top * MM <= word["top"] and word["bottom"] <= WINDOW.bottom * MM, word


def test_the_reference_block_carries_kenmerk_date_and_subject(wethouder_pdf: bytes) -> None:
    (page,) = page_texts(wethouder_pdf)
    text = " ".join(page.split())
    assert f"Ons kenmerk {KENMERK}" in text
    assert "Datum Utrecht, 1 december 2026" in text
    assert "Onderwerp Vaste gezichten voor kinderen in de jeugdzorg" in text
    assert "Geachte mevrouw De Vries," in text
    assert "Wij komen graag bij u langs om te bespreken" in text  # no words glued by a template tag
    assert "Met jeugd, onderwijs en zorg in uw portefeuille bent u in Utrecht" in text
    # Signed by a person, with the function, and the PS about the griffie's copy.
    assert "Marit van den Heuvel\ndirecteur-bestuurder, Het Vergeten Kind" in page
    assert "Een afschrift van deze brief sturen wij aan de griffie van Utrecht." in text


@pytest.mark.parametrize("which", ["wethouder", "griffie"])
def test_the_reference_block_is_two_columns(which: str, request: pytest.FixtureRequest) -> None:
    """Labels left, each value on its label's line in one column to the right of every label (the block
    is a list with a fixed indent, brief.css): no label runs into its value, no value wraps."""
    data: bytes = request.getfixturevalue(f"{which}_pdf")
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        words = pdf.pages[0].extract_words(extra_attrs=["fontname"])
    labels: dict[str, list[dict[str, Any]]] = {"Ons kenmerk": [], "Datum": [], "Onderwerp": []}
    for word in words:
        for label in labels:
            if word["text"] in label.split() and "Semi" in word["fontname"]:
                labels[label].append(word)
    assert all(labels.values()), labels
    label_right = max(w["x1"] for found in labels.values() for w in found)
    starts = []
    for found in labels.values():
        top = found[0]["top"]
        row = [w for w in words if abs(w["top"] - top) < 1 and "Semi" not in w["fontname"]]
        assert row, f"no value beside {found[0]['text']}"
        starts.append(min(w["x0"] for w in row))
        assert label_right + 5 * MM < starts[-1]  # the 6 mm between the columns
    assert max(starts) - min(starts) < 0.01 and abs(starts[0] / MM - (25 + 26.5305)) < 0.05, starts


def test_fonts_are_embedded_and_are_the_shipped_open_sans(wethouder_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(wethouder_pdf))
    fonts = {}
    for page in reader.pages:
        resources: Any = page["/Resources"]
        for font in resources["/Font"].values():
            font = font.get_object()
            descendant = font["/DescendantFonts"][0].get_object()
            descriptor = descendant["/FontDescriptor"].get_object()
            fonts[str(font["/BaseFont"])] = "/FontFile2" in descriptor
    assert fonts, "no fonts"
    assert all(fonts.values()), fonts  # every font embedded
    assert all(re.match(r"/[A-Z]{6}\+Open-Sans", name) for name in fonts), fonts  # subset of Open Sans


def test_the_pdf_is_pdf_a_3b(wethouder_pdf: bytes) -> None:
    reader = PdfReader(io.BytesIO(wethouder_pdf))
    root: Any = reader.trailer["/Root"]
    xmp = root["/Metadata"].get_object().get_data().decode()
    assert re.search(r"pdfaid:part[^0-9]{1,3}3", xmp), xmp
    assert re.search(r"pdfaid:conformance[^A-Z]{1,3}B", xmp), xmp
    assert "/OutputIntents" in root


def test_page_numbers_from_page_two_on(griffie_pdf: bytes) -> None:
    pages = page_texts(griffie_pdf)
    assert len(pages) == 2
    assert "pagina" not in pages[0]
    assert "pagina 2 van 2" in pages[1]
    assert "Ons kenmerk HVK/2026/0003/0007" in pages[1]  # the running footer of page 2


def test_the_griffies_copy_speaks_to_the_griffie(griffie_pdf: bytes) -> None:
    text = " ".join(" ".join(page_texts(griffie_pdf)).split())
    lines, _ = window_lines(griffie_pdf)
    assert lines == ["De griffie van de gemeenteraad", "Gemeente Utrecht", "Postbus 16200", "3500 CE UTRECHT"]
    assert "Geachte griffie," in text
    assert "Onderwerp Afschrift: vaste gezichten" in text
    assert "registreren als ingekomen stuk" in text
    # Never the wethouder's "you": the copy tells the griffie what the wethouder was asked.
    assert "U kunt daar" not in text and "uw portefeuille" not in text
    assert "De wethouder met jeugd in de portefeuille kan daar veel aan" in text
    assert "Wij hebben de wethouder aangeboden om te bespreken" in text


def test_the_same_letter_gives_the_same_bytes(campaign: CampaignConfig, wethouder_pdf: bytes) -> None:
    assert letter_pdf(campaign, WETHOUDER) == wethouder_pdf
    other_day = CampaignPdfs(campaign, CampaignTemplates(campaign)).pdf(
        WETHOUDER, now=datetime(2026, 12, 2, 9, 0), kenmerk=KENMERK
    )
    assert other_day != wethouder_pdf


def test_an_address_that_overflows_the_window_fails(campaign: CampaignConfig) -> None:
    long_name = replace(WETHOUDER, achternaam="Van Oldenbarnevelt tot Bloemendaal-Gravenhorst-Ruysdael")
    with pytest.raises(TemplateError, match="does not fit the envelope window"):
        letter_pdf(campaign, long_name)


def test_more_than_six_address_lines_fail(write_letter: Callable[..., CampaignConfig]) -> None:
    campaign = write_letter(
        letter='<div id="adres">{% for i in range(7) %}regel {{ i }}<br>{% endfor %}</div>',
        css="@page { margin: 0 } #adres { margin: 47mm 0 0 21mm; font-size: 5pt; line-height: 1.1 }",
    )
    with pytest.raises(TemplateError, match="7 lines; at most 6"):
        letter_pdf(campaign, WETHOUDER)


def test_a_letter_without_an_address_block_fails(write_letter: Callable[..., CampaignConfig]) -> None:
    campaign = write_letter(letter="<p>Geen adres</p>")
    with pytest.raises(TemplateError, match='no element with id="adres"'):
        letter_pdf(campaign, WETHOUDER)


def test_a_letter_may_use_only_files_of_its_campaign(write_letter: Callable[..., CampaignConfig]) -> None:
    for source in ("/etc/hostname", "file:///etc/hostname", "http://127.0.0.1:9/x.png", "../x.svg"):
        campaign = write_letter(letter=f'<div id="adres">A</div><img src="{source}">')
        with pytest.raises(TemplateError, match="cannot be laid out"):
            letter_pdf(campaign, WETHOUDER)


def test_the_letter_is_attached_to_the_cover_note(campaign: CampaignConfig, wethouder_pdf: bytes) -> None:
    composer = LetterComposer(campaign, kenmerk="HVK/2026/0003")
    letter = composer.compose(WETHOUDER, token="abcdefghijklmnop", now=DATE)
    (part,) = list(letter.message.iter_attachments())
    assert part.get_content_type() == "application/pdf"
    assert part.get_filename() == "Brief aan J.M. de Vries – HVK-2026-0003-0412.pdf"
    assert part.get_payload(decode=True) == wethouder_pdf
    assert "Ons kenmerk: HVK/2026/0003/0412" in letter.text
    assert letter.kenmerk == KENMERK
    assert all(len(line) <= 998 for line in letter.raw.split(b"\r\n"))


def test_attachment_names_cannot_carry_paths_or_control_characters() -> None:
    odd = replace(WETHOUDER, voorletters=None, voornaam="A/B\\C", achternaam='x"y')
    name = attachment_name(odd, KENMERK)
    assert "/" not in name and "\\" not in name and '"' not in name
    assert name.endswith("HVK-2026-0003-0412.pdf")


def test_prepared_letters_are_found_by_the_composer(
    campaign: CampaignConfig, tmp_path: Path, wethouder_pdf: bytes
) -> None:
    store = PdfStore(tmp_path / "store")
    report = prepare_pdfs(
        campaign,
        [LetterJob(WETHOUDER, KENMERK), LetterJob(GRIFFIE, "HVK/2026/0003/0007")],
        now=DATE,
        store=store,
        workers=2,
    )
    assert (report.letters, report.rendered, report.cached, report.failures) == (2, 2, 0, [])
    assert report.pages == 3
    again = prepare_pdfs(campaign, [LetterJob(WETHOUDER, KENMERK)], now=DATE, store=store, workers=2)
    assert (again.rendered, again.cached) == (0, 1)
    pdfs = CampaignPdfs(campaign, CampaignTemplates(campaign), store)
    assert pdfs.pdf(WETHOUDER, now=DATE, kenmerk=KENMERK) == wethouder_pdf
    assert pdfs.laid_out == 0  # read from the store, not laid out again


def test_prepare_reports_the_letters_that_fail(campaign: CampaignConfig, tmp_path: Path) -> None:
    long_name = replace(WETHOUDER, contact_id=9, achternaam="Oldenbarnevelt" * 6)
    report = prepare_pdfs(
        campaign,
        [LetterJob(WETHOUDER, KENMERK), LetterJob(long_name, "HVK/2026/0003/0009")],
        now=DATE,
        store=PdfStore(tmp_path / "store"),
        workers=2,
    )
    assert report.rendered == 1
    ((failed, error),) = report.failures
    assert failed.contact_id == 9
    assert "does not fit the envelope window" in error.message


def test_address_lines_follow_dutch_business_style() -> None:
    jansen = address_lines(
        role="wethouder",
        aanspreekvorm_raw="dhr.",
        voornaam="Jan",
        achternaam="Jansen",
        municipality="Súdwest-Fryslân",
    )
    assert jansen == ["De heer Jan Jansen", "Wethouder", "Gemeente Súdwest-Fryslân"]
    raadslid = address_lines(role="raadslid", municipality="Utrecht")
    assert raadslid == ["Lid van de gemeenteraad", "Gemeente Utrecht"]
    dijk = address_lines(role="burgemeester", achternaam="Dijk", tussenvoegsel="van", voorletters="A.")
    assert dijk == ["A. van Dijk", "Burgemeester"]


def test_a_letter_needs_a_signer(write_campaign: Callable[..., CampaignConfig]) -> None:
    toml = _letter_toml().replace('[signer]\nname = "Marit van den Heuvel"\nfunction = "directeur"\n', "")
    with pytest.raises(CampaignError, match="signer: is required with"):
        write_campaign(toml=toml, files={"brief.html.j2": "<p>x</p>", "brief.css": ""})


def test_the_letter_files_must_exist(write_campaign: Callable[..., CampaignConfig]) -> None:
    with pytest.raises(CampaignError, match=r"letter\.template: template 'brief.html.j2' not found"):
        write_campaign(toml=_letter_toml())


def test_the_cover_note_of_the_real_campaign_has_kenmerk_and_signer(registry: Engine) -> None:
    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    with Session(registry) as session:
        contact = add_contact(session, "weth@utrecht.nl", role="wethouder", portfolio="Jeugd")
        session.commit()
        contact_id = int(contact.id or 0)
    with registry.connect() as conn:
        recipient = load_recipients(conn, [contact_id])[contact_id]
    text = LetterComposer(campaign, kenmerk="HVK/2026/0001").render(recipient, token="x" * 16, now=DATE).text
    assert f"Ons kenmerk: HVK/2026/0001/{contact_id:04d}" in text
    assert "Marit van den Heuvel\ndirecteur-bestuurder, Het Vergeten Kind" in text


# -------------------------------------------------------------------------------------------- helpers


def _letter_toml() -> str:
    return """\
name = "Brief"
subject = "Brief voor {{ municipality.name }}"
text = "brief.txt.j2"

[signer]
name = "Marit van den Heuvel"
function = "directeur"

[letter]
template = "brief.html.j2"
stylesheet = "brief.css"

[from]
name = "Het Vergeten Kind"
address = "brieven@hetvergetenkind.nl"
place = "Utrecht"

[audience]
roles = ["wethouder"]
"""


@pytest.fixture
def write_letter(write_campaign: Callable[..., CampaignConfig]) -> Callable[..., CampaignConfig]:
    count = iter(range(100))

    def write(*, letter: str, css: str = "") -> CampaignConfig:
        return write_campaign(
            slug=f"letter{next(count)}",
            toml=_letter_toml(),
            files={"brief.html.j2": f"<html><body>{letter}</body></html>", "brief.css": css},
        )

    return write


def test_the_renderer_needs_a_letter_section(write_campaign: Callable[..., CampaignConfig]) -> None:
    with pytest.raises(CampaignError, match="no \\[letter\\] section"):
        LetterRenderer(write_campaign())


# ------------------------------------------------------------------------------------------------ CLI


def _cli(runner: CliRunner, db_url: str, *args: str) -> Result:
    return runner.invoke(app, ["--database", db_url, *args])


def test_check_fails_a_letter_whose_address_overflows_the_window(
    registry: Engine, db_url: str, runner: CliRunner
) -> None:
    with Session(registry) as session:
        add_contact(session, "a.dekker@utrecht.nl", role="wethouder", portfolio="Jeugd", achternaam="Dekker")
        add_contact(
            session,
            "lang@utrecht.nl",
            role="wethouder",
            portfolio="Jeugd",
            voorletters="A.B.C.D.E.F.",
            achternaam="Oldenbarnevelt tot Bloemendaal-Gravenhorst",
        )
        session.commit()
    result = _cli(runner, db_url, "check", "--campaign", "wethouders-jeugd")
    assert result.exit_code == 1
    assert "FAIL lang@utrecht.nl:" in result.stdout
    assert "the address does not fit the envelope window" in result.stdout
    assert "a.dekker@utrecht.nl" not in result.stdout.split("Failures by problem")[0]
    assert "1 letters rendered" in result.stdout and "1 failures" in result.stdout
    approve = _cli(runner, db_url, "approve", "--campaign", "wethouders-jeugd", "--by", "Freke")
    assert approve.exit_code == 1 and "cannot be approved" in approve.stderr


def test_preview_writes_the_pdf_beside_the_eml_and_links_it(
    registry: Engine, db_url: str, runner: CliRunner, tmp_path: Path
) -> None:
    with Session(registry) as session:
        add_contact(session, "a.dekker@utrecht.nl", role="wethouder", portfolio="Jeugd", achternaam="Dekker")
        session.commit()
    out = tmp_path / "preview"
    result = _cli(runner, db_url, "preview", "--campaign", "wethouders-jeugd", "--out", str(out))
    assert result.exit_code == 0, result.output
    (pdf,) = out.glob("*.pdf")
    assert pdf.with_suffix(".eml").exists()
    assert f'href="{pdf.name}"' in (out / "index.html").read_text(encoding="utf-8")
    text = " ".join(" ".join(page_texts(pdf.read_bytes())).split())
    assert "Ons kenmerk HVK/" in text and "Gemeente Utrecht" in text


def test_the_automatic_copy_line_only_where_the_template_does_not_word_the_copy(
    registry: Engine, write_campaign: Callable[..., CampaignConfig]
) -> None:
    toml = """\
name = "Brief"
subject = "Brief voor {{ municipality.name }}"
text = "brief.txt.j2"
griffie_copy = "separate"

[from]
name = "Het Vergeten Kind"
address = "brieven@hetvergetenkind.nl"

[audience]
roles = ["wethouder"]
"""
    with Session(registry) as session:
        griffie = add_contact(session, "griffie@utrecht.nl", role="griffie")
        session.commit()
        griffie_id = int(griffie.id or 0)
    with registry.connect() as conn:
        recipient = load_recipients(conn, [griffie_id])[griffie_id]
    plain = write_campaign(slug="plain", toml=toml, files={"brief.txt.j2": "{{ aanhef }},\n\nDe brief.\n"})
    text = LetterComposer(plain).render(recipient, token="x" * 16, now=DATE).text
    assert text.startswith("Kopie voor de griffie: deze brief hebben wij op dinsdag 1 december 2026")
    worded = write_campaign(
        slug="worded",
        toml=toml,
        files={
            "brief.txt.j2": "{{ aanhef }},\n\n{% if copy %}Ter kennisname.{% else %}De brief.{% endif %}\n"
        },
    )
    text = LetterComposer(worded).render(recipient, token="x" * 16, now=DATE).text
    assert text.startswith("Geachte griffie,\n\nTer kennisname.") and "Kopie voor de griffie" not in text
