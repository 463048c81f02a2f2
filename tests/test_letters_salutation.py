"""The salutation table of docs/campaigns.md, row by row, and the Dutch dates."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from outreach.letters.dates import long_date, short_date
from outreach.letters.salutation import aanhef, display_name

DOCS = Path(__file__).resolve().parent.parent / "docs" / "campaigns.md"

# (role, aanspreekvorm, tussenvoegsel, achternaam, style, expected) — the same rows as the docs table.
ROWS = [
    ("raadslid", "mevrouw", "van", "Dijk", "formal", "Geachte mevrouw Van Dijk"),
    ("raadslid", "heer", "van der", "Berg", "formal", "Geachte heer Van der Berg"),
    ("wethouder", "mevrouw", None, "de Vries", "formal", "Geachte mevrouw De Vries"),
    ("raadslid", "heer", "'t", "Hart", "formal", "Geachte heer 't Hart"),
    ("burgemeester", "Dhr.", None, "Jansen", "formal", "Geachte heer Jansen"),
    ("raadslid", "Mw.", None, "Bakker", "formal", "Geachte mevrouw Bakker"),
    ("raadslid", None, "van", "Dijk", "formal", "Geacht raadslid"),
    ("raadslid", "mevrouw", None, None, "formal", "Geacht raadslid"),
    ("raadslid", "onbekend", None, "Smit", "formal", "Geacht raadslid"),
    ("wethouder", None, None, "Visser", "formal", "Geachte wethouder"),
    ("burgemeester", None, None, None, "formal", "Geachte burgemeester"),
    ("loco-burgemeester", None, None, None, "formal", "Geachte loco-burgemeester"),
    ("griffie", "heer", None, "Mulder", "formal", "Geachte griffie"),
    ("griffie", None, None, None, "formal", "Geachte griffie"),
    ("griffier", None, None, "Kok", "formal", "Geachte griffier"),
    ("burgerraadslid", None, None, None, "formal", "Geacht burgerraadslid"),
    ("commissielid", None, None, None, "formal", "Geacht commissielid"),
    ("fractieassistent", None, None, None, "formal", "Geachte fractieassistent"),
    ("gemeentesecretaris", None, None, None, "formal", "Geachte gemeentesecretaris"),
    ("supporter", None, None, "de Boer", "formal", "Geachte heer/mevrouw"),
    ("supporter", "mevrouw", None, "de Boer", "formal", "Geachte mevrouw De Boer"),
    ("raadslid", None, None, None, "informal", "Beste raadslid"),
    ("wethouder", "mevrouw", "van", "Dijk", "informal", "Beste mevrouw Van Dijk"),
]


@pytest.mark.parametrize(("role", "form", "particle", "surname", "style", "expected"), ROWS)
def test_salutation_rule(
    role: str, form: str | None, particle: str | None, surname: str | None, style: str, expected: str
) -> None:
    got = aanhef(role, aanspreekvorm_raw=form, tussenvoegsel=particle, achternaam=surname, style=style)  # type: ignore[arg-type]
    assert got == expected


def test_the_docs_table_lists_exactly_the_tested_rows() -> None:
    table = DOCS.read_text(encoding="utf-8").split("<!-- salutation-table -->")[1]
    rows = []
    for line in table.strip().splitlines()[2:]:
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        rows.append(tuple(None if cell == "—" else cell for cell in cells))
    assert rows == ROWS


def test_surname_particle_is_not_repeated_when_the_source_put_it_in_both_fields() -> None:
    assert aanhef("raadslid", aanspreekvorm_raw="mevrouw", tussenvoegsel="van", achternaam="van Dijk") == (
        "Geachte mevrouw Van Dijk"
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"voornaam": "Jan", "tussenvoegsel": "van der", "achternaam": "Berg"}, "Jan van der Berg"),
        ({"voorletters": "J.P.", "tussenvoegsel": "van der", "achternaam": "Berg"}, "J.P. van der Berg"),
        ({"tussenvoegsel": "van der", "achternaam": "Berg"}, "Van der Berg"),
        ({"voornaam": "Søren", "achternaam": "Ærø"}, "Søren Ærø"),
        ({}, ""),
    ],
)
def test_display_name_capitalises_the_particle_only_when_nothing_precedes_it(
    fields: dict[str, str], expected: str
) -> None:
    args: dict[str, str | None] = {
        "voornaam": None,
        "voorletters": None,
        "tussenvoegsel": None,
        "achternaam": None,
    }
    assert display_name(role="raadslid", municipality="Utrecht", **(args | fields)) == expected


def test_display_name_of_the_griffie_is_the_office() -> None:
    none = {"voornaam": None, "voorletters": None, "tussenvoegsel": None}
    assert (
        display_name(role="griffie", municipality="Utrecht", achternaam="Mulder", **none) == "Griffie Utrecht"
    )


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2024, 1, 25), "donderdag 25 januari 2024"),
        (date(2026, 3, 18), "woensdag 18 maart 2026"),
        (date(2025, 6, 1), "zondag 1 juni 2025"),
        (date(2026, 12, 31), "donderdag 31 december 2026"),
    ],
)
def test_long_date_in_dutch(day: date, expected: str) -> None:
    assert long_date(day) == expected


def test_long_date_of_a_utc_moment_is_the_dutch_calendar_day() -> None:
    # 23:30 UTC on 31 December is already 1 January in Amsterdam (CET, UTC+1).
    assert long_date(datetime(2025, 12, 31, 23, 30)) == "donderdag 1 januari 2026"
    assert short_date(datetime(2026, 7, 14, 22, 30)) == "15 juli 2026"  # CEST, UTC+2
