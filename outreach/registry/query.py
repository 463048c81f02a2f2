"""Reading the registry for people: `outreach contacts list` and `outreach contacts show`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import col

from outreach.errors import NotFoundError, UsageError
from outreach.models import Contact, Municipality, Role, Suppression
from outreach.registry.keys import email_hash, email_key, fold, register_key, register_reference
from outreach.registry.resolve import MunicipalityResolver
from outreach.registry.values import ROLE_NAMES, parse_role


@dataclass(frozen=True)
class ContactView:
    """One contact with its municipality and suppression, as `contacts list/show` present it."""

    id: int
    email: str | None  # None: the register lists this office holder without an address
    email_normalized: str | None
    role: str
    portfolio: str | None
    party: str | None
    title: str | None
    voorletters: str | None
    voornaam: str | None
    tussenvoegsel: str | None
    achternaam: str | None
    aanspreekvorm: str | None
    municipality: str | None
    cbs_code: str | None
    province: str | None
    source: str
    imported_at: datetime
    updated_at: datetime
    term_end: date | None
    active: bool
    sort_name: str
    suppressed: str | None  # the suppression reason, when the address is suppressed
    register_id: str | None = None
    term_start: date | None = None
    waarnemend: bool = False
    locoburgemeester: bool = False
    fractievoorzitter: bool = False

    @property
    def name(self) -> str:
        """ "Jan van der Berg", "H.J. van der Berg"; empty for a griffie mailbox without a person."""
        given = self.voornaam or self.voorletters
        return " ".join(p for p in (given, self.tussenvoegsel, self.achternaam) if p)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["name"] = self.name
        data.pop("sort_name")
        return data


@dataclass(frozen=True)
class ContactDetail:
    email_key: str  # the address as matched, or "register:<id>" for an office holder named by id
    suppression: dict[str, Any] | None
    contacts: list[ContactView]

    def as_json(self) -> dict[str, Any]:
        return {
            "email_key": self.email_key,
            "suppression": self.suppression,
            "contacts": [c.as_json() for c in self.contacts],
        }


def _municipality_sort_key(name: str | None) -> tuple[int, str]:
    if name is None:
        return (1, "")
    folded = fold(name.replace("’", "'"))
    for article in ("'s-", "'t "):
        if folded.startswith(article):  # 's-Gravenhage sorts under G, as Dutch lists do
            folded = folded[len(article) :]
    return (0, folded)


def _query() -> Any:
    return (
        select(
            col(Contact.id),
            col(Contact.email),
            col(Contact.email_normalized),
            col(Contact.role),
            col(Contact.portfolio),
            col(Contact.party),
            col(Contact.title),
            col(Contact.voorletters),
            col(Contact.voornaam),
            col(Contact.tussenvoegsel),
            col(Contact.achternaam),
            col(Contact.aanspreekvorm),
            col(Municipality.name).label("municipality"),
            col(Municipality.cbs_code),
            col(Municipality.province),
            col(Contact.source),
            col(Contact.imported_at),
            col(Contact.updated_at),
            col(Contact.term_end),
            col(Contact.active),
            col(Contact.sort_name),
            col(Suppression.reason).label("suppressed"),
            col(Contact.register_id),
            col(Contact.term_start),
            col(Contact.waarnemend),
            col(Contact.locoburgemeester),
            col(Contact.fractievoorzitter),
        )
        .select_from(Contact)
        .outerjoin(Municipality, col(Municipality.id) == col(Contact.municipality_id))
        .outerjoin(Suppression, col(Suppression.key_hash) == col(Contact.email_hash))
    )


def _sorted(views: list[ContactView]) -> list[ContactView]:
    return sorted(
        views,
        key=lambda c: (
            _municipality_sort_key(c.municipality),
            c.sort_name,
            fold(c.voornaam or c.voorletters or ""),
            c.role,
            (c.email_normalized or "").casefold(),
        ),
    )


def list_contacts(
    engine: Engine,
    *,
    role: str | None = None,
    municipality: str | None = None,
    party: str | None = None,
    province: str | None = None,
    without_email: bool = False,
) -> list[ContactView]:
    """Contacts matching every filter given, by municipality and then surname (tussenvoegsel ignored).

    ``without_email``: only office holders in office without an address (the register lists many):
    the list staff complete by hand."""
    stmt = _query()
    if without_email:
        stmt = stmt.where(col(Contact.email_key).is_(None), col(Contact.active))
    with engine.connect() as conn:
        if role is not None:
            parsed = parse_role(role)
            if parsed is None:
                raise UsageError(f"--role {role!r} is not a role; use one of {ROLE_NAMES}")
            stmt = stmt.where(col(Contact.role) == parsed[0].value)
        if municipality is not None or province is not None:
            resolver = MunicipalityResolver.load(conn)
            if municipality is not None:
                places = resolver.lookup(municipality)
                if not places:
                    raise UsageError(
                        f"--municipality {municipality!r}: no such municipality (name, alias or code)"
                    )
                stmt = stmt.where(col(Municipality.id).in_([p.id for p in places]))
            if province is not None:
                code = resolver.province_code(province)
                if code is None:
                    raise UsageError(f"--province {province!r}: no such province")
                stmt = stmt.where(col(Municipality.province_code) == code)
        if party is not None:
            stmt = stmt.where(func.lower(col(Contact.party)) == party.strip().lower())
        rows = conn.execute(stmt).mappings().all()
    return _sorted([ContactView(**row) for row in rows])


def show_contact(engine: Engine, email: str) -> ContactDetail:
    """Every office held under ``email`` (matched case-insensitively) and its suppression, if any.

    ``email`` may also be a register id ("register:28990203" or "28990203"): the office holder the
    register lists under that id, with or without an address."""
    register_id = register_reference(email)
    with engine.connect() as conn:
        if register_id is not None:
            key = register_key(register_id)
            rows = conn.execute(_query().where(col(Contact.register_id) == register_id)).mappings().all()
        else:
            key = email_key(email.removeprefix("mailto:"))
            rows = conn.execute(_query().where(col(Contact.email_key) == key)).mappings().all()
        suppression = (
            conn.execute(
                select(col(Suppression.reason), col(Suppression.source), col(Suppression.created_at)).where(
                    col(Suppression.key_hash) == email_hash(key)
                )
            )
            .mappings()
            .first()
        )
    if not rows and suppression is None:
        what = f"register id {register_id}" if register_id is not None else f"e-mail address {email!r}"
        raise NotFoundError(f"no contact with {what}")
    return ContactDetail(
        email_key=key,
        suppression=dict(suppression) if suppression is not None else None,
        contacts=_sorted([ContactView(**row) for row in rows]),
    )


def role_label(view: ContactView) -> str:
    """ "wethouder (Jeugd)", "waarnemend burgemeester", "wethouder, locoburgemeester" for lists."""
    label = f"waarnemend {view.role}" if view.waarnemend else view.role
    if view.portfolio and view.role in (Role.WETHOUDER, Role.BURGEMEESTER, Role.LOCO_BURGEMEESTER):
        label = f"{label} ({view.portfolio})"
    marks = [
        m
        for m, on in (
            ("locoburgemeester", view.locoburgemeester),
            ("fractievoorzitter", view.fractievoorzitter),
        )
        if on
    ]
    return ", ".join([label, *marks])


def address_label(view: ContactView) -> str:
    """The address, or how to name an office holder without one: "- (register:28990203)"."""
    if view.email_normalized:
        return view.email_normalized
    return f"- (no e-mail; register:{view.register_id})" if view.register_id else "- (no e-mail)"
