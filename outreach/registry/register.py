"""Reading the export of the government register (Register van Overheidsorganisaties, ``exportOO.xml``).

The file (about 38 MB, every Dutch public body) is streamed with ``iterparse``: each top-level
``organisatie`` is read when its end tag arrives, turned into a small ``Gemeente`` record (or counted and
passed over) and then cleared and removed from its parent, so memory does not grow with the file.
Elements and attributes are read by local name, never by position or namespace prefix: the schema
version (the namespace's last part) changes every year or so; 2.4 to 2.6.x are read alike, another
version is read the same way with a warning.

What is kept of a gemeente: its code (``Organisatiecode`` or the TOOI id), dates, postal address, the
griffie mailbox (on the raadsgriffier's entry or on a nested ``Griffie`` onderdeel) and the office
holders of the functies outreach writes to. Locoburgemeester and Fractievoorzitter entries are marks on
the same person's other office (matched by name within the gemeente), never people of their own.
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import IO

from outreach.errors import ImportFileError
from outreach.models import Role
from outreach.registry.keys import fold
from outreach.registry.names import split_full_name

ROOT = "overheidsorganisaties"
KNOWN_VERSIONS = re.compile(r"^2\.[456](?:\.\d+)?$")  # 2.4.x, 2.5.x, 2.6.x: read alike
_VERSION = re.compile(r"/export/([0-9][0-9.]*)/?$")
_SNIFF = 4096
_TOOI_CODE = re.compile(r"/gemeente/(gm\d{4})$", re.IGNORECASE)
_ORGANISATIECODE = re.compile(r"^gm\d{4}$", re.IGNORECASE)


def local(tag: str) -> str:
    """ "{https://.../2.6.9}functie" -> "functie"."""
    return tag.rpartition("}")[2]


def is_register_export(head: bytes) -> bool:
    """Whether the first bytes of a file look like XML (the import then reads it as a register export
    and says so if the root element is another one)."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"<")


@dataclass(frozen=True)
class Office:
    """One office holder's entry in a functie: a person in one office of one gemeente."""

    register_id: str  # the medewerker's systeemId
    role: str  # a Role value
    full_name: str
    title: str | None
    voorletters: str | None
    voornaam: str | None
    tussenvoegsel: str | None
    achternaam: str | None
    aanspreekvorm: str | None
    party: str | None
    term_start: date | None
    term_end: date | None
    email: str | None
    waarnemend: bool = False
    locoburgemeester: bool = False
    fractievoorzitter: bool = False
    # Who this is, for matching entries of one person within a gemeente: initials and surname.
    name_key: str = ""


@lru_cache(maxsize=65536)  # the sync folds the name of every hand-imported contact in the five roles
def person_key(voorletters: str | None, tussenvoegsel: str | None, achternaam: str | None) -> str:
    return fold(" ".join(p for p in (voorletters, tussenvoegsel, achternaam) if p))


@dataclass
class Gemeente:
    """An active gemeente of the export, with the offices outreach keeps."""

    cbs_code: str  # "GM0193"
    name: str
    register_id: str | None
    mutated: date | None  # datumMutatie: when the register's data on it last changed
    verified: date | None  # datumTerVerificatie
    postal_address_line: str | None
    postal_code: str | None
    postal_city: str | None
    griffie_email: str | None
    offices: list[Office]
    ended: dict[str, date] = field(default_factory=dict)  # register id -> end date on or before today
    notes: list[str] = field(default_factory=list)  # anomalies found while reading


@dataclass
class PassedOver:
    """What the export holds that is not imported, counted (the summary's "passed over")."""

    bodies: Counter[str] = field(default_factory=Counter)  # other organisations by type
    ended_gemeenten: list[str] = field(default_factory=list)  # "Gemeente Delfzijl (gm0010, 2021-01-01)"
    ended_gemeente_functies: int = 0  # office holders of ended gemeenten
    unknown_codes: list[str] = field(default_factory=list)  # active gemeenten we do not know
    functies: Counter[str] = field(default_factory=Counter)  # functie name -> office holders
    unmatched_marks: int = 0  # a locoburgemeester/fractievoorzitter entry without an office


