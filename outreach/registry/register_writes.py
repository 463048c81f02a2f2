"""The rows a register import writes, gathered while it decides and written at its end, in as few
statements as their columns allow."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, update

from outreach.registry.register_held import CONTACT, MUNICIPALITY


@dataclass
class PendingWrites:
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)  # "b_id" and the columns that change
    retired: list[dict[str, Any]] = field(default_factory=list)  # written first: they free a register id
    municipality_updates: list[dict[str, Any]] = field(default_factory=list)

    def write(self, conn: Connection, now: datetime) -> None:
        if self.retired:
            conn.execute(
                update(CONTACT)
                .where(CONTACT.c.id == bindparam("b_id"))
                .values(
                    register_id=bindparam("register_id"),
                    register_email=bindparam("register_email"),
                    active=bindparam("active"),
                    source=bindparam("source"),
                    updated_at=now,
                ),
                self.retired,
            )
        if self.inserts:
            conn.execute(insert(CONTACT), self.inserts)
        # One UPDATE per set of columns (executemany needs the same parameters on every row).
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in self.updates:
            groups[tuple(sorted(k for k in row if k != "b_id"))].append(row)
        for columns, rows in groups.items():
            statement = (
                update(CONTACT)
                .where(CONTACT.c.id == bindparam("b_id"))
                .values({c: bindparam(c) for c in columns} | {"updated_at": now})
            )
            conn.execute(statement, rows)
        if self.municipality_updates:
            conn.execute(
                update(MUNICIPALITY)
                .where(MUNICIPALITY.c.id == bindparam("b_id"))
                .values(
                    postal_address_line=bindparam("line"),
                    postal_code=bindparam("code"),
                    postal_city=bindparam("city"),
                ),
                self.municipality_updates,
            )
