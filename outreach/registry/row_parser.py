"""One row of a council list turned into Contact values: names split and normalised, the role and
municipality resolved, the address checked, every cell within its limits; or the reason it is rejected."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from outreach.models import Role
from outreach.registry.columns import Column, ColumnMap, column_letter
from outreach.registry.emails import AddressChecker, InvalidAddress
from outreach.registry.keys import email_hash, email_key, fold, office_key, sort_name
from outreach.registry.names import (
    PARTICLES,
    normalize_tussenvoegsel,
    normalize_voorletters,
    split_full_name,
)
from outreach.registry.resolve import MunicipalityResolver, Place, Unresolved
from outreach.registry.values import (
    CONTROL_CHARS,
    ROLE_NAMES,
    clean,
    control_character,
    parse_aanspreekvorm,
    parse_date,
    parse_role,
)

_GRIFFIE_NAMES = ("griffie", "raadsgriffie", "de griffie")


class RowRejected(ValueError):
    """One row cannot be imported; the message is the reason written to the rejects file, ``kind`` the
    reason without the row's details, for the summary."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind


class BlankRow(Exception):
    """A row of nothing but spaces: not data, like an empty row."""


@dataclass(slots=True)
class Candidate:
    row: int
    values: dict[str, Any]  # Contact column -> value
    office_key: str
    email_hash: str


# Plain-string keys for the per-row dictionaries: a StrEnum member hashes through Python code, a str in C.
_FULL_NAME = Column.FULL_NAME.value
_TITLE = Column.TITLE.value
_VOORLETTERS = Column.VOORLETTERS.value
_VOORNAAM = Column.VOORNAAM.value
_TUSSENVOEGSEL = Column.TUSSENVOEGSEL.value
_ACHTERNAAM = Column.ACHTERNAAM.value
_ROLE = Column.ROLE.value
_PORTFOLIO = Column.PORTFOLIO.value
_PARTY = Column.PARTY.value
_EMAIL = Column.EMAIL.value
_MUNICIPALITY = Column.MUNICIPALITY.value
_MUNICIPALITY_CODE = Column.MUNICIPALITY_CODE.value
_PROVINCE = Column.PROVINCE.value
_AANHEF = Column.AANHEF.value
_GENDER = Column.GENDER.value
_TERM_END = Column.TERM_END.value

# No name, party or role is longer than this; a longer cell is an error in the list (a pasted text, a
# merged row), and a name of 2,000 characters made mail headers that servers refuse. The e-mail
# address has its own limit (254, RFC 5321) in the address check; a portfolio may list many subjects.
MAX_CELL = 200
_MAX_CELL_OF = {_EMAIL: 320, _PORTFOLIO: 500}

_Names = tuple[str | None, str | None, str | None, str | None, str | None, str | None]
_sort_name = lru_cache(maxsize=65536)(sort_name)  # surnames repeat: Jansen, de Vries, Bakker