@dataclass
class RegisterExport:
    path: Path
    version: str | None
    namespace: str
    warnings: list[str]
    gemeenten: list[Gemeente]
    passed_over: PassedOver


# --- functies -------------------------------------------------------------------------------------

_ROLES = {
    "burgemeester": Role.BURGEMEESTER,
    "wethouder": Role.WETHOUDER,
    "raadslid": Role.RAADSLID,
    "lid gemeenteraad": Role.RAADSLID,
    "lid van de gemeenteraad": Role.RAADSLID,
    "gemeenteraadslid": Role.RAADSLID,
    "raadsgriffier": Role.GRIFFIER,
    "griffier": Role.GRIFFIER,
}
_WAARNEMEND = ("burgemeester waarnemend", "waarnemend burgemeester", "burgemeester (waarnemend)")
_LOCO = ("locoburgemeester", "loco-burgemeester", "loco burgemeester")
_FRACTIEVOORZITTER = ("fractievoorzitter",)


def functie_kind(name: str) -> tuple[str | None, bool, str | None]:
    """(role value or None, waarnemend, mark "locoburgemeester"/"fractievoorzitter" or None)."""
    folded = fold(name)
    if folded in _WAARNEMEND:
        return Role.BURGEMEESTER.value, True, None
    if folded in _LOCO:
        return None, False, "locoburgemeester"
    if folded in _FRACTIEVOORZITTER:
        return None, False, "fractievoorzitter"
    role = _ROLES.get(folded)
    return (role.value if role is not None else None), False, None


# --- reading --------------------------------------------------------------------------------------


def read_export(path: Path, *, today: date) -> RegisterExport:
    """Read the whole export into small records; raises ImportFileError naming the file and line for a
    file that is not well-formed XML (truncated, an HTML error page) or not a register export."""
    reader = _Reader(path, today)
    try:
        with path.open("rb") as fh:
            reader.run(fh)
    except ET.ParseError as exc:
        line, column = exc.position
        problem = str(exc).split(":")[0]
        if problem in ("no element found", "unclosed token"):
            problem = "the file ends before the XML is complete (a truncated download?)"
        raise ImportFileError(
            f"{path}:{line}: not a complete XML file: {problem} (line {line}, column {column})",
            hint="download the export again: https://organisaties.overheid.nl/archive/exportOO.xml",
        ) from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror}") from None
    if reader.namespace is None:
        raise ImportFileError(f"{path}: an empty XML file")
    return RegisterExport(
        path=path,
        version=reader.version,
        namespace=reader.namespace,
        warnings=reader.warnings,
        gemeenten=reader.gemeenten,
        passed_over=reader.passed_over,
    )


