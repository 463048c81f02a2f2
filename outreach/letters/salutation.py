"""The aanhef (salutation) and the name on the envelope, from role and the name parts we know.

Rules (the table in docs/campaigns.md, each row tested in tests/test_letters_salutation.py):

* A person is addressed by name only when the source gave an aanspreekvorm (mevrouw/heer) and a surname:
  "Geachte mevrouw Van Dijk". A gender is never guessed from a first name.
* Without a first name or initials in front, the tussenvoegsel is capitalised ("mevrouw Van Dijk",
  "heer 't Hart" keeps its apostrophe particle lower case); with them it is not ("J. van Dijk").
* Otherwise the office is addressed: "Geachte wethouder", "Geacht raadslid" (het-woord), "Geachte griffie".
* The griffie is a shared mailbox: always "Geachte griffie", even when a name is on file.
* Informal campaigns use "Beste" for every form.
"""

from __future__ import annotations

from typing import Literal

from outreach.models import Role

Style = Literal["formal", "informal"]

# Office forms. Dutch het-words take "Geacht", de-words "Geachte".
_OFFICE: dict[str, tuple[str, str]] = {
    Role.RAADSLID: ("Geacht", "raadslid"),
    Role.BURGERRAADSLID: ("Geacht", "burgerraadslid"),
    Role.COMMISSIELID: ("Geacht", "commissielid"),
    Role.WETHOUDER: ("Geachte", "wethouder"),
    Role.BURGEMEESTER: ("Geachte", "burgemeester"),
    Role.LOCO_BURGEMEESTER: ("Geachte", "loco-burgemeester"),
    Role.GRIFFIER: ("Geachte", "griffier"),
    Role.GRIFFIE: ("Geachte", "griffie"),
    Role.FRACTIEASSISTENT: ("Geachte", "fractieassistent"),
    Role.SECRETARIS: ("Geachte", "gemeentesecretaris"),
}
# A supporter or an unknown role, nothing known about the person: the neutral letter form.
_NEUTRAL = ("Geachte", "heer/mevrouw")

_FORMS = {
    "mevrouw": "mevrouw",
    "mevr": "mevrouw",
    "mw": "mevrouw",
    "mej": "mevrouw",
    "heer": "heer",
    "de heer": "heer",
    "dhr": "heer",
    "meneer": "heer",
}


def _spaces(text: str | None) -> str:
    """Runs of spaces collapsed. Only spaces: a line break in a name is bad data that composing must
    refuse (it would start a new mail header), not something to tidy away unseen."""
    return " ".join(part for part in (text or "").split(" ") if part)


def aanspreekvorm(raw: str | None) -> str | None:
    """'mevrouw', 'heer', or None when the source said nothing usable (never guessed)."""
    if not raw:
        return None
    return _FORMS.get(raw.strip().lower().rstrip("."))


def capitalise_particle(particle: str) -> str:
    """'van der' -> 'Van der'; "'t" stays "'t" (apostrophe particles are never capitalised)."""
    particle = particle.strip()
    if not particle or particle[0] in "'’":
        return particle
    return particle[0].upper() + particle[1:]


def surname(tussenvoegsel: str | None, achternaam: str | None, *, leading: bool) -> str:
    """The surname with its particle; ``leading``: nothing (no first name, no initials) comes before.

    Tolerates a source that put the particle into the surname as well ("van Dijk" + "van").
    """
    name = _spaces(achternaam)
    particle = _spaces(tussenvoegsel)
    if particle and name.lower().startswith(particle.lower() + " "):
        name = name[len(particle) + 1 :]
    if not name:
        return ""
    full = f"{particle} {name}" if particle else name
    if leading:
        if particle:
            return f"{capitalise_particle(particle)} {name}"
        # A surname that begins with its particle in lower case ("van Dijk") gets a capital in front.
        return capitalise_particle(full)
    return full


def aanhef(
    role: str,
    *,
    aanspreekvorm_raw: str | None = None,
    tussenvoegsel: str | None = None,
    achternaam: str | None = None,
    style: Style = "formal",
) -> str:
    """The salutation line without punctuation: 'Geachte mevrouw Van Dijk', 'Geacht raadslid'."""
    form = aanspreekvorm(aanspreekvorm_raw)
    name = surname(tussenvoegsel, achternaam, leading=True)
    if role != Role.GRIFFIE and form and name:
        greeting, words = "Geachte", f"{form} {name}"
    else:
        greeting, words = _OFFICE.get(role, _NEUTRAL)
    if style == "informal":
        greeting = "Beste"
    return f"{greeting} {words}"


def display_name(
    *,
    role: str,
    voornaam: str | None,
    voorletters: str | None,
    tussenvoegsel: str | None,
    achternaam: str | None,
    municipality: str | None,
) -> str:
    """The name on the To line: 'Anna van Dijk', 'A.B. van Dijk', 'Griffie Utrecht', or ''."""
    if role == Role.GRIFFIE:
        return f"Griffie {municipality}" if municipality else "Griffie"
    first = _spaces(voornaam) or _spaces(voorletters)
    last = surname(tussenvoegsel, achternaam, leading=not first)
    return " ".join(part for part in (first, last) if part)
