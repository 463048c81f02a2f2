"""The formal letter as a PDF: the campaign's ``[letter]`` HTML template laid out by WeasyPrint.

WeasyPrint was chosen over fpdf2 on measurements of the real letter (docs/performance.md#pdf-letters):
as fast per letter, and the letter stays an HTML template with a CSS stylesheet (paged media: page
counters, margin boxes), written by the same people in the same sandbox as the e-mail. The page is A4;
the address lies in the window of a window envelope (:data:`WINDOW`), which ``check`` verifies on the
laid-out page for every recipient. Fonts come from outreach itself (Open Sans in
``outreach/letters/fonts``, Apache 2.0) or the campaign folder, and are embedded (subset); the PDF is
PDF/A-3b for the griffies' archives, and its bytes depend only on the letter (no clock, no random id).

WeasyPrint is imported on first use: it takes about 1.5 s, which a campaign without a letter, and every
other command, should not pay.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from outreach.errors import CampaignError, TemplateError
from outreach.letters.address import MAX_LINES
from outreach.letters.campaign import CampaignConfig

FONTS = Path(__file__).parent / "fonts"
PDF_VARIANT = "pdf/a-3b"
#: The element of the letter template that holds the address: it must lie in the envelope's window.
ADDRESS_ID = "adres"

_MM = 96 / 25.4  # CSS px per millimetre: WeasyPrint lays out in CSS px


@dataclass(frozen=True)
class Box:
    """A rectangle on the page, in millimetres from the top left corner."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def holds(self, other: Box, slack: float = 0.01) -> bool:
        return (
            other.left >= self.left - slack
            and other.top >= self.top - slack
            and other.right <= self.right + slack
            and other.bottom <= self.bottom + slack
        )


#: The window of a left-window envelope (C5/6, DL) on an A4 letter folded in three: 85 x 40 mm,
#: 20 mm from the left and 45 mm from the top edge of the sheet.
WINDOW = Box(left=20, top=45, width=85, height=40)

