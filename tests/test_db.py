from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from outreach.db import migrate, open_database
from outreach.errors import DatabaseError
from outreach.migrations import MIGRATIONS


def test_fresh_database_is_stamped_with_every_migration(db_url: str) -> None:
    engine = open_database(db_url)
    with engine.connect() as conn:
        names = [row[0] for row in conn.execute(text("SELECT name FROM schema_migration ORDER BY name"))]
    assert names == [name for name, _ in MIGRATIONS]
    assert migrate(engine) == []  # opening again applies nothing


def test_sqlite_runs_with_wal_and_foreign_keys(db_url: str) -> None:
    engine = open_database(db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_database_from_a_newer_release_is_refused(db_url: str) -> None:
    engine = open_database(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO schema_migration (name) VALUES ('m999_future')"))
    with pytest.raises(DatabaseError, match="upgraded by a newer outreach"):
        open_database(db_url)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="does not exist"):
        open_database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")


def test_postgres_schema_matches_sqlite(pg_url: str, db_url: str) -> None:
    pg = open_database(pg_url)
    lite = open_database(db_url)
    for table in inspect(lite).get_table_names():
        lite_cols = {c["name"] for c in inspect(lite).get_columns(table)}
        pg_cols = {c["name"] for c in inspect(pg).get_columns(table)}
        assert lite_cols == pg_cols, table
    pg.dispose()


SNAPSHOT = Path(__file__).parent / "data" / "schema" / "sqlite-after-migrations.sql"


def _schema(engine_url: str) -> dict[str, object]:
    """Tables with their columns (name, type, nullable), indexes (with the WHERE of a partial one),
    unique constraints and foreign keys, as SQLAlchemy inspects them."""
    engine = open_database(engine_url, upgrade=False)
    inspector = inspect(engine)
    schema: dict[str, object] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "schema_migration":
            continue
        columns = [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)]
        indexes = sorted(
            (
                i["name"] or "",
                tuple(i["column_names"]),
                i["unique"],
                str(i.get("dialect_options", {}).get("sqlite_where", "")),
            )
            for i in inspector.get_indexes(table)
        )
        uniques = sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table))
        foreign_keys = sorted(
            (
                tuple(fk["constrained_columns"]),
                fk["referred_table"],
                tuple(fk["referred_columns"]),
                tuple(sorted(fk["options"].items())),
            )
            for fk in inspector.get_foreign_keys(table)
        )
        schema[table] = (columns, indexes, uniques, foreign_keys)
    engine.dispose()
    return schema


def test_an_existing_database_upgrades_to_the_schema_of_a_fresh_one(tmp_path: Path) -> None:
    """A database created by the last release (its schema frozen in tests/data/schema/) plus this
    release's migrations must equal a fresh database made from the models. When this fails, a model
    changed without a migration: add one to outreach.migrations.MIGRATIONS, then refresh the snapshot with
    UPDATE_SCHEMA_SNAPSHOT=1 pytest tests/test_db.py when releasing."""
    import os
    import sqlite3

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    open_database(fresh_url).dispose()
    if os.environ.get("UPDATE_SCHEMA_SNAPSHOT"):
        with sqlite3.connect(tmp_path / "fresh.db") as conn:
            SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
            SNAPSHOT.write_text("\n".join(conn.iterdump()) + "\n", encoding="utf-8")
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(SNAPSHOT.read_text(encoding="utf-8"))
    open_database(f"sqlite:///{old}").dispose()  # applies whatever migrations are new since
    assert _schema(f"sqlite:///{old}") == _schema(fresh_url)


def test_the_griffie_lookup_reads_only_griffie_rows(db_url: str) -> None:
    """Composing a batch looks up each municipality's griffie; that must not read every contact (m003:
    80-115 ms a batch of 200 letters with 100,000 contacts before, an O(registry) cost per batch)."""
    from outreach.letters.recipients import _recipients_statement, table
    from outreach.models import Contact

    engine = open_database(db_url)
    statement = _recipients_statement().where(table(Contact).c.id.in_([1, 2, 3]))
    # Compiled as it runs, with bound parameters.
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})
    assert compiled.positiontup is not None
    params = tuple(compiled.params[name] for name in compiled.positiontup)
    with engine.connect() as conn:
        plan = [str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params)]
    engine.dispose()
    griffie_steps = [step for step in plan if " griffie " in f" {step} "]
    assert griffie_steps and all("ix_contact_griffie" in step for step in griffie_steps), plan
