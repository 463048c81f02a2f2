"""Bulk database access for the import: look up offices and suppressions by key, insert and update contacts.

``contact_store()`` picks one of two implementations of one interface per connection:

- ``SqliteStore``: lookups send their keys as one JSON parameter (``json_each``) and get every match back
  as one JSON document (``json_group_array``): one step of SQLite per batch instead of one per row.
  Inserts are one DB-API ``executemany`` of a statement compiled once, with the values already in the
  driver's types: ``conn.execute(insert(Contact), rows)`` spends more time building and converting
  parameters per row than SQLite spends inserting them (profiled: 40% of an import).
- ``CoreStore``: SQLAlchemy Core for other databases; on PostgreSQL lookups take one parameter
  (``= ANY(string_to_array(:keys, E'\\n'))``: 500 separate parameters cost more to render and parse than
  the lookup) and inserts use ``COPY``, whose work happens in the server process (an executemany of
  single-row INSERTs managed 5,300 rows/s).

Both store exactly what the ORM would: values pass through the column types' own bind processors or
the driver's adaptation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Dialect, String, any_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import SQLModel, col

from outreach.models import Contact, Suppression

# Contact columns a parsed row fills.
ROW_COLUMNS = (
    "municipality_id",
    "role",
    "email",
    "email_normalized",
    "email_key",
    "title",
    "voorletters",
    "voornaam",
    "tussenvoegsel",
    "achternaam",
    "aanspreekvorm",
    "portfolio",
    "party",
    "term_end",
    "sort_name",
)
# Fields an import compares with what is stored; ``existing()`` returns (id, office_key, *COMPARED).
COMPARED = (
    "email",
    "email_normalized",
    "title",
    "voorletters",
    "voornaam",
    "tussenvoegsel",
    "achternaam",
    "aanspreekvorm",
    "portfolio",
    "party",
    "term_end",
)
INSERTED = (*ROW_COLUMNS, "office_key", "email_hash", "source", "imported_at", "updated_at", "active")
_IN_CHUNK = 500  # values per IN (...) list: well inside SQLite's and PostgreSQL's parameter limits

_UPDATE = (
    update(Contact)
    .where(col(Contact.id) == bindparam("b_id"))
    .values(
        {f: bindparam(f"b_{f}") for f in (*COMPARED, "sort_name", "source", "updated_at")} | {"active": True}
    )
)


class ContactStore:
    """The operations an import needs, for one connection, one source and one import time."""

    def __init__(self, dialect: Dialect, *, source: str, now: datetime) -> None:
        table = SQLModel.metadata.tables["contact"]
        self.source = source
        self.now = now
        self._processors = {
            name: table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in INSERTED
        }
        self._constants = {
            name: self._bind(name, value)
            for name, value in {
                "source": source,
                "imported_at": now,
                "updated_at": now,
                "active": True,
            }.items()
        }
        self._converted = [(n, p) for n in ROW_COLUMNS if (p := self._processors[n]) is not None]
        self._pick = itemgetter(*INSERTED)

    def _bind(self, name: str, value: Any) -> Any:
        processor = self._processors[name]
        return processor(value) if processor is not None and value is not None else value

    def _rows(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Insert rows in INSERTED order, in the driver's types."""
        pick = self._pick
        constants = self._constants
        out = []
        for row in rows:
            row.update(constants)
            for name, processor in self._converted:
                if row[name] is not None:
                    row[name] = processor(row[name])
            out.append(pick(row))
        return out

    def existing(self, conn: Connection, office_keys: list[str]) -> dict[str, tuple[Any, ...]]:
        raise NotImplementedError

    def suppressed(self, conn: Connection, hashes: list[str]) -> dict[str, str]:
        raise NotImplementedError

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def update(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """``rows``: {"b_id", "b_<field>" for COMPARED, "b_sort_name", "b_source", "b_updated_at"}."""
        conn.execute(_UPDATE, rows)


class SqliteStore(ContactStore):
    _EXISTING = (
        f"SELECT json_group_array(json_array(id, office_key, {', '.join(COMPARED)})) FROM contact "
        "WHERE office_key IN (SELECT value FROM json_each(?))"
    )
    _SUPPRESSED = (
        "SELECT json_group_array(json_array(key_hash, reason)) FROM suppression "
        "WHERE key_hash IN (SELECT value FROM json_each(?))"
    )
    _INSERT = f"INSERT INTO contact ({', '.join(INSERTED)}) VALUES ({', '.join('?' * len(INSERTED))})"
    _TERM_END = 2 + COMPARED.index("term_end")

    def existing(self, conn: Connection, office_keys: list[str]) -> dict[str, tuple[Any, ...]]:
        found = conn.exec_driver_sql(self._EXISTING, (json.dumps(office_keys),)).scalar_one()
        rows: dict[str, tuple[Any, ...]] = {}
        for row in json.loads(found):
            if row[self._TERM_END] is not None:
                row[self._TERM_END] = date.fromisoformat(row[self._TERM_END])
            rows[row[1]] = tuple(row)
        return rows

    def suppressed(self, conn: Connection, hashes: list[str]) -> dict[str, str]:
        found = conn.exec_driver_sql(self._SUPPRESSED, (json.dumps(hashes),)).scalar_one()
        return {key_hash: reason for key_hash, reason in json.loads(found)}

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        conn.exec_driver_sql(self._INSERT, self._rows(rows))


class CoreStore(ContactStore):
    def __init__(self, dialect: Dialect, *, source: str, now: datetime) -> None:
        super().__init__(dialect, source=source, now=now)
        self._postgres = dialect.name == "postgresql"
        self._existing = select(
            col(Contact.id), col(Contact.office_key), *(col(getattr(Contact, f)) for f in COMPARED)
        ).where(self._matching(col(Contact.office_key)))
        self._suppressed = select(col(Suppression.key_hash), col(Suppression.reason)).where(
            self._matching(col(Suppression.key_hash))
        )
        table = SQLModel.metadata.tables["contact"]
        self._insert = insert(table)
        self._copy = f"COPY contact ({', '.join(INSERTED)}) FROM STDIN"

    def _matching(self, column: Any) -> Any:
        if self._postgres:
            # One text parameter split by the server: 500 separate parameters cost more to render and
            # parse than the lookup, and psycopg quotes array elements one regex at a time. Keys never
            # hold a line break (control characters are rejected on import).
            return column == any_(func.string_to_array(bindparam("keys", type_=String()), "\n"))
        return column.in_(bindparam("keys", expanding=True))

    def _keys(self, keys: list[str]) -> Iterator[Any]:
        if self._postgres:
            yield "\n".join(keys)
        else:
            yield from _chunks(keys)

    def existing(self, conn: Connection, office_keys: list[str]) -> dict[str, tuple[Any, ...]]:
        rows: dict[str, tuple[Any, ...]] = {}
        for chunk in self._keys(office_keys):
            for found in conn.execute(self._existing, {"keys": chunk}):
                rows[found[1]] = tuple(found)
        return rows

    def suppressed(self, conn: Connection, hashes: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in self._keys(hashes):
            found.update((r[0], r[1]) for r in conn.execute(self._suppressed, {"keys": chunk}))
        return found

    def insert(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        constants = {"source": self.source, "imported_at": self.now, "updated_at": self.now, "active": True}
        for row in rows:
            row.update(constants)
        if not self._postgres:
            conn.execute(self._insert, rows)
            return
        # psycopg adapts the Python values itself.
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cursor.copy(self._copy) as copy:
                for row in rows:
                    copy.write_row(self._pick(row))
        except conn.dialect.loaded_dbapi.IntegrityError as exc:  # as SQLAlchemy would have wrapped it
            raise IntegrityError(self._copy, None, exc) from exc
        finally:
            cursor.close()


def contact_store(conn: Connection, *, source: str, now: datetime) -> ContactStore:
    """The fastest store that works on ``conn``'s database."""
    if conn.dialect.name == "sqlite" and _has_json(conn):
        return SqliteStore(conn.dialect, source=source, now=now)
    return CoreStore(conn.dialect, source=source, now=now)


def _has_json(conn: Connection) -> bool:
    # JSON functions are built into SQLite since 3.38 and enabled in most earlier builds; check anyway.
    try:
        conn.exec_driver_sql("SELECT json_array(1)").scalar_one()
    except OperationalError:
        return False
    return True


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]
