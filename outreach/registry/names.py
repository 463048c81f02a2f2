"""Dutch personal names: splitting a single Naam cell into its parts, tidying the parts of split columns.

"dhr. H.J. van der Berg" -> heer, voorletters H.J., tussenvoegsel "van der", achternaam Berg;
"Bemelmans, P.J.F. (Peer-Jan)" -> achternaam Bemelmans, voorletters P.J.F., voornaam Peer-Jan.
The achternaam is stored without its tussenvoegsel, which is stored in lower case as Dutch registers
write it; letters capitalise it where Dutch spelling asks ("Geachte heer Van der Berg").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})

# Single words that make up tussenvoegsels ("van der", "in 't", "op de", "van den", ...).
PARTICLES = frozenset(
    {
        "van",
        "de",
        "der",
        "den",
        "het",
        "'t",
        "ter",
        "ten",
        "te",
        "in",
        "op",
        "uit",
        "aan",
        "bij",
        "onder",
        "over",
        "voor",
        "'s",
        "d'",
        "von",
        "zu",
        "vom",
        "la",
        "le",
        "du",
        "da",
        "di",
        "del",
        "della",
        "des",
        "dos",
        "el",
        "al",
    }
)
_SALUTATIONS = {
    "dhr.": "heer",
    "dhr": "heer",
    "hr.": "heer",
    "heer": "heer",
    "mevr.": "mevrouw",
    "mevr": "mevrouw",
    "mw.": "mevrouw",
    "mw": "mevrouw",
    "mevrouw": "mevrouw",
}
_TITLES = frozenset(
    {
        "mr.",
        "dr.",
        "drs.",
        "ir.",
        "ing.",
        "prof.",
        "bc.",
        "ds.",
        "mr",
        "dr",
        "drs",
        "ir",
        "ing",
        "prof",
        "dr.ir.",
        "mr.drs.",
        "mr.dr.",
        "prof.dr.",
        "ir.drs.",
    }
)
_POSTNOMINALS = frozenset({"msc", "bsc", "ma", "ba", "mba", "llm", "llb", "phd", "mpa", "ra", "rc", "bba"})
_INITIALS = re.compile(r"^(?:(?:[A-Z]|Th|Ch|Ph|IJ|Ij)\.?)+$")
_INITIAL_PIECES = re.compile(r"IJ|Ij|Th|Ch|Ph|[A-Z]")
_ROEPNAAM = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class NameParts:
    title: str | None = None
    voorletters: str | None = None
    voornaam: str | None = None
    tussenvoegsel: str | None = None
    achternaam: str | None = None
    aanspreekvorm: str | None = None  # only when the name itself says "dhr." or "mevr."


@lru_cache(maxsize=8192)
def normalize_voorletters(text: str) -> str:
    """ "HJ", "H. J." and "H.J" become "H.J."; anything not made of initials is kept as given."""
    compact = text.replace(" ", "")
    if not compact or not _INITIALS.match(compact):
        return text
    return "".join(f"{piece}." for piece in _INITIAL_PIECES.findall(compact))


@lru_cache(maxsize=1024)
def normalize_tussenvoegsel(text: str) -> str:
    """Lower case ("Van der" -> "van der") when made of known particles, as given otherwise."""
    words = text.translate(_APOSTROPHES).split()
    if words and all(w.casefold() in PARTICLES for w in words):
        return " ".join(w.casefold() for w in words)
    return " ".join(words)


def _is_particle(word: str) -> bool:
    return word.translate(_APOSTROPHES).casefold() in PARTICLES


def _take_particles(words: list[str], start: int) -> int:
    """Index just after the run of particles starting at ``start``."""
    end = start
    while end < len(words) and _is_particle(words[end]):
        end += 1
    return end


def _particles(words: list[str]) -> str | None:
    return " ".join(w.translate(_APOSTROPHES).casefold() for w in words) or None


def split_full_name(text: str) -> NameParts:
    """Split one Naam cell. Never guesses a gender: only "dhr."/"mevr." in the name set aanspreekvorm."""
    roepnaam: str | None = None
    found = _ROEPNAAM.search(text)
    if found:
        roepnaam = " ".join(found.group(1).split()) or None
        text = text[: found.start()] + " " + text[found.end() :]
    if "," in text:
        surname_part, _, given_part = text.partition(",")
        return _split_inverted(surname_part.split(), given_part.split(), roepnaam)
    return _split_natural(text.split(), roepnaam)


def _leading(words: list[str]) -> tuple[int, str | None, list[str]]:
    """Skip salutations and titles at the front: (index after them, aanspreekvorm, titles)."""
    aanspreekvorm = None
    titles: list[str] = []
    index = 0
    while index < len(words):
        word = words[index].casefold()
        if word == "de" and index + 1 < len(words) and words[index + 1].casefold() == "heer":
            aanspreekvorm = "heer"
            index += 2
        elif word in _SALUTATIONS:
            aanspreekvorm = _SALUTATIONS[word]
            index += 1
        elif word in _TITLES:
            titles.append(words[index])
            index += 1
        else:
            break
    return index, aanspreekvorm, titles


def _trailing_postnominals(words: list[str]) -> tuple[list[str], list[str]]:
    end = len(words)
    while end > 1 and words[end - 1].strip(".,").casefold() in _POSTNOMINALS:
        end -= 1
    return words[:end], words[end:]


def _split_given(words: list[str]) -> tuple[str | None, str | None]:
    """Voorletters and voornaam from the given-name words: initials first, then names."""
    initials: list[str] = []
    names: list[str] = []
    for word in words:
        if not names and _INITIALS.match(word) and ("." in word or len(word) <= 2):
            initials.append(word)
        else:
            names.append(word)
    voorletters = normalize_voorletters("".join(initials)) if initials else None
    return voorletters, " ".join(names) or None


def _split_natural(words: list[str], roepnaam: str | None) -> NameParts:
    index, aanspreekvorm, titles = _leading(words)
    rest, post = _trailing_postnominals(words[index:])
    titles += post
    if not rest:
        return NameParts(title=" ".join(titles) or None, voornaam=roepnaam, aanspreekvorm=aanspreekvorm)
    # The surname is the last word, with the particles that precede it and any words after the first
    # particle ("Jan van der Berg-de Vries", "A. de Vries van Dam").
    first_particle = next((i for i in range(len(rest) - 1) if _is_particle(rest[i])), None)
    if first_particle is None:
        given, particle_words, surname = rest[:-1], [], rest[-1:]
    else:
        end = min(_take_particles(rest, first_particle), len(rest) - 1)
        given, particle_words, surname = rest[:first_particle], rest[first_particle:end], rest[end:]
    voorletters, voornaam = _split_given(given)
    return NameParts(
        title=" ".join(titles) or None,
        voorletters=voorletters,
        voornaam=roepnaam or voornaam,
        tussenvoegsel=_particles(particle_words),
        achternaam=" ".join(surname) or None,
        aanspreekvorm=aanspreekvorm,
    )


def _split_inverted(surname_words: list[str], given_words: list[str], roepnaam: str | None) -> NameParts:
    """ "Berg, H.J. van der", "Berg van der, H.J.", "van der Berg, dhr. H.J.", "Bemelmans, P.J.F."."""
    index, aanspreekvorm, titles = _leading(given_words)
    given = given_words[index:]
    given, post = _trailing_postnominals(given) if given else (given, [])
    titles += post
    particle_words: list[str] = []
    # particles at the end of the given part: "Berg, H.J. van der"
    cut = len(given)
    while cut > 0 and _is_particle(given[cut - 1]):
        cut -= 1
    particle_words, given = given[cut:], given[:cut]
    # particles in the surname part: "van der Berg, H.J." or "Berg van der, H.J."
    start = _take_particles(surname_words, 0)
    if 0 < start < len(surname_words):
        particle_words = surname_words[:start] + particle_words
        surname_words = surname_words[start:]
    else:
        cut = len(surname_words)
        while cut > 1 and _is_particle(surname_words[cut - 1]):
            cut -= 1
        particle_words = surname_words[cut:] + particle_words
        surname_words = surname_words[:cut]
    voorletters, voornaam = _split_given(given)
    return NameParts(
        title=" ".join(titles) or None,
        voorletters=voorletters,
        voornaam=roepnaam or voornaam,
        tussenvoegsel=_particles(particle_words),
        achternaam=" ".join(surname_words) or None,
        aanspreekvorm=aanspreekvorm,
    )
