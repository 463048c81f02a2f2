"""Migration m006 (register contacts) on databases of the previous release that hold contacts,
deliveries and events: rows kept, e-mail nullable, register_id unique where set."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from outreach.db import open_database
from outreach.migrations import MIGRATIONS
from tests.test_db import SNAPSHOT, _schema
from tests.test_db_m002 import _insert_rows, _rows

T = "2026-11-20 10:00:00"
NO_EMAIL = text(
    "INSERT INTO contact (municipality_id, role, sort_name, source, imported_at, updated_at, active, "
    "register_id) VALUES (1, 'wethouder', 'voorbeeld', 'register export 2026-04-20', "
    f"'{T}', '{T}', :yes, :rid)"
)


def _old_columns(engine: Engine, table: str, columns: list[str]) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        query = f"SELECT {', '.join(columns)} FROM {table} ORDER BY id"
        return [tuple(row) for row in conn.execute(text(query))]


def _upgraded_database_takes_register_contacts(engine: Engine) -> None:
    with engine.connect() as conn:
        names = list(conn.execute(text("SELECT name FROM schema_migration ORDER BY name")).scalars())
        marks = conn.execute(
            text("SELECT waarnemend, locoburgemeester, fractievoorzitter, register_id FROM contact")
        ).all()
        postal = conn.execute(text("SELECT postal_address_line, postal_code, postal_city FROM municipality"))
        assert postal.all() == [(None, None, None)]
    assert names == sorted(name for name, _ in MIGRATIONS)
    assert {tuple(bool(v) if i < 3 else v for i, v in enumerate(m)) for m in marks} == {
        (False, False, False, None)
    }
    # A person without an address is a contact; the register's id is unique where set.
    with engine.begin() as conn:
        conn.execute(
            NO_EMAIL,
            [{"rid": "28990203", "yes": True}, {"rid": None, "yes": True}, {"rid": None, "yes": True}],
        )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(NO_EMAIL, {"rid": "28990203", "yes": True})
    # The contacts' foreign keys still hold: a delivery cannot name a contact that does not exist.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO delivery (campaign_id, contact_id, state, attempts, created_at, updated_at) "
                f"VALUES (1, 99, 'pending', 0, '{T}', '{T}')"
            )
        )
    with engine.begin() as conn:  # ON DELETE SET NULL still applies to the rebuilt table
        conn.execute(text("DELETE FROM contact WHERE id = 2"))
        assert conn.execute(text("SELECT count(*) FROM delivery WHERE contact_id = 2")).scalar_one() == 0


CONTACT_COLUMNS = ["id", "email", "email_key", "email_hash", "office_key", "role", "active", "source"]


def test_sqlite_database_of_the_last_release_upgrades(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(SNAPSHOT.read_text(encoding="utf-8"))
    url = f"sqlite:///{old}"
    engine = open_database(url, upgrade=False)
    _insert_rows(engine)
    before = {t: _rows(engine, t) for t in ("delivery", "event")}
    contacts = _old_columns(engine, "contact", CONTACT_COLUMNS)
    engine.dispose()

    engine = open_database(url)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    open_database(fresh).dispose()
    assert _schema(url) == _schema(fresh)
    assert {t: _rows(engine, t) for t in ("delivery", "event")} == before
    assert _old_columns(engine, "contact", CONTACT_COLUMNS) == contacts
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").first() is None
        explain = "EXPLAIN QUERY PLAN SELECT id FROM contact WHERE "
        assert "ix_contact_email_key" in str(conn.exec_driver_sql(explain + "email_key = 'x'").all())
        assert "uq_contact_register_id" in str(conn.exec_driver_sql(explain + "register_id = '1'").all())
    _upgraded_database_takes_register_contacts(engine)
    engine.dispose()


# The previous release's schema on PostgreSQL, made here from a fresh database by undoing m006.
UNDO_M006_POSTGRES = [
    "DROP INDEX uq_contact_register_id",
    *(
        f"ALTER TABLE contact DROP COLUMN {name}"
        for name in (
            "register_id",
            "register_email",
            "term_start",
            "waarnemend",
            "locoburgemeester",
            "fractievoorzitter",
        )
    ),
    *(
        f"ALTER TABLE municipality DROP COLUMN {n}"
        for n in ("postal_address_line", "postal_code", "postal_city")
    ),
    *(
        f"ALTER TABLE contact ALTER COLUMN {name} SET NOT NULL"
        for name in ("email", "email_normalized", "email_key", "email_hash", "office_key")
    ),
    "DELETE FROM schema_migration WHERE name = 'm006_register'",
]


def test_postgres_database_of_the_last_release_upgrades(pg_url: str) -> None:
    engine = open_database(pg_url)
    fresh_columns = {t: inspect(engine).get_columns(t) for t in ("contact", "municipality")}
    with engine.begin() as conn:
        for statement in UNDO_M006_POSTGRES:
            conn.execute(text(statement))
    _insert_rows(engine)
    with engine.begin() as conn:
        for table in ("municipality", "contact", "campaign", "delivery", "event"):
            conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    contacts = _old_columns(engine, "contact", CONTACT_COLUMNS)
    engine.dispose()

    engine = open_database(pg_url)
    for table, columns in fresh_columns.items():
        got = {c["name"]: (str(c["type"]), c["nullable"]) for c in inspect(engine).get_columns(table)}
        assert got == {c["name"]: (str(c["type"]), c["nullable"]) for c in columns}
    assert _old_columns(engine, "contact", CONTACT_COLUMNS) == contacts
    _upgraded_database_takes_register_contacts(engine)
    engine.dispose()
