"""Recipients: what a letter needs to know about each contact (name parts, role, municipality, the
griffie to copy, a suppression, the postal address), read in one query and detached from the session."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

from sqlalchemy import Connection, Select, Table, exists, func, literal_column, select, true
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from outreach.letters.salutation import display_name
from outreach.models import Contact, Municipality, Role, Suppression

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Large IN lists are split: SQLite allows 32766 bound variables, PostgreSQL 65535.
_CHUNK = 10_000


def table(model: type[SQLModel]) -> Table:
    """The Core table of a model: typed columns for set-based statements."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Recipient:
    """What a letter needs to know about one contact, read in one query and detached from the session."""

    contact_id: int
    role: str
    email: str  # email_normalized: where the letter goes
    voornaam: str | None = None
    voorletters: str | None = None
    tussenvoegsel: str | None = None
    achternaam: str | None = None
    title: str | None = None
    aanspreekvorm: str | None = None
    party: str | None = None
    portfolio: str | None = None
    municipality_id: int | None = None
    municipality: str | None = None  # official name
    cbs_code: str | None = None
    province: str | None = None
    griffie_email: str | None = None  # the own municipality's griffie mailbox, unless suppressed
    suppressed: str | None = None  # the suppression reason ("opt-out", "hard-bounce", ...), or None
    email_problem: str | None = None  # why the address cannot be used, or None
    postal: tuple[str, ...] = ()  # the municipality's postal address lines, where the registry has it

    @cached_property
    def name(self) -> str:
        """The display name for the To line; computed once (the dataclass is frozen, not slotted)."""
        return display_name(
            role=self.role,
            voornaam=self.voornaam,
            voorletters=self.voorletters,
            tussenvoegsel=self.tussenvoegsel,
            achternaam=self.achternaam,
            municipality=self.municipality,
        )

    @property
    def label(self) -> str:
        """How messages name this recipient: 'anna@x.nl (raadslid, Utrecht)'."""
        where = f", {self.municipality}" if self.municipality else ""
        return f"{self.email} ({self.role}{where})"

    @property
    def sendable(self) -> bool:
        return self.suppressed is None and self.email_problem is None


def email_problem(address: str) -> str | None:
    """Why ``address`` cannot go on an envelope, or None. The importer validated it; this is the last
    line of defence before SMTP (an address edited by hand in the database, an import bug)."""
    if not address:
        return "no e-mail address"
    if _CONTROL_RE.search(address) or " " in address:
        return "the address contains a space or control character"
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(ch in address for ch in '<>,;"()[]\\'):
        return "not an e-mail address"
    if not local.isascii():
        return "the address has non-ASCII characters before the @ (needs SMTPUTF8)"
    return None


def _recipients_statement() -> Select[Any]:
    contact = table(Contact)
    municipality = table(Municipality)
    suppression = table(Suppression)
    griffie = contact.alias("griffie")
    griffie_suppression = suppression.alias("griffie_suppression")
    # The griffie of each municipality, computed once for all rows (a correlated subquery per recipient
    # made loading 12,000 recipients three times slower on SQLite).
    first_griffie = (
        select(griffie.c.municipality_id, func.min(griffie.c.id).label("griffie_id"))
        .where(
            # A literal, not a bound parameter, so that the partial index on the griffie rows
            # (ix_contact_griffie) fits any plan: a PostgreSQL generic plan for a prepared statement
            # cannot prove "role = $1" implies the index's "role = 'griffie'".
            griffie.c.role == literal_column(f"'{Role.GRIFFIE.value}'"),
            griffie.c.active == true(),
            ~exists().where(griffie_suppression.c.key_hash == griffie.c.email_hash),
        )
        .group_by(griffie.c.municipality_id)
        .subquery("first_griffie")
    )
    griffie_contact = contact.alias("griffie_contact")
    c = contact.c
    return select(
        c.id,
        c.role,
        c.email_normalized,
        c.voornaam,
        c.voorletters,
        c.tussenvoegsel,
        c.achternaam,
        c.title,
        c.aanspreekvorm,
        c.party,
        c.portfolio,
        c.municipality_id,
        municipality.c.name,
        municipality.c.cbs_code,
        municipality.c.province,
        griffie_contact.c.email_normalized,
        suppression.c.reason,
        municipality.c.postal_address_line,
        municipality.c.postal_code,
        municipality.c.postal_city,
    ).select_from(
        contact.outerjoin(municipality, municipality.c.id == c.municipality_id)
        .outerjoin(suppression, suppression.c.key_hash == c.email_hash)
        .outerjoin(first_griffie, first_griffie.c.municipality_id == c.municipality_id)
        .outerjoin(griffie_contact, griffie_contact.c.id == first_griffie.c.griffie_id)
    )


def load_recipients(
    session_or_conn: Session | Connection, contact_ids: Iterable[int] | Select[Any]
) -> dict[int, Recipient]:
    """Recipients by contact id: one query per 10,000 ids, or one query for a SELECT of ids (such as
    ``audience_contact_ids(campaign)``). Ids that do not exist are simply absent from the result."""
    base = _recipients_statement()
    contact_id = table(Contact).c.id
    if isinstance(contact_ids, Select):
        statements = [base.where(contact_id.in_(contact_ids.scalar_subquery()))]
    else:
        ids = sorted(set(contact_ids))
        statements = [base.where(contact_id.in_(ids[i : i + _CHUNK])) for i in range(0, len(ids), _CHUNK)]
    result: dict[int, Recipient] = {}
    for statement in statements:
        for row in session_or_conn.execute(statement):
            (
                cid,
                role,
                email,
                vn,
                vl,
                tv,
                an,
                title,
                av,
                party,
                portfolio,
                mid,
                mname,
                cbs,
                prov,
                gr,
                sup,
                post_line,
                post_code,
                post_city,
            ) = row
            griffie = gr if gr and gr != email else None
            result[cid] = Recipient(
                contact_id=cid,
                role=role,
                email=email or "",
                voornaam=vn or None,
                voorletters=vl or None,
                tussenvoegsel=tv or None,
                achternaam=an or None,
                title=title or None,
                aanspreekvorm=av or None,
                party=party or None,
                portfolio=portfolio or None,
                municipality_id=mid,
                municipality=mname,
                cbs_code=cbs,
                province=prov,
                griffie_email=griffie,
                suppressed=sup,
                email_problem=email_problem(email or ""),
                postal=postal_lines(post_line, post_code, post_city),
            )
    return result


def postal_lines(line: str | None, code: str | None, city: str | None) -> tuple[str, ...]:
    """('Postbus 16200', '3500 CE  UTRECHT'): PostNL's layout, two spaces before the town in capitals
    (no-break spaces, which HTML does not collapse)."""
    last = "\u00a0\u00a0".join(part for part in ((code or "").strip(), (city or "").strip().upper()) if part)
    return tuple(part for part in ((line or "").strip(), last) if part)
