"""Letters laid out one after another by one renderer (a worker's batch) are each exactly the letter laid
out alone: the caches a renderer keeps between letters (images, fonts, stylesheets) and its faster way of
writing the PDF change no byte, and no letter gets another's content, kenmerk or page count."""

from __future__ import annotations

import gc
import io
from dataclasses import replace
from pathlib import Path

import pytest
from pypdf import PdfReader

from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.pdf import PDF_VARIANT, LetterRenderer
from outreach.letters.pdf_letters import CampaignPdfs, LetterJob, prepare_pdfs
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import Recipient, postal_lines
from outreach.letters.render import CampaignTemplates
from tests.fixtures_letters import TEMPLATES
from tests.test_letters_pdf_letter import DATE, GRIFFIE, WETHOUDER

OTHER = replace(
    WETHOUDER,
    contact_id=913,
    voorletters="P.",
    tussenvoegsel="van der",
    achternaam="Berg",
    aanspreekvorm="heer",
    portfolio="Sociaal domein en jeugd",
    municipality_id=2,
    municipality="Zwolle",
    cbs_code="GM0193",
    griffie_email="griffie@zwolle.nl",
    postal=postal_lines("Postbus 10007", "8000 GA", "Zwolle"),
)


@pytest.fixture(scope="module")
def campaign() -> CampaignConfig:
    return load_campaign(TEMPLATES, "wethouders-jeugd")


def kenmerk_of(recipient: Recipient) -> str:
    return f"HVK/2026/0003/{recipient.contact_id:04d}"


def html_of(campaign: CampaignConfig, recipient: Recipient) -> str:
    return CampaignPdfs(campaign, CampaignTemplates(campaign)).html(
        recipient, now=DATE, kenmerk=kenmerk_of(recipient)
    )


def alone(campaign: CampaignConfig, recipient: Recipient) -> bytes:
    """The letter laid out by a renderer that has laid out nothing before."""
    return LetterRenderer(campaign).render(html_of(campaign, recipient), where="test").data


def texts(data: bytes) -> list[str]:
    return [" ".join((page.extract_text() or "").split()) for page in PdfReader(io.BytesIO(data)).pages]


def test_the_renderer_writes_weasyprints_own_bytes(campaign: CampaignConfig) -> None:
    """The shared image cache and the PDF objects serialised once give what plain WeasyPrint writes."""
    import hashlib

    from weasyprint import HTML

    renderer = LetterRenderer(campaign)
    fetcher, fonts, sheets = renderer._weasy
    for recipient in (WETHOUDER, GRIFFIE):  # one page and two
        html = html_of(campaign, recipient)
        base_url = campaign.folder.resolve().as_uri() + "/"
        document = HTML(string=html, base_url=base_url, url_fetcher=fetcher).render(
            stylesheets=sheets, font_config=fonts, pdf_variant=PDF_VARIANT
        )
        identifier = hashlib.md5(html.encode("utf-8"), usedforsecurity=False).hexdigest().encode()
        plain = document.write_pdf(pdf_variant=PDF_VARIANT, pdf_identifier=identifier)
        assert renderer.render(html, where="test").data == plain


def test_letters_after_one_another_are_each_the_letter_alone(campaign: CampaignConfig) -> None:
    renderer = LetterRenderer(campaign)
    order = [WETHOUDER, GRIFFIE, OTHER, WETHOUDER, GRIFFIE]
    batch = [renderer.render(html_of(campaign, r), where="test") for r in order]
    for recipient, rendered in zip(order, batch, strict=True):
        assert rendered.data == alone(campaign, recipient), recipient.label
    one, two, other = (texts(rendered.data) for rendered in batch[:3])
    assert len(one) == 1 and len(two) == 2 and len(other) == 1
    assert "pagina" not in one[0] and "pagina" not in other[0] and "pagina" not in two[0]
    assert "pagina 2 van 2" in two[1] and f"Ons kenmerk {kenmerk_of(GRIFFIE)}" in two[1]
    assert f"Ons kenmerk {kenmerk_of(WETHOUDER)}" in one[0] and "Geachte mevrouw De Vries," in one[0]
    assert f"Ons kenmerk {kenmerk_of(OTHER)}" in other[0] and "Geachte heer Van der Berg," in other[0]
    for page in one:
        assert kenmerk_of(OTHER) not in page and "Zwolle" not in page and "Van der Berg" not in page
    for page in other:
        assert kenmerk_of(WETHOUDER) not in page and "Utrecht, 1 december" in page  # the sender's place
        assert "De Vries" not in page and "UTRECHT" not in page


@pytest.mark.parametrize("workers", [1, 2])
def test_prepared_batches_hold_each_recipients_own_letter(
    campaign: CampaignConfig, tmp_path: Path, workers: int
) -> None:
    # 12 letters: two tasks of 8 and 4 letters, in one process or in two worker processes.
    people = [replace(OTHER if n % 3 else WETHOUDER, contact_id=100 + n) for n in range(11)] + [GRIFFIE]
    store = PdfStore(tmp_path / "store")
    thresholds = gc.get_threshold()
    report = prepare_pdfs(
        campaign, [LetterJob(r, kenmerk_of(r)) for r in people], now=DATE, store=store, workers=workers
    )
    assert gc.get_threshold() == thresholds  # the collector's settings are the caller's again
    assert (report.rendered, report.pages, report.failures) == (12, 13, [])
    pdfs = CampaignPdfs(campaign, CampaignTemplates(campaign))
    for recipient in people:
        data = store.get(pdfs.key(html_of(campaign, recipient)))
        assert data is not None
        pages = texts(data)
        assert f"Ons kenmerk {kenmerk_of(recipient)}" in pages[0]
        assert [kenmerk_of(r) in " ".join(pages) for r in people].count(True) == 1
        assert data == alone(campaign, recipient)
    assert "pagina 2 van 2" in texts(alone(campaign, GRIFFIE))[1]
