from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from outreach.db import MIGRATIONS, migrate, open_database
from outreach.errors import DatabaseError


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