class _Reader:
    def __init__(self, path: Path, today: date) -> None:
        self.path = path
        self.today = today
        self.namespace: str | None = None
        self.version: str | None = None
        self.warnings: list[str] = []
        self.gemeenten: list[Gemeente] = []
        self.passed_over = PassedOver()
        self.doc = _Doc("")

    def run(self, fh: IO[bytes]) -> None:
        # Depth of organisatie elements: only the outermost ones (direct bodies of the export) are
        # handled and freed; nested ones (onderdelen) are read as part of their body.
        organisatie = organisaties = ""
        containers: list[ET.Element] = []  # open <organisaties> elements: a body's parent
        depth = 0
        # Safe with the standard parser: expat >= 2.4 (Python 3.11 bundles 2.5) refuses entity-expansion
        # bombs, and ElementTree never fetches external entities or DTDs (Python docs, "XML
        # vulnerabilities"); defusedxml's parser would move every callback into Python.
        for event, element in ET.iterparse(fh, events=("start", "end")):  # noqa: S314
            tag = element.tag
            if event == "start":
                if not organisatie:
                    self._root(element)
                    organisatie, organisaties = (
                        self.doc.prefix + "organisatie",
                        self.doc.prefix + "organisaties",
                    )
                elif tag == organisatie:
                    depth += 1
                elif tag == organisaties:
                    containers.append(element)
            elif tag == organisatie:
                depth -= 1
                if depth == 0:
                    self._organisatie(element)
                    element.clear()
                    if containers:
                        containers[-1].remove(element)
            elif tag == organisaties:
                containers.pop()

    def _root(self, element: ET.Element) -> None:
        namespace = element.tag[1:].partition("}")[0] if element.tag.startswith("{") else ""
        if local(element.tag) != ROOT:
            raise ImportFileError(
                f"{self.path}: an XML file, but not the register export (its root element is "
                f"<{local(element.tag)}>, expected <{ROOT}>)",
                hint="download the export: https://organisaties.overheid.nl/archive/exportOO.xml",
            )
        self.namespace = namespace
        self.doc = _Doc(namespace)
        found = _VERSION.search(namespace)
        self.version = found.group(1) if found else None
        if self.version is None or not KNOWN_VERSIONS.match(self.version):
            self.warnings.append(
                f"{self.path}: schema version {self.version or namespace or '(none)'} has not been seen "
                "before (known: 2.4 to 2.6.x); read as 2.6, check the summary"
            )

    def _organisatie(self, element: ET.Element) -> None:
        types = [fold(t.text or "") for t in self.doc.path(element, "types", "type")]
        name = self.doc.text(element, "naam") or "(no name)"
        if "gemeente" not in types:
            self.passed_over.bodies[self.doc.type_label(element)] += 1
            return
        code = self.doc.code(element)
        ended = _date(self.doc.text(element, "eindDatum"))
        offices = [
            m
            for f in self.doc.path(element, "functies", "functie")
            for m in self.doc.path(f, "medewerkers", "medewerker")
        ]
        if ended is not None and ended <= self.today:
            self.passed_over.ended_gemeenten.append(
                f"{name} ({code or 'no code'}, ended {ended.isoformat()})"
            )
            self.passed_over.ended_gemeente_functies += len(offices)
            return
        if code is None:
            self.passed_over.unknown_codes.append(f"{name} (no Organisatiecode or TOOI code)")
            return
        self.gemeenten.append(self._gemeente(element, name, code))

    def _gemeente(self, element: ET.Element, name: str, code: str) -> Gemeente:
        line, postcode, city = self.doc.postal_address(element)
        notes: list[str] = []
        offices: list[Office] = []
        ended: dict[str, date] = {}
        marks: list[tuple[str, Office]] = []
        griffie_email: str | None = None
        functies = list(self.doc.path(element, "functies", "functie"))
        griffies = [
            o
            for o in self.doc.onderdelen(element)
            if fold(self.doc.text(o, "naam") or "").startswith("griffie")
        ]
        for onderdeel in griffies:
            functies.extend(self.doc.path(onderdeel, "functies", "functie"))
            griffie_email = griffie_email or self.doc.first_email(onderdeel)
        for functie in functies:
            functie_name = self.doc.text(functie, "naam") or ""
            role, waarnemend, mark = functie_kind(functie_name)
            for medewerker in self.doc.path(functie, "medewerkers", "medewerker"):
                if role is None and mark is None:
                    self.passed_over.functies[functie_name or "(no name)"] += 1
                    continue
                office = self._office(medewerker, role or Role.RAADSLID.value, waarnemend, functie_name)
                if office is None:
                    continue
                if office.term_end is not None and office.term_end <= self.today:
                    ended[office.register_id] = office.term_end
                    continue
                if mark is not None:
                    marks.append((mark, office))
                    continue
                if (
                    office.role == Role.GRIFFIER.value
                    and office.email
                    and self.doc.is_griffie_mailbox(medewerker)
                ):
                    griffie_email = griffie_email or office.email
                offices.append(office)
        offices = self._apply_marks(offices, marks, name, notes)
        return Gemeente(
            cbs_code=code.upper(),
            name=name,
            register_id=self.doc.attribute(element, "systeemId"),
            mutated=_date(self.doc.text(element, "datumMutatie")),
            verified=_date(self.doc.text(element, "datumTerVerificatie")),
            postal_address_line=line,
            postal_code=postcode,
            postal_city=city,
            griffie_email=griffie_email,
            offices=offices,
            ended=ended,
            notes=notes,
        )

    def _office(self, medewerker: ET.Element, role: str, waarnemend: bool, functie: str) -> Office | None:
        register_id = self.doc.attribute(medewerker, "systeemId")
        full_name = " ".join((self.doc.text(medewerker, "naam") or "").split())
        if register_id is None or not full_name:
            self.passed_over.functies[f"{functie} (entry without id or name)"] += 1
            return None
        rollen = {fold(r.text or "") for r in self.doc.path(medewerker, "rollen", "rol")}
        parts = split_full_name(full_name)
        party = self.doc.text(medewerker, "partijLidmaatschap")
        return Office(
            name_key=person_key(parts.voorletters, parts.tussenvoegsel, parts.achternaam),
            register_id=register_id,
            role=role,
            full_name=full_name,
            title=parts.title,
            voorletters=parts.voorletters,
            voornaam=parts.voornaam,
            tussenvoegsel=parts.tussenvoegsel,
            achternaam=parts.achternaam,
            aanspreekvorm=parts.aanspreekvorm,
            party=None if party is None or fold(party) in ("geen", "") else party,
            term_start=_date(self.doc.text(medewerker, "startDatum")),
            term_end=_date(self.doc.text(medewerker, "eindDatum")),
            email=self.doc.first_email(medewerker),
            waarnemend=waarnemend or "waarnemend" in rollen,
        )

    def _apply_marks(
        self, offices: list[Office], marks: list[tuple[str, Office]], gemeente: str, notes: list[str]
    ) -> list[Office]:
        """Locoburgemeester on the same person's wethouder office, fractievoorzitter on their raadslid
        office (another office of theirs if they hold neither); an address only on the mark's entry is
        the person's address."""
        preferred = {"locoburgemeester": Role.WETHOUDER.value, "fractievoorzitter": Role.RAADSLID.value}
        by_name: dict[str, list[int]] = {}
        for index, office in enumerate(offices):
            by_name.setdefault(office.name_key, []).append(index)
        result = list(offices)
        for mark, entry in marks:
            candidates = by_name.get(entry.name_key, [])
            candidates = sorted(candidates, key=lambda i: result[i].role != preferred[mark])
            if not candidates:
                self.passed_over.unmatched_marks += 1
                notes.append(f"{mark} {entry.full_name} holds no other office in the register: not imported")
                continue
            target = result[candidates[0]]
            email = target.email if target.email is not None else entry.email
            if mark == "locoburgemeester":
                result[candidates[0]] = replace(target, locoburgemeester=True, email=email)
            else:
                result[candidates[0]] = replace(target, fractievoorzitter=True, email=email)
        return result