class RowParser:
    """Turns the cells of one row into Contact values, or raises RowRejected with the reason."""

    def __init__(self, columns: ColumnMap, resolver: MunicipalityResolver, delimiter: str | None) -> None:
        self.resolver = resolver
        self.addresses = AddressChecker()
        self.width = len(columns.headers)
        self.delimiter = delimiter
        mapped = sorted(columns.positions.items(), key=lambda item: item[1])
        self._keys = [column.value for column, _ in mapped]
        self._indices = [index for _, index in mapped]
        self._headers = [columns.headers[index].strip() or column_letter(index) for _, index in mapped]
        self._absent = {column.value: "" for column in Column if column not in columns.positions}
        self._has_place = (
            Column.MUNICIPALITY in columns.positions or Column.MUNICIPALITY_CODE in columns.positions
        )

    def parse(self, row: int, cells: list[str]) -> Candidate:
        width = self.width
        if len(cells) != width:
            if len(cells) > width and any(c.strip() for c in cells[width:]):
                hint = f": a {self.delimiter!r} inside a value that is not quoted?" if self.delimiter else ""
                raise RowRejected("too many fields", f"{len(cells)} fields but the header has {width}{hint}")
            cells = cells[:width] + [""] * (width - len(cells))
        raw = [cells[i] for i in self._indices]
        joined = "".join(raw)
        if not joined.strip() and not "".join(cells).strip():
            raise BlankRow
        if CONTROL_CHARS.search(joined) is not None:
            for value, index, header in zip(raw, self._indices, self._headers, strict=True):
                bad = control_character(value)
                if bad is not None:
                    raise RowRejected(
                        "control character", f"{bad} in column {column_letter(index)} ({header})"
                    )
        # One check for the whole row: most rows need no more than stripping.
        if "  " in joined or not joined.isprintable():
            v = dict(zip(self._keys, map(clean, raw), strict=True))
        else:
            v = dict(zip(self._keys, map(str.strip, raw), strict=True))
        if len(joined) > MAX_CELL:
            self._check_lengths(v)
        v.update(self._absent)

        email = v[_EMAIL]
        if email[:7].casefold() == "mailto:":
            email = email[7:].strip()
        if not email:
            raise RowRejected("no e-mail address")
        if email.count("@") > 1 and any(sep in email for sep in (";", ",", " ")):
            raise RowRejected(
                "more than one e-mail address",
                f"more than one e-mail address in {email!r}: one row per address",
            )
        try:
            normalized = self.addresses.normalize(email)
        except InvalidAddress as exc:
            raise RowRejected("invalid e-mail address", f"invalid e-mail address {email!r}: {exc}") from None

        role_text = v[_ROLE]
        if not role_text:
            raise RowRejected("no Functie")
        parsed_role = parse_role(role_text)
        if parsed_role is None:
            raise RowRejected(
                "unknown Functie", f"unknown Functie {role_text!r}; expected one of {ROLE_NAMES}"
            )
        role, role_portfolio = parsed_role
        role_value = role.value

        place = self._place(v, role)
        title, voorletters, voornaam, tussenvoegsel, achternaam, named_aanspreekvorm = self._names(v, role)
        aanspreekvorm = (
            (parse_aanspreekvorm(v[_AANHEF]) if v[_AANHEF] else None)
            or (parse_aanspreekvorm(v[_GENDER], gender_column=True) if v[_GENDER] else None)
            or named_aanspreekvorm
        )
        term_end: date | None = None
        if v[_TERM_END]:
            term_end = parse_date(v[_TERM_END])
            if term_end is None:
                raise RowRejected(
                    "invalid Einde termijn",
                    f"Einde termijn {v[_TERM_END]!r} is not a date like 31-03-2030",
                )

        key = email_key(normalized)
        values: dict[str, Any] = {
            "municipality_id": place.id if place else None,
            "role": role_value,
            "email": email,
            "email_normalized": normalized,
            "email_key": key,
            "title": title,
            "voorletters": voorletters,
            "voornaam": voornaam,
            "tussenvoegsel": tussenvoegsel,
            "achternaam": achternaam,
            "aanspreekvorm": aanspreekvorm,
            "portfolio": v[_PORTFOLIO] or role_portfolio,
            "party": v[_PARTY] or None,
            "term_end": term_end,
            "sort_name": _sort_name(achternaam, tussenvoegsel),
        }
        return Candidate(
            row=row,
            values=values,
            office_key=office_key(key, place.cbs_code if place else None, role_value),
            email_hash=email_hash(key),
        )

    def _check_lengths(self, v: dict[str, str]) -> None:
        for key, index, header in zip(self._keys, self._indices, self._headers, strict=True):
            limit = _MAX_CELL_OF.get(key, MAX_CELL)
            if len(v[key]) > limit:
                raise RowRejected(
                    "value too long",
                    f"column {column_letter(index)} ({header}) is {len(v[key])} characters long;"
                    f" at most {limit}",
                )

    def _place(self, v: dict[str, str], role: Role) -> Place | None:
        code = v[_MUNICIPALITY_CODE]
        name = v[_MUNICIPALITY]
        if not code and not name:
            if role is Role.SUPPORTER:
                return None
            where = "the Gemeente cell is empty" if self._has_place else "the file has no Gemeente column"
            raise RowRejected("no municipality", f"no municipality for a {role.value}: {where}")
        try:
            return self.resolver.resolve(code, name, v[_PROVINCE])
        except Unresolved as exc:
            raise RowRejected(exc.kind, str(exc)) from None

    def _names(self, v: dict[str, str], role: Role) -> _Names:
        """(title, voorletters, voornaam, tussenvoegsel, achternaam, aanspreekvorm from the name)."""
        achternaam = v[_ACHTERNAAM] or None
        tussenvoegsel = normalize_tussenvoegsel(v[_TUSSENVOEGSEL]) if v[_TUSSENVOEGSEL] else None
        title = v[_TITLE] or None
        voorletters = normalize_voorletters(v[_VOORLETTERS]) if v[_VOORLETTERS] else None
        voornaam = v[_VOORNAAM] or None
        full = v[_FULL_NAME]
        if full and role is Role.GRIFFIE and fold(full).startswith(_GRIFFIE_NAMES):
            full = ""  # "Griffie Utrecht" names the mailbox, not a person
        if achternaam is None and full:
            split = split_full_name(full)
            return (
                title or split.title,
                voorletters or split.voorletters,
                voornaam or split.voornaam,
                tussenvoegsel or split.tussenvoegsel,
                split.achternaam,
                split.aanspreekvorm,
            )
        if achternaam is not None:
            # "van der Berg" in Achternaam: keep the particle in tussenvoegsel only.
            if tussenvoegsel:
                if achternaam.casefold().startswith(tussenvoegsel.casefold() + " "):
                    achternaam = achternaam[len(tussenvoegsel) + 1 :].strip()
            elif achternaam.split(maxsplit=1)[0].casefold() in PARTICLES:
                split = split_full_name(f"X {achternaam}")
                if split.tussenvoegsel and split.achternaam:
                    tussenvoegsel, achternaam = split.tussenvoegsel, split.achternaam
        return (title, voorletters, voornaam, tussenvoegsel, achternaam, None)
