"""Test data built through the same keys the importer uses. For tests of every area."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, select

from outreach.models import Contact, Municipality
from outreach.registry.keys import email_hash, email_key, office_key, sort_name
from outreach.registry.municipalities import load_municipalities


def load_reference(engine: Engine) -> None:
    load_municipalities(engine)


def municipality(session: Session, cbs_code: str) -> Municipality:
    found = session.exec(select(Municipality).where(Municipality.cbs_code == cbs_code)).first()
    assert found is not None, f"no municipality {cbs_code}: call load_reference() first"
    return found


def add_contact(
    session: Session,
    email: str,
    *,
    role: str = "raadslid",
    cbs_code: str | None = "GM0344",
    **fields: Any,
) -> Contact:
    """A contact as the importer would store it; ``fields`` sets name parts, party, portfolio, ..."""
    muni = municipality(session, cbs_code) if cbs_code else None
    key = email_key(email)
    contact = Contact(
        municipality_id=muni.id if muni else None,
        role=role,
        email=email,
        email_normalized=email.strip(),
        email_key=key,
        email_hash=email_hash(key),
        office_key=office_key(key, cbs_code, role),
        sort_name=sort_name(fields.get("achternaam"), fields.get("tussenvoegsel")),
        source="tests",
        **fields,
    )
    session.add(contact)
    session.flush()
    return contact