# --- element helpers ------------------------------------------------------------------------------


class _Doc:
    """Children, texts and attributes by local name in the document's namespace (the root's: every
    element and attribute of the export is in it). Plain-tag ``find``/``findall`` run in C."""

    def __init__(self, namespace: str) -> None:
        self.prefix = f"{{{namespace}}}" if namespace else ""

    def children(self, element: ET.Element, name: str) -> list[ET.Element]:
        return element.findall(self.prefix + name)

    def path(self, element: ET.Element, *names: str) -> list[ET.Element]:
        """Children by a path of local names: path(org, "functies", "functie")."""
        current = [element]
        for name in names:
            tag = self.prefix + name
            current = [child for parent in current for child in parent.findall(tag)]
        return current

    def text(self, element: ET.Element, name: str) -> str | None:
        child = element.find(self.prefix + name)
        if child is None or not child.text:
            return None
        return " ".join(child.text.split()) or None

    def attribute(self, element: ET.Element, name: str) -> str | None:
        value = element.get(self.prefix + name) or element.get(name)
        return value.strip() or None if value is not None else None

    def type_label(self, element: ET.Element) -> str:
        types = [t.text.strip() for t in self.path(element, "types", "type") if t.text and t.text.strip()]
        return types[0] if types else "(no type)"

    def code(self, element: ET.Element) -> str | None:
        """ "gm0193" from the Organisatiecode, else from the TOOI id (attribute or identificatiecode)."""
        tooi: list[str] = []
        for identifier in self.path(element, "identificatiecodes", "resourceIdentifier"):
            kind = fold(self.attribute(identifier, "naam") or "")
            value = (identifier.text or "").strip()
            if kind == "organisatiecode" and _ORGANISATIECODE.match(value):
                return value.lower()
            if "tooi" in kind:
                tooi.append(value)
        attribute = self.attribute(element, "resourceIdentifierTOOI")
        for candidate in (*tooi, attribute or ""):
            found = _TOOI_CODE.search(candidate.strip())
            if found:
                return found.group(1).lower()
        return None

    def onderdelen(self, element: ET.Element) -> Iterator[ET.Element]:
        """Nested organisaties (onderdelen) at any depth."""
        for nested in self.path(element, "organisaties", "organisatie"):
            yield nested
            yield from self.onderdelen(nested)

    def postal_address(self, element: ET.Element) -> tuple[str | None, str | None, str | None]:
        """(address line, postcode, city) of the Postadres; the Bezoekadres when there is no Postadres."""
        found: dict[str, ET.Element] = {}
        for each in self.path(element, "adressen", "adres"):
            found.setdefault(fold(self.text(each, "adresType") or ""), each)
        chosen = found.get("postadres")
        adres = chosen if chosen is not None else found.get("bezoekadres")
        if adres is None:
            return None, None, None
        postbus = self.text(adres, "postbus")
        if postbus:
            line: str | None = f"Postbus {postbus}"
        else:
            number = " ".join(
                p
                for p in (
                    self.text(adres, "huisnummer"),
                    self.text(adres, "huisletter"),
                    self.text(adres, "huisnummertoevoeging"),
                )
                if p
            )
            line = " ".join(p for p in (self.text(adres, "openbareRuimte"), number) if p) or None
        return line, self.text(adres, "postcode"), self.text(adres, "woonplaats")

    def first_email(self, element: ET.Element) -> str | None:
        for email in self.path(element, "contact", "emailadressen", "emailadres", "email"):
            address = decode_address((email.text or "").strip())
            if address:
                return address
        return None

    def is_griffie_mailbox(self, medewerker: ET.Element) -> bool:
        """The raadsgriffier's entry names the griffie's shared mailbox (label "griffie" or an address
        griffie@...), not the griffier's own."""
        for emailadres in self.path(medewerker, "contact", "emailadressen", "emailadres"):
            address = decode_address(self.text(emailadres, "email") or "") or ""
            if fold(self.text(emailadres, "label") or "") == "griffie" or fold(address).startswith("griffie"):
                return True
        return False


def _date(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def decode_address(text: str) -> str | None:
    """The address as given, or decoded when an older export base64-encoded it."""
    text = text.strip()
    if not text:
        return None
    if "@" in text:
        return text
    try:
        decoded = base64.b64decode(text, validate=True).decode("utf-8").strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return text  # neither: the importer's address check says what is wrong with it
    return decoded if "@" in decoded else text
