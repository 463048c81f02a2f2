"""Engine, sessions and recorded schema migrations.

Migrations are named functions (``m001_initial``, ...) recorded in ``schema_migration`` and applied when
the database is opened, so a newer outreach upgrades an existing database in place. A fresh database is
created from the models and stamped with every migration (the approach Alembic documents as "building an
up to date database from scratch"); ``tests/test_db.py`` checks that upgrading the oldest recorded schema
yields the same tables and columns as a fresh one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel

from outreach import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from outreach.errors import DatabaseError

Migration = Callable[[Connection], None]


def m001_initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


# Append only. Never rename or remove an entry: names are recorded in databases in the field.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", m001_initial),
]


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers (status, report) run beside a sender; foreign keys are off by default in SQLite.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own BEGIN handling defers locks until the first write, so two writers can each read
    # and then fail to upgrade their lock ("database is locked" at once, busy_timeout does not help).
    # BEGIN IMMEDIATE takes the write lock up front: writers queue (busy_timeout) instead of failing,
    # and WAL keeps plain readers outside transactions unblocked. See SQLAlchemy's pysqlite notes on
    # "Serializable isolation / Savepoints / Transactional DDL".
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings outreach relies on; does not touch the schema."""
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)

            @event.listens_for(engine, "connect")
            def _no_autobegin(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
                dbapi_conn.isolation_level = None

            event.listen(engine, "begin", _sqlite_begin)
            path = engine.url.database
            if path and path != ":memory:":
                parent = Path(path).expanduser().resolve().parent
                if not parent.is_dir():
                    raise DatabaseError(f"{url}: folder {parent} does not exist")
        else:
            engine = create_engine(url, pool_pre_ping=True)
    except ArgumentError as exc:
        raise DatabaseError(
            f"cannot use database URL {url!r}: {exc}",
            hint="expected sqlite:///path.db or postgresql+psycopg://user@host/db",
        ) from exc
    except ModuleNotFoundError as exc:
        raise DatabaseError(
            f"database URL {url!r} needs the Python package {exc.name!r}",
            hint="pip install 'outreach[postgres]'",
        ) from exc
    return engine


def _applied(conn: Connection) -> list[str]:
    rows = conn.execute(text("SELECT name FROM schema_migration ORDER BY name"))
    return [str(row[0]) for row in rows]


def migrate(engine: Engine) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now."""
    known = [name for name, _ in MIGRATIONS]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several senders may open the same database at once: one migrates, the others wait.
            conn.execute(text("SELECT pg_advisory_xact_lock(7240001)"))
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migration ("
                "name VARCHAR(200) PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
            )
        )
        applied = _applied(conn)
        newer = [name for name in applied if name not in known]
        if newer:
            raise DatabaseError(
                f"the database was upgraded by a newer outreach (migrations {', '.join(newer)})",
                hint="upgrade outreach before using this database",
            )
        fresh = not applied and not (set(inspect(conn).get_table_names()) - {"schema_migration"})
        todo = [(name, fn) for name, fn in MIGRATIONS if name not in applied]
        if fresh:
            SQLModel.metadata.create_all(conn)
        else:
            for _name, fn in todo:
                fn(conn)
        for name, _fn in todo:
            conn.execute(text("INSERT INTO schema_migration (name) VALUES (:name)"), {"name": name})
    return [name for name, _ in todo]


def open_database(url: str, *, upgrade: bool = True) -> Engine:
    """Open (and by default create or upgrade) the database at ``url``."""
    engine = make_engine(url)
    try:
        if upgrade:
            migrate(engine)
        else:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        raise DatabaseError(f"cannot open database {safe_url(url)}: {exc.orig}") from exc
    return engine


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def dialect_insert(engine: Engine) -> Any:
    """The dialect's ``insert`` construct, which has ``on_conflict_do_nothing``/``do_update``."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert
