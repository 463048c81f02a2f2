"""Which column of an import file holds what: Dutch and English headers, case/space/BOM-insensitive."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from outreach.errors import ImportFileError
from outreach.registry.keys import fold


class Column(StrEnum):
    FULL_NAME = "naam"
    TITLE = "titel"
    VOORLETTERS = "voorletters"
    VOORNAAM = "voornaam"
    TUSSENVOEGSEL = "tussenvoegsel"
    ACHTERNAAM = "achternaam"
    ROLE = "functie"
    PORTFOLIO = "portefeuille"
    PARTY = "fractie"
    EMAIL = "e-mail"
    MUNICIPALITY = "gemeente"
    MUNICIPALITY_CODE = "gemeentecode"
    PROVINCE = "provincie"
    AANHEF = "aanhef"
    GENDER = "geslacht"
    TERM_END = "einde termijn"


# Header spellings after _header_key(): folded, everything but letters and digits removed.
_SYNONYMS: dict[Column, tuple[str, ...]] = {
    Column.FULL_NAME: ("naam", "volledigenaam", "name", "fullname", "contactpersoon", "persoon"),
    Column.TITLE: ("titel", "title", "titulatuur", "academischetitel"),
    Column.VOORLETTERS: ("voorletters", "voorl", "initialen", "initials"),
    Column.VOORNAAM: ("voornaam", "voornamen", "roepnaam", "firstname", "givenname"),
    Column.TUSSENVOEGSEL: ("tussenvoegsel", "tussenvoegsels", "tussenv", "voorvoegsel", "voorvoegsels"),
    Column.ACHTERNAAM: (
        "achternaam",
        "geslachtsnaam",
        "familienaam",
        "surname",
        "lastname",
        "familyname",
    ),
    Column.ROLE: ("functie", "rol", "role", "function", "functietitel", "position", "jobtitle"),
    Column.PORTFOLIO: ("portefeuille", "portefeuilles", "portfolio", "portfolios"),
    Column.PARTY: ("fractie", "partij", "party", "politiekepartij", "fractienaam", "faction"),
    Column.EMAIL: (
        "email",
        "emailadres",
        "emailaddress",
        "mail",
        "mailadres",
        "emailadressen",
    ),
    Column.MUNICIPALITY: ("gemeente", "gemeentenaam", "municipality", "municipalityname"),
    Column.MUNICIPALITY_CODE: (
        "gemeentecode",
        "cbscode",
        "codegemeente",
        "gemcode",
        "gmcode",
        "municipalitycode",
    ),
    Column.PROVINCE: ("provincie", "provincienaam", "province"),
    Column.AANHEF: ("aanhef", "aanspreekvorm", "aanspreektitel", "salutation"),
    Column.GENDER: ("geslacht", "gender", "sekse"),
    Column.TERM_END: (
        "eindetermijn",
        "termijneinde",
        "termijntot",
        "zittingtot",
        "einddatum",
        "termend",
    ),
}
_BY_KEY: dict[str, Column] = {key: column for column, keys in _SYNONYMS.items() for key in keys}
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_PARENTHESISED = re.compile(r"\(.*?\)")


def _header_key(header: str) -> str:
    # "E-mailadres (werk)" and "\ufeffE-mail" both become "emailadres"/"email".
    text = _PARENTHESISED.sub(" ", header.replace("\ufeff", ""))
    return _NOT_ALNUM.sub("", fold(text))


def column_for(header: str) -> Column | None:
    """The registry field a header names, or None for a column outreach ignores."""
    return _BY_KEY.get(_header_key(header))


def column_letter(index: int) -> str:
    """Spreadsheet letter of a 0-based column index: 0 -> A, 27 -> AB."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


@dataclass(frozen=True)
class ColumnMap:
    """Where each known field sits in a row, and which headers were ignored."""

    positions: dict[Column, int]
    headers: tuple[str, ...]
    ignored: tuple[str, ...]

    def header_of(self, column: Column) -> str:
        return self.headers[self.positions[column]]


def map_columns(headers: list[str], *, where: str) -> ColumnMap:
    """Map a header row; ``ImportFileError`` when two columns claim one field or no e-mail column exists."""
    positions: dict[Column, int] = {}
    ignored: list[str] = []
    for index, header in enumerate(headers):
        column = column_for(header)
        if column is None:
            if header.strip():
                ignored.append(header.strip())
            continue
        if column in positions:
            first = positions[column]
            raise ImportFileError(
                f"{where}: columns {column_letter(first)} ({headers[first].strip()!r}) and "
                f"{column_letter(index)} ({header.strip()!r}) both hold the {column.value}",
                hint="remove or rename one of them",
            )
        positions[column] = index
    if Column.EMAIL not in positions:
        found = ", ".join(repr(h.strip()) for h in headers if h.strip()) or "none"
        raise ImportFileError(
            f"{where}: no e-mail column (headers found: {found})",
            hint="name the column E-mail, E-mailadres or Email",
        )
    if Column.ROLE not in positions:
        raise ImportFileError(
            f"{where}: no Functie column: outreach cannot tell raadsleden from wethouders",
            hint="add a column Functie (raadslid, wethouder, burgemeester, griffie, ...)",
        )
    return ColumnMap(positions=positions, headers=tuple(headers), ignored=tuple(ignored))


def is_header_row(cells: list[str]) -> bool:
    """True when ``cells`` looks like a header row: one of them names the e-mail column."""
    return any(column_for(cell) is Column.EMAIL for cell in cells if cell)
