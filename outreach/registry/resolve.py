"""Finding the municipality a row means: by CBS code, official name or alias; and provinces by name."""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Connection, select
from sqlmodel import col

from outreach.models import Municipality
from outreach.registry.keys import fold

# Names in common use that the reference list's alias column lacks.
EXTRA_ALIASES: dict[str, str] = {
    "GM0796": "Den Bosch",  # 's-Hertogenbosch: the name everyone uses, not in the CBS alias column
}
# Province spellings and abbreviations seen in lists, after fold(); the CBS names and codes are added
# from the reference data.
PROVINCE_ALIASES: dict[str, str] = {
    "friesland": "PV21",
    "fr": "PV21",
    "fryslan": "PV21",
    "gr": "PV20",
    "dr": "PV22",
    "ov": "PV23",
    "o": "PV23",
    "fl": "PV24",
    "gld": "PV25",
    "ge": "PV25",
    "g": "PV25",
    "ut": "PV26",
    "u": "PV26",
    "nh": "PV27",
    "n-h": "PV27",
    "zh": "PV28",
    "z-h": "PV28",
    "ze": "PV29",
    "zl": "PV29",
    "z": "PV29",
    "nb": "PV30",
    "n-b": "PV30",
    "brabant": "PV30",
    "li": "PV31",
    "lb": "PV31",
    "l": "PV31",
}
_CODE = re.compile(r"^(?:gm)?\s*0*(\d{1,4})$")
_LOOSE = re.compile(r"[^0-9a-z]+")
_GEMEENTE_PREFIX = re.compile(r"^gemeente\s+|\s*\(gemeente\)$")


def _loose(name: str) -> str:
    """Fold, drop "gemeente ..." / "... (gemeente)", and drop punctuation: "Bergen (N.H.)" ~ "bergen nh"."""
    folded = fold(name.replace("’", "'").replace("‘", "'"))
    folded = _GEMEENTE_PREFIX.sub("", folded)
    return _LOOSE.sub("", folded)


@dataclass(frozen=True)
class Place:
    id: int
    cbs_code: str
    name: str
    province_code: str
    province: str


