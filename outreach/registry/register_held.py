"""What the registry already holds that a register import decides against: the municipalities, the rows
of earlier register imports (by register id), and the keys of hand-imported rows it may take over."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, select
from sqlmodel import SQLModel

from outreach.models import Role
from outreach.registry.keys import email_hash, register_key
from outreach.registry.register import person_key

CONTACT = SQLModel.metadata.tables["contact"]
MUNICIPALITY = SQLModel.metadata.tables["municipality"]
SUPPRESSION = SQLModel.metadata.tables["suppression"]

REGISTER_ROLES = (
    Role.BURGEMEESTER.value,
    Role.WETHOUDER.value,
    Role.RAADSLID.value,
    Role.GRIFFIER.value,
    Role.GRIFFIE.value,
)
_CHUNK = 500

# Fields the register owns: what it says replaces what is stored (a party of None is "Geen").
OWNED = ("party", "term_start", "term_end", "waarnemend", "locoburgemeester", "fractievoorzitter")
# Name parts: the register's value replaces the stored one; a part it does not give is kept.
NAMES = ("title", "voorletters", "voornaam", "tussenvoegsel", "achternaam", "aanspreekvorm")
_LOADED = (
    "id",
    "register_id",
    "municipality_id",
    "role",
    *NAMES,
    *OWNED,
    "email",
    "email_normalized",
    "register_email",
    "active",
    "office_key",
)


class HeldOffices:
    """Loaded once per import, inside its transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.municipalities: dict[str, Any] = {  # cbs code -> (id, cbs_code, name, postal address)
            str(r.cbs_code): r
            for r in conn.execute(
                select(
                    MUNICIPALITY.c.id,
                    MUNICIPALITY.c.cbs_code,
                    MUNICIPALITY.c.name,
                    MUNICIPALITY.c.postal_address_line,
                    MUNICIPALITY.c.postal_code,
                    MUNICIPALITY.c.postal_city,
                )
            )
        }
        self.municipality_names = {int(r.id): str(r.name) for r in self.municipalities.values()}
        self.municipality_codes = {int(r.id): str(r.cbs_code) for r in self.municipalities.values()}
        self.columns: list[Column[Any]] = [CONTACT.c[name] for name in _LOADED]
        self.registered: dict[str, dict[str, Any]] = {
            str(r["register_id"]): dict(r)
            for r in conn.execute(select(*self.columns).where(CONTACT.c.register_id.is_not(None))).mappings()
        }
        # Rows from council lists in the register's roles, which the register may take over: only their
        # keys are held (a registry may hold 100,000 of them); a row taken over is read in full then.
        self.holders: dict[str, int] = {}  # office_key -> contact id (NEW: a row this import adds)
        self.unclaimed: set[int] = set()
        self.by_person: dict[tuple[int, str, str], list[int]] = defaultdict(list)
        unclaimed = select(
            CONTACT.c.id,
            CONTACT.c.office_key,
            CONTACT.c.municipality_id,
            CONTACT.c.role,
            CONTACT.c.voorletters,
            CONTACT.c.tussenvoegsel,
            CONTACT.c.achternaam,
        ).where(CONTACT.c.register_id.is_(None), CONTACT.c.role.in_(REGISTER_ROLES))
        for cid, key, municipality_id, role, voorletters, tussenvoegsel, achternaam in conn.execute(
            unclaimed
        ):
            self.unclaimed.add(cid)
            if key:  # only a row with an address has one: the address is what a take-over keeps
                self.holders[key] = cid
                if municipality_id is not None:
                    name = person_key(voorletters, tussenvoegsel, achternaam)
                    self.by_person[(municipality_id, role, name)].append(cid)
        # Every office key in use among register rows too: an address the register moves to must be free.
        for row in self.registered.values():
            if row["office_key"]:
                self.holders.setdefault(row["office_key"], int(row["id"]))

    def claim(self, contact_id: int) -> dict[str, Any]:
        """Take a hand-imported row over for this import's office: no second office takes it over."""
        self.unclaimed.discard(contact_id)
        row = self.conn.execute(select(*self.columns).where(CONTACT.c.id == contact_id)).mappings().one()
        return dict(row)

    def forgotten(self, register_ids: Sequence[str]) -> set[str]:
        """Register ids erased with `contacts forget register:ID`: passed over."""
        hashes = {email_hash(register_key(rid)): rid for rid in register_ids}
        found: set[str] = set()
        keys = list(hashes)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            for digest in self.conn.execute(
                select(SUPPRESSION.c.key_hash).where(SUPPRESSION.c.key_hash.in_(chunk))
            ).scalars():
                found.add(hashes[str(digest)])
        return found
