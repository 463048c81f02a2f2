"""Writing exports of the government register in its structure (see ../shared/data/roo/), for tests and
for bench/register_bench.py: gemeenten with functies and medewerkers, other bodies, any schema version.
Written as a stream, so a benchmark's 38 MB never sit in memory."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape, quoteattr

NAMESPACE = "https://organisaties.overheid.nl/static/schema/oo/export/{version}"


@dataclass
class Person:
    id: str
    name: str  # "Dhr. J.K. Testmans", as the register writes it
    party: str | None = None
    start: str | None = None
    end: str | None = None
    email: str | None = None
    email_label: str = "algemeen"
    encode_email: bool = False  # older exports base64-encoded addresses
    waarnemend: bool = False


@dataclass
class Org:
    id: str
    name: str
    type: str = "Gemeente"
    code: str | None = None  # "gm0193": Organisatiecode (and TOOI id)
    code_in_tooi_only: bool = False
    end: str | None = None
    mutated: str | None = "2026-04-20"
    verified: str | None = "2026-04-20"
    functies: list[tuple[str, list[Person]]] = field(default_factory=list)
    postbus: tuple[str, str, str] | None = None  # (number, postcode, city)
    griffie_email: str | None = None  # on a nested Griffie onderdeel
    padding: str = ""  # text that makes the body as large as real ones (a description)


def write_export(path: Path, orgs: Iterable[Org], *, version: str = "2.6.9") -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        out.write(
            f'<p:overheidsorganisaties xmlns:p="{NAMESPACE.format(version=version)}">\n<p:organisaties>\n'
        )
        for org in orgs:
            _org(out, org)
        out.write("</p:organisaties>\n</p:overheidsorganisaties>\n")
    return path


def _t(name: str, value: str | None) -> str:
    return f"<p:{name}>{escape(value)}</p:{name}>" if value is not None else ""


def _org(out: IO[str], org: Org) -> None:
    tooi = f"https://identifier.overheid.nl/tooi/id/gemeente/{org.code}" if org.code else None
    attributes = f' p:systeemId="{org.id}"' + (f" p:resourceIdentifierTOOI={quoteattr(tooi)}" if tooi else "")
    out.write(f"<p:organisatie{attributes}>\n{_t('naam', org.name)}\n")
    out.write(f"<p:types><p:type>{escape(org.type)}</p:type></p:types>\n")
    if org.code and not org.code_in_tooi_only:
        out.write(
            "<p:identificatiecodes>"
            f'<p:resourceIdentifier p:naam="resourceIdentifierTOOI">{tooi}</p:resourceIdentifier>'
            f'<p:resourceIdentifier p:naam="Organisatiecode">{org.code}</p:resourceIdentifier>'
            "</p:identificatiecodes>\n"
        )
    out.write(_t("eindDatum", org.end))
    if org.postbus:
        number, postcode, city = org.postbus
        out.write(
            "<p:adressen><p:adres><p:adresType>Bezoekadres</p:adresType><p:openbareRuimte>Markt"
            "</p:openbareRuimte><p:huisnummer>1</p:huisnummer><p:postcode>1000 AA</p:postcode>"
            f"<p:woonplaats>{escape(city)}</p:woonplaats></p:adres><p:adres><p:adresType>Postadres"
            f"</p:adresType>{_t('postbus', number)}{_t('postcode', postcode)}{_t('woonplaats', city)}"
            "</p:adres></p:adressen>\n"
        )
    if org.padding:
        out.write(_t("beschrijving", org.padding) + "\n")
    if org.functies:
        out.write("<p:functies>\n")
        for index, (functie, people) in enumerate(org.functies):
            out.write(f'<p:functie p:systeemId="{org.id}{index:03d}">{_t("naam", functie)}<p:medewerkers>\n')
            for person in people:
                _person(out, person)
            out.write("</p:medewerkers></p:functie>\n")
        out.write("</p:functies>\n")
    if org.griffie_email:
        out.write(
            f'<p:organisaties><p:organisatie p:systeemId="{org.id}9"><p:naam>Griffie</p:naam>'
            "<p:types><p:type>Organisatieonderdeel</p:type></p:types><p:contact><p:emailadressen>"
            f"<p:emailadres>{_t('email', org.griffie_email)}</p:emailadres></p:emailadressen></p:contact>"
            "</p:organisatie></p:organisaties>\n"
        )
    out.write(f"{_t('datumMutatie', org.mutated)}{_t('datumTerVerificatie', org.verified)}</p:organisatie>\n")


def _person(out: IO[str], person: Person) -> None:
    out.write(f'<p:medewerker p:systeemId="{person.id}">{_t("naam", person.name)}')
    if person.waarnemend:
        out.write("<p:rollen><p:rol>Waarnemend</p:rol></p:rollen>")
    out.write(
        _t("partijLidmaatschap", person.party) + _t("startDatum", person.start) + _t("eindDatum", person.end)
    )
    if person.email is not None:
        address = base64.b64encode(person.email.encode()).decode() if person.encode_email else person.email
        out.write(
            "<p:contact><p:emailadressen><p:emailadres>"
            f"{_t('email', address)}{_t('label', person.email_label)}"
            "</p:emailadres></p:emailadressen></p:contact>"
        )
    out.write("</p:medewerker>\n")
