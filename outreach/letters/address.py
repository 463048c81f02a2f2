"""The address block of a formal letter, as it shows in the window of a window envelope.

Dutch business style: the person (aanspreekvorm, initials, surname), the function, "Gemeente X" and
the municipality's postal address where the registry has it. At most :data:`MAX_LINES` lines fit the
window (85 x 40 mm); ``outreach check`` also measures the rendered block (outreach.letters.pdf).
"""

from __future__ import annotations

from collections.abc import Sequence

from outreach.letters.salutation import aanspreekvorm, surname
from outreach.models import Role

#: Lines the window of a C5/C6 window envelope shows at 10 pt (85 x 40 mm).
MAX_LINES = 6

_FUNCTION: dict[str, str] = {
    Role.RAADSLID: "Lid van de gemeenteraad",
    Role.WETHOUDER: "Wethouder",
    Role.BURGEMEESTER: "Burgemeester",
    Role.LOCO_BURGEMEESTER: "Loco-burgemeester",
    Role.GRIFFIER: "Griffier",
    Role.BURGERRAADSLID: "Burgerraadslid",
    Role.COMMISSIELID: "Commissielid",
    Role.FRACTIEASSISTENT: "Fractieassistent",
    Role.SECRETARIS: "Gemeentesecretaris",
}


def _spaces(text: str | None) -> str:
    return " ".join((text or "").split())


def name_line(
    *,
    role: str,
    aanspreekvorm_raw: str | None,
    voornaam: str | None,
    voorletters: str | None,
    tussenvoegsel: str | None,
    achternaam: str | None,
) -> str:
    """'Mevrouw A.B. van Dijk', 'De heer J. de Vries', 'A. van Dijk', or '' when no surname is known.

    Initials are the formal form on an envelope; the first name stands in when there are none. The
    griffie is an office, addressed by the caller."""
    last = _spaces(achternaam)
    if role == Role.GRIFFIE or not last:
        return ""
    first = _spaces(voorletters) or _spaces(voornaam)
    name = " ".join(p for p in (first, surname(tussenvoegsel, achternaam, leading=not first)) if p)
    form = aanspreekvorm(aanspreekvorm_raw)
    if form == "mevrouw":
        return f"Mevrouw {name}"
    if form == "heer":
        return f"De heer {name}"
    return name


def address_lines(
    *,
    role: str,
    aanspreekvorm_raw: str | None = None,
    voornaam: str | None = None,
    voorletters: str | None = None,
    tussenvoegsel: str | None = None,
    achternaam: str | None = None,
    municipality: str | None = None,
    postal: Sequence[str] = (),
) -> list[str]:
    """The lines of the address block, top to bottom, empty ones left out."""
    lines: list[str] = []
    if role == Role.GRIFFIE:
        lines.append("De griffie van de gemeenteraad")
    else:
        person = name_line(
            role=role,
            aanspreekvorm_raw=aanspreekvorm_raw,
            voornaam=voornaam,
            voorletters=voorletters,
            tussenvoegsel=tussenvoegsel,
            achternaam=achternaam,
        )
        function = _FUNCTION.get(role, "")
        if person:
            lines.append(person)
            if function:
                lines.append(function)
        elif function:
            lines.append(f"De {function[0].lower()}{function[1:]}" if role != Role.RAADSLID else function)
    if municipality:
        lines.append(f"Gemeente {municipality}")
    # Postal lines as given: "3500 CE  UTRECHT" keeps its two (no-break) spaces.
    lines.extend(line.strip() for line in postal if line.strip())
    return lines
