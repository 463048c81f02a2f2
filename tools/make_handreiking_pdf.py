"""Build templates/letters/2026/handreiking-gezinshulp-eerst.pdf, the attachment of campaign 2026.

Run `.venv/bin/python tools/make_handreiking_pdf.py` after changing the text below, then review and
approve the campaign again (the PDF is part of its fingerprint). The output is reproducible: fpdf2 writes
a fixed creation date here, so the same text gives the same bytes (with the same fpdf2 release) and
the same approval fingerprint.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "templates" / "letters" / "2026" / "handreiking-gezinshulp-eerst.pdf"
GREEN = (0, 118, 96)
INK = (34, 34, 34)

TITLE = "Handreiking voor raadsleden: gezinshulp eerst"
INTRO = (
    "Elk jaar worden in Nederland duizenden kinderen uit huis geplaatst. Lang niet altijd is dat "
    "onvermijdelijk: vaak had tijdige, brede steun aan het gezin een uithuisplaatsing kunnen voorkomen. "
    "De kennis over wat werkt is er. Het komt erop aan dat gemeenten die kennis ook stelselmatig "
    "gebruiken. Deze handreiking helpt u als raadslid om daar in uw gemeente werk van te maken."
)
SECTIONS: list[tuple[str, list[str]]] = [
    (
        "Waarom gezinshulp eerst?",
        [
            "Een uithuisplaatsing is voor een kind ingrijpend, ook als die kort duurt: het verliest zijn "
            "vertrouwde omgeving, vaak ook zijn school en vrienden.",
            "De problemen die tot een plaatsing leiden, liggen vaak buiten de opvoeding zelf: schulden, "
            "slechte huisvesting, psychische problemen of verslaving van een ouder.",
            "Hulp die alleen op het kind is gericht, lost zulke problemen niet op. Steun aan het hele gezin "
            "wel.",
        ],
    ),
    (
        "Vragen die u in de raad kunt stellen",
        [
            "Hoeveel kinderen uit onze gemeente zijn de afgelopen drie jaar uit huis geplaatst, en bij "
            "hoeveel van hen is eerst gezinsondersteuning ingezet?",
            "Mogen onze wijkteams zonder lange procedures hulp inzetten op het gebied van wonen, inkomen en "
            "schulden, als dat een uithuisplaatsing kan voorkomen?",
            "Hoe werken jeugdhulp, schuldhulp, ggz en Wmo in onze gemeente samen rond één gezin, met één "
            "plan en één vast aanspreekpunt?",
            "Welke afspraken staan in onze inkoopcontracten over samenwerking tussen zorgaanbieders uit "
            "verschillende domeinen?",
        ],
    ),
    (
        "Voorstellen voor beleid en begroting",
        [
            "Geef wijkteams een breed mandaat en een eigen budget om te doen wat een gezin nodig heeft.",
            "Reserveer structureel geld voor gezinsondersteuning thuis, zoals ambulante gezinsbegeleiding "
            "en steungezinnen uit het eigen netwerk.",
            "Beloon in de inkoop van jeugdhulp samenwerking over de domeinen heen, en maak meerjarige "
            "afspraken zodat vaste hulpverleners bij het gezin kunnen blijven.",
            "Laat het college jaarlijks rapporteren hoeveel uithuisplaatsingen zijn voorkomen en wat "
            "daarvoor nodig was.",
        ],
    ),
    (
        "Wat Het Vergeten Kind voor u kan doen",
        [
            "Wij denken mee over moties, amendementen en begrotingsvragen, en brengen u in contact met "
            "gemeenten die al verder zijn.",
            "Wij delen verhalen van jongeren en ouders die een uithuisplaatsing hebben meegemaakt, zodat hun "
            "ervaring in uw afwegingen meeweegt.",
        ],
    ),
]
CONTACT = (
    "Het Vergeten Kind, Joseph Haydnlaan 2a, 3533 AE Utrecht  |  wereldvanaandacht@hetvergetenkind.nl  |  "
    "085 065 3450  |  www.hetvergetenkind.nl"
)


def build(out: Path) -> None:
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_creation_date(datetime(2026, 1, 5, tzinfo=UTC))
    pdf.set_title(TITLE)
    pdf.set_author("Het Vergeten Kind")
    pdf.set_subject("Week van Het Vergeten Kind 2026")
    pdf.set_lang("nl-NL")
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.add_page()

    pdf.set_font("Helvetica", "B", 9)
    pdf.set_text_color(*GREEN)
    pdf.cell(0, 5, "WEEK VAN HET VERGETEN KIND 2026", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 8, TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_text_color(*INK)
    pdf.set_font("Helvetica", "", 10)
    pdf.multi_cell(0, 5, INTRO, new_x="LMARGIN", new_y="NEXT")

    for heading, items in SECTIONS:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.set_text_color(*GREEN)
        pdf.multi_cell(0, 6, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*INK)
        pdf.set_font("Helvetica", "", 10)
        for item in items:
            pdf.set_x(pdf.l_margin)
            pdf.cell(5, 5, "-")
            pdf.multi_cell(0, 5, item, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(0.8)

    pdf.ln(4)
    pdf.set_draw_color(*GREEN)
    pdf.line(pdf.l_margin, pdf.get_y(), pdf.w - pdf.r_margin, pdf.get_y())
    pdf.ln(2)
    pdf.set_font("Helvetica", "", 8)
    pdf.multi_cell(0, 4, CONTACT, new_x="LMARGIN", new_y="NEXT")
    if pdf.page_no() != 1:
        raise SystemExit("the handreiking no longer fits on one page: shorten the text")
    pdf.output(str(out))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    build(target)
    print(f"wrote {target} ({target.stat().st_size} bytes)")
