"""Cleaning and interpreting single cells: control characters, roles, salutations, dates."""

from __future__ import annotations

import re
from datetime import date, datetime
from functools import lru_cache

from outreach.models import Role
from outreach.registry.keys import fold

# C0 and C1 controls (CR, LF, NUL, TAB, ...), DEL, and the Unicode line and paragraph separators: any
# of them in a value bound for a mail header or a letter could split it (header injection).
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character(value: str) -> str | None:
    """A readable name of the first control character in ``value``, or None."""
    found = CONTROL_CHARS.search(value)
    if found is None:
        return None
    char = found.group()
    names = {"\r": "carriage return (CR)", "\n": "line feed (LF)", "\t": "tab", "\x00": "NUL"}
    return names.get(char, f"control character U+{ord(char):04X}")


def clean(value: str) -> str:
    """Trimmed, inner whitespace (also the no-break spaces of web pages) collapsed to one space."""
    text = value.strip()
    # isprintable() is False for every separator but the ASCII space: the rare cell that needs work.
    if "  " in text or not text.isprintable():
        return " ".join(text.split())
    return text


# (spellings after fold(), role); matched at the start of the Functie cell, longest first.
_ROLE_WORDS: tuple[tuple[str, Role], ...] = (
    ("loco-burgemeester", Role.LOCO_BURGEMEESTER),
    ("locoburgemeester", Role.LOCO_BURGEMEESTER),
    ("loco burgemeester", Role.LOCO_BURGEMEESTER),
    ("waarnemend burgemeester", Role.BURGEMEESTER),
    ("burgemeester", Role.BURGEMEESTER),
    ("mayor", Role.BURGEMEESTER),
    ("wethouder", Role.WETHOUDER),
    ("alderman", Role.WETHOUDER),
    ("alderwoman", Role.WETHOUDER),
    ("gemeenteraadslid", Role.RAADSLID),
    ("raadslid", Role.RAADSLID),
    ("lid van de gemeenteraad", Role.RAADSLID),
    ("lid gemeenteraad", Role.RAADSLID),
    ("lid van de raad", Role.RAADSLID),
    ("fractievoorzitter", Role.RAADSLID),  # chairs a fractie, and sits in the council
    ("councillor", Role.RAADSLID),
    ("council member", Role.RAADSLID),
    ("councilmember", Role.RAADSLID),
    ("burgerraadslid", Role.BURGERRAADSLID),
    ("burgerlid", Role.BURGERRAADSLID),
    ("commissielid", Role.COMMISSIELID),
    ("fractieassistent", Role.FRACTIEASSISTENT),
    ("fractiemedewerker", Role.FRACTIEASSISTENT),
    ("fractieondersteuner", Role.FRACTIEASSISTENT),
    ("plaatsvervangend griffier", Role.GRIFFIER),
    ("plv. griffier", Role.GRIFFIER),
    ("plv griffier", Role.GRIFFIER),
    ("raadsgriffier", Role.GRIFFIER),
    ("griffier", Role.GRIFFIER),
    ("raadsgriffie", Role.GRIFFIE),
    ("griffie", Role.GRIFFIE),
    ("gemeentesecretaris", Role.SECRETARIS),
    ("secretaris", Role.SECRETARIS),
    ("supporter", Role.SUPPORTER),
)
# Offices whose Functie may carry the portfolio: "Wethouder Jeugd en Onderwijs".
_PORTFOLIO_ROLES = frozenset({Role.WETHOUDER, Role.BURGEMEESTER, Role.LOCO_BURGEMEESTER})
_PORTFOLIO_LEAD = re.compile(
    r"^(?:[\s\-–:,(/]|van\b|voor\b|portefeuilles?\b|(?:en\s+)?loco[\s-]?burgemeester\b)+", re.IGNORECASE
)


def _after(text: str, folded_prefix: str) -> str:
    # fold() may change the length of what it folds (ligatures, doubled spaces): find the cut in the
    # original by folding ever longer prefixes.
    for end in range(len(folded_prefix), len(text) + 1):
        if fold(text[:end]) == folded_prefix:
            return text[end:]
    return ""


ROLE_NAMES = ", ".join(role.value for role in Role)


@lru_cache(maxsize=4096)
def parse_role(text: str) -> tuple[Role, str | None] | None:
    """(role, portfolio named in the same cell) for a Functie cell, or None when not recognised."""
    folded = fold(text).rstrip(".")
    for word, role in _ROLE_WORDS:
        if folded == word or (folded.startswith(word) and not folded[len(word)].isalpha()):
            portfolio = None
            if role in _PORTFOLIO_ROLES:
                remainder = _PORTFOLIO_LEAD.sub("", _after(text.strip(), word)).rstrip(" )")
                portfolio = " ".join(remainder.split()) or None
            return role, portfolio
    for role in Role:
        if folded == role.value:
            return role, None
    return None


_FEMALE = frozenset({"mevrouw", "mevr", "mw", "mvr", "vrouw", "v", "f", "female", "ms", "mrs"})
_MALE = frozenset({"heer", "dhr", "de heer", "hr", "man", "m", "male", "mr"})
_GENDER_LETTERS = frozenset({"m", "v", "f", "mr"})  # only a Geslacht column means a gender by these
_NOISE = frozenset({"geachte", "beste", "de", "dear"})


@lru_cache(maxsize=1024)
def parse_aanspreekvorm(text: str, *, gender_column: bool = False) -> str | None:
    """ "mevrouw" or "heer" when the source says so (Aanhef "Geachte mevrouw", Geslacht "V"), else None.

    "mr." is the Dutch law degree, not "mister", so in an Aanhef it says nothing about gender; only a
    Geslacht column's "M" does.
    """
    words = [w.strip(".,:") for w in fold(text).replace("/", " / ").split()]
    words = [w for w in words if w and w not in _NOISE]
    letters = set() if gender_column else _GENDER_LETTERS
    female = any(w in _FEMALE and w not in letters for w in words)
    male = any(w in _MALE and w not in letters for w in words)
    if female == male:  # neither, or "heer/mevrouw"
        return None
    return "mevrouw" if female else "heer"


_DATE_FORMATS = ("%d-%m-%Y", "%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%Y-%m-%d %H:%M:%S")


def parse_date(text: str) -> date | None:
    """A date as Dutch lists write it (31-03-2030, 2030-03-31, 31/03/2030), or None."""
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None