_FONT_FACES = "\n".join(
    f"@font-face {{ font-family: 'Open Sans'; font-weight: {weight}; font-style: {style};"
    f" src: url('{(FONTS / file).as_uri()}'); }}"
    for file, weight, style in (
        ("OpenSans-Regular.ttf", 400, "normal"),
        ("OpenSans-Italic.ttf", 400, "italic"),
        ("OpenSans-Semibold.ttf", 600, "normal"),
        ("OpenSans-Bold.ttf", 700, "normal"),
    )
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderedPdf:
    data: bytes
    pages: int
    address_lines: int


def _text_boxes(box: Any) -> list[Any]:
    from weasyprint.formatting_structure import boxes

    return [b for b in box.descendants() if isinstance(b, boxes.TextBox) and b.text.strip()]


def _mm(box: Any) -> Box:
    return Box(
        box.position_x / _MM, box.position_y / _MM, box.margin_width() / _MM, box.margin_height() / _MM
    )


def _address_box(page_box: Any) -> Any | None:
    for box in page_box.descendants():
        element = getattr(box, "element", None)
        if element is not None and element.get("id") == ADDRESS_ID:
            return box
    return None


class LetterRenderer:
    """One campaign's letter layout: fonts, stylesheet and allowed files, prepared once per process."""

    def __init__(self, campaign: CampaignConfig) -> None:
        if campaign.letter is None:
            raise CampaignError(f"campaign {campaign.slug} has no [letter] section")
        self.campaign = campaign
        self.folder = campaign.folder.resolve()
        self._roots = (self.folder, FONTS.resolve())
        stylesheet = campaign.letter.stylesheet
        self._stylesheet_source = (self.folder / stylesheet).read_text(encoding="utf-8") if stylesheet else ""
        self._images: dict[str, Any] = {}

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over what shapes a letter besides its HTML: WeasyPrint's version, the fonts, and every
        file of the campaign folder a letter may use. Part of each PDF's cache key."""
        digest = hashlib.sha256(f"weasyprint {version('weasyprint')}\n{PDF_VARIANT}\n".encode())
        files = sorted(FONTS.glob("*.ttf")) + sorted(p for p in self.folder.rglob("*") if p.is_file())
        for path in files:
            digest.update(f"{path.name}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()

    @cached_property
    def _weasy(self) -> tuple[Any, Any, list[Any]]:
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        fetcher = _CampaignFetcher(self._roots)
        fonts = FontConfiguration()
        where = f"campaign {self.campaign.slug}"
        sheets = [CSS(string=_FONT_FACES, font_config=fonts, url_fetcher=fetcher)]
        if self._stylesheet_source:
            assert self.campaign.letter is not None and self.campaign.letter.stylesheet is not None
            try:
                sheets.append(
                    CSS(
                        string=self._stylesheet_source,
                        base_url=self.folder.as_uri() + "/",
                        font_config=fonts,
                        url_fetcher=fetcher,
                    )
                )
            except BaseException as exc:
                raise _fetch_error(exc, f"{where}: {self.campaign.letter.stylesheet}") from None
        return fetcher, fonts, sheets

    def render(self, html: str, *, where: str) -> RenderedPdf:
        """The PDF of one letter. Raises TemplateError (naming ``where``: campaign and recipient) when
        it cannot be laid out, fetches a file from outside the campaign, or its address does not fit the
        envelope window."""
        from weasyprint import HTML

        fetcher, fonts, sheets = self._weasy
        try:
            document = HTML(string=html, base_url=self.folder.as_uri() + "/", url_fetcher=fetcher).render(
                stylesheets=sheets, font_config=fonts, pdf_variant=PDF_VARIANT, cache=self._images
            )
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise _fetch_error(exc, where) from None
        lines = self._check_address(document, where)
        try:
            # A fixed identifier: the default one hashes the time of writing (byte-stable output,
            # and the content-addressed cache, need the same bytes for the same letter).
            identifier = hashlib.md5(html.encode("utf-8"), usedforsecurity=False).hexdigest().encode()
            data = document.write_pdf(
                pdf_variant=PDF_VARIANT, pdf_identifier=identifier, finisher=_serialise_once
            )
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise _fetch_error(exc, where) from None
        return RenderedPdf(data=data, pages=len(document.pages), address_lines=lines)

    def _check_address(self, document: Any, where: str) -> int:
        template = self.campaign.letter.template if self.campaign.letter else "?"
        if not document.pages:
            raise TemplateError(f"{where}: {template}: the letter has no page")
        block = _address_box(document.pages[0]._page_box)
        if block is None:
            raise TemplateError(
                f'{where}: {template}: no element with id="{ADDRESS_ID}" on the first page'
                " (the address block for the envelope window)"
            )
        texts = _text_boxes(block)
        lines = len({round(t.position_y, 1) for t in texts})
        for text in texts:
            if not WINDOW.holds(_mm(text)):
                place = _mm(text)
                raise TemplateError(
                    f"{where}: {template}: the address does not fit the envelope window"
                    f" ({WINDOW.width:g} x {WINDOW.height:g} mm at {WINDOW.left:g} mm, {WINDOW.top:g} mm):"
                    f" {text.text.strip()!r} reaches {place.right:.1f} mm x {place.bottom:.1f} mm",
                    hint="shorten the line or the address (at most 6 lines of 85 mm)",
                )
        if lines > MAX_LINES:
            raise TemplateError(
                f"{where}: {template}: the address has {lines} lines; at most {MAX_LINES} fit the window"
            )
        return lines


def _serialise_once(document: Any, pdf: Any) -> None:
    """WeasyPrint's finisher: fix each PDF object's bytes now. With a file identifier, pydyf serialises
    (and compresses) every object twice, once for the file and once for the identifier's hash."""
    for obj in pdf.objects:
        if obj.free != "f":
            data = obj.data
            obj.__class__ = _frozen_class(type(obj))
            obj.frozen_data = data


_FROZEN: dict[type, type] = {}


def _frozen_class(cls: type) -> type:
    frozen = _FROZEN.get(cls)
    if frozen is None:
        frozen = _FROZEN[cls] = type(f"Frozen{cls.__name__}", (cls,), {"data": property(_frozen_data)})
    return frozen


def _frozen_data(obj: Any) -> bytes:
    return obj.frozen_data  # type: ignore[no-any-return]


def _fetch_error(exc: BaseException, where: str) -> TemplateError:
    cause = exc.__cause__ or exc
    return TemplateError(f"{where}: the letter cannot be laid out as PDF: {cause}")


class _RefusedFile(Exception):
    pass


def _make_fetcher_class() -> type:
    from weasyprint.urls import URLFetcher

    class CampaignFetcher(URLFetcher):  # type: ignore[misc]
        """Files of the campaign folder and outreach's fonts, nothing else: no network, no other file."""

        def __init__(self, roots: tuple[Path, ...]) -> None:
            super().__init__(allowed_protocols=("file", "data"), fail_on_errors=True)
            self._roots = roots

        def fetch(self, url: str, headers: Any = None) -> Any:
            parts = urlsplit(url)
            if parts.scheme == "file":
                path = Path(unquote(parts.path)).resolve()
                if not any(path.is_relative_to(root) for root in self._roots):
                    raise _RefusedFile(f"{path} lies outside the campaign folder")
                if not path.is_file():
                    raise _RefusedFile(f"{path.name} not found in the campaign folder")
            elif parts.scheme != "data":
                raise _RefusedFile(f"{url[:80]!r}: a letter uses only files of its campaign folder")
            return super().fetch(url, headers)

    return CampaignFetcher


def _CampaignFetcher(roots: tuple[Path, ...]) -> Any:
    return _make_fetcher_class()(roots)