class Unresolved(ValueError):
    """The row names no municipality, or several: the message says which and what to do; ``kind`` is the
    message without the row's details."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MunicipalityResolver:
    """Lookup dictionaries over the municipality table, built once per import."""

    def __init__(self, places: list[Place]) -> None:
        self.places = places
        self._by_number: dict[int, Place] = {}
        self._by_name: dict[str, list[Place]] = defaultdict(list)
        self._display: dict[str, str] = {}  # loose key -> a name to suggest
        self._provinces: dict[str, str] = {}  # loose province spelling -> code
        self._province_names: dict[str, str] = {}
        for place in places:
            self._by_number[int(place.cbs_code[2:])] = place
            self._provinces[_loose(place.province)] = place.province_code
            self._provinces[_loose(place.province_code)] = place.province_code
            self._province_names[place.province_code] = place.province
        for spelling, code in PROVINCE_ALIASES.items():
            self._provinces.setdefault(_loose(spelling), code)
        self._cache: dict[tuple[str, str, str], Place | Unresolved] = {}

    @classmethod
    def load(cls, conn: Connection) -> MunicipalityResolver:
        rows = conn.execute(
            select(
                col(Municipality.id),
                col(Municipality.cbs_code),
                col(Municipality.name),
                col(Municipality.province_code),
                col(Municipality.province),
                col(Municipality.aliases),
            )
        ).all()
        resolver = cls([Place(int(r[0] or 0), r[1], r[2], r[3], r[4]) for r in rows])
        for row in rows:
            place = resolver._by_number[int(row[1][2:])]
            names = [row[2], *[a for a in row[5].split("|") if a.strip()]]
            extra = EXTRA_ALIASES.get(row[1])
            if extra:
                names.append(extra)
            for name in names:
                resolver._add_name(name, place)
        return resolver

    def _add_name(self, name: str, place: Place) -> None:
        key = _loose(name)
        if place not in self._by_name[key]:
            self._by_name[key].append(place)
        self._display.setdefault(key, name)

    def province_code(self, text: str) -> str | None:
        """PV27 for "Noord-Holland", "NH", "pv27"; None when not recognised."""
        return self._provinces.get(_loose(text))

    def province_name(self, code: str) -> str:
        return self._province_names.get(code, code)

    def resolve(self, code: str = "", name: str = "", province: str = "") -> Place:
        """The one municipality meant by a code and/or name (a province settles "Bergen"), or Unresolved."""
        cache_key = (code, name, province)
        found = self._cache.get(cache_key)
        if found is None:
            try:
                found = self._resolve(code, name, province)
            except Unresolved as exc:
                found = exc  # a misspelling repeats on every row of its municipality: suggest once
            self._cache[cache_key] = found
        if isinstance(found, Unresolved):
            raise Unresolved(found.kind, str(found))
        return found

    def _resolve(self, code: str, name: str, province: str) -> Place:
        province_code: str | None = None
        if province:
            province_code = self.province_code(province)
            if province_code is None:
                raise Unresolved("unknown province", f"unknown province {province!r}")
        by_code = self._by_code(code) if code else None
        by_name = self._by_name_in(name, province_code) if name else None
        if by_code is None and by_name is None:
            raise Unresolved(
                "no municipality", "no municipality: the Gemeente and Gemeentecode cells are empty"
            )
        if by_code is not None and by_name is not None and by_code != by_name:
            raise Unresolved(
                "Gemeentecode and Gemeente disagree",
                f"Gemeentecode {code!r} is {by_code.name} ({by_code.cbs_code}) but Gemeente {name!r} "
                f"is {by_name.name} ({by_name.cbs_code})",
            )
        place = by_code or by_name
        assert place is not None
        if province_code is not None and place.province_code != province_code:
            raise Unresolved(
                "municipality not in that province",
                f"{place.name} ({place.cbs_code}) lies in {place.province}, "
                f"not in {self.province_name(province_code)}",
            )
        return place

    def _by_code(self, code: str) -> Place:
        matched = _CODE.match(code.strip().casefold())
        if matched is None:
            raise Unresolved("invalid Gemeentecode", f"Gemeentecode {code!r} is not a CBS code like GM0363")
        place = self._by_number.get(int(matched.group(1)))
        if place is None:
            raise Unresolved(
                "unknown Gemeentecode",
                f"Gemeentecode {code!r}: no municipality has CBS code GM{int(matched.group(1)):04d}",
            )
        return place

    def _by_name_in(self, name: str, province_code: str | None) -> Place:
        key = _loose(name)
        candidates = self._by_name.get(key, [])
        if not candidates and _CODE.match(name.strip().casefold()):
            return self._by_code(name)  # a code in the Gemeente column: "0363", "GM0363"
        if province_code is not None and len(candidates) > 1:
            candidates = [p for p in candidates if p.province_code == province_code] or candidates
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            listed = " or ".join(f"{p.name} ({p.cbs_code}, {p.province})" for p in candidates)
            raise Unresolved(
                "ambiguous municipality",
                f"municipality {name!r} is ambiguous: {listed}; "
                "add a Provincie column or use the Gemeentecode",
            )
        suggestions = difflib.get_close_matches(key, self._display.keys(), n=3, cutoff=0.75)
        if suggestions:
            names = " or ".join(repr(self._display[s]) for s in suggestions)
            raise Unresolved("unknown municipality", f"unknown municipality {name!r}; did you mean {names}?")
        raise Unresolved("unknown municipality", f"unknown municipality {name!r}")

    def lookup(self, text: str) -> list[Place]:
        """Every municipality a free-text filter may mean (code, name or alias), for `contacts list`."""
        matched = _CODE.match(text.strip().casefold())
        if matched is not None:
            place = self._by_number.get(int(matched.group(1)))
            return [place] if place else []
        return list(self._by_name.get(_loose(text), []))
