"""Engine, sessions, opening checks, and applying the recorded schema migrations.

Migrations are named functions (``m001_initial``, ..., in ``outreach.migrations``) recorded in
``schema_migration`` and applied when the database is opened, so a newer outreach upgrades an existing
database in place. A fresh database is created from the models and stamped with every migration (the
approach Alembic documents as "building an up to date database from scratch"); ``tests/test_db.py``
checks that upgrading the oldest recorded schema yields the same tables and columns as a fresh one.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, SQLModel

from outreach import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from outreach.errors import DatabaseError
from outreach.migrations import MIGRATIONS
from outreach.sqlite_driver import SQLITE_BUSY_TIMEOUT_MS


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


#: Execution option of an engine or connection that only reads (``reader``): on SQLite its transactions
#: begin DEFERRED, so they neither take nor wait for the write lock.
READ_ONLY = "outreach_read_only"

_SQLITE_MAGIC = b"SQLite format 3\x00"


def reader(engine: Engine) -> Engine:
    """The same database and connection pool, for reading only.

    Writers begin with ``BEGIN IMMEDIATE`` (see ``_sqlite_begin``), which waits for (and takes) the
    write lock. A reader needs neither: in WAL mode a deferred transaction reads its snapshot while
    another process writes, so ``status``, ``report`` and ``contacts list`` answer at once.
    """
    if engine.get_execution_options().get(READ_ONLY):
        return engine
    return engine.execution_options(**{READ_ONLY: True})


def _sqlite_pragmas(read_only: bool) -> Callable[[sqlite3.Connection, ConnectionPoolEntry], None]:
    def pragmas(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # WAL lets readers (status, report) run beside a sender; foreign keys are off by default in SQLite.
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        if not read_only:  # setting the journal mode writes the file header
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    return pragmas


def _sqlite_begin(conn: Connection) -> None:
    # pysqlite's own BEGIN handling defers locks until the first write, so two writers can each read
    # and then fail to upgrade their lock ("database is locked" at once, busy_timeout does not help).
    # BEGIN IMMEDIATE takes the write lock up front: writers queue (busy_timeout) instead of failing.
    # Readers (``reader``) begin DEFERRED: in WAL mode they never wait for a writer. See SQLAlchemy's
    # pysqlite notes on "Serializable isolation / Savepoints / Transactional DDL".
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
    else:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None for PostgreSQL and in-memory databases)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return None
    if database.startswith("file:"):
        return None  # a URI filename: the caller chose its own opening mode
    return Path(database).expanduser()


def describe_file(path: Path) -> str:
    """What a file that should have been an SQLite database looks like, for the error message."""
    with path.open("rb") as fh:
        head = fh.read(4096)
    signatures = [
        (b"PK\x03\x04", "a ZIP archive, such as an XLSX workbook"),
        (b"\xd0\xcf\x11\xe0", "an old Office document, such as an XLS workbook"),
        (b"%PDF", "a PDF document"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"PGDMP", "a PostgreSQL dump (pg_dump -Fc): restore it with pg_restore"),
    ]
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind
    try:
        sample = head.decode("utf-8")
    except UnicodeDecodeError:
        try:
            sample = head.decode("cp1252")
        except UnicodeDecodeError:
            return "binary data of another kind"
    if "\x00" in sample:
        return "binary data of another kind"
    if sample.lstrip().startswith(("--", "BEGIN TRANSACTION", "CREATE ", "PRAGMA ")):
        return "SQL text, such as a dump: load it with sqlite3 first"
    first_line = sample.splitlines()[0] if sample.strip() else ""
    if any(sep in first_line for sep in (";", ",", "\t")):
        return "a text file, a CSV list?"
    return "a text file"


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that exists but is not an SQLite database, before SQLite gets to say so 146 lines
    deep (an empty file is an empty database to SQLite, and is left to the schema check)."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise DatabaseError(f"cannot read database file {path}: {exc.strerror}") from None
    if header != _SQLITE_MAGIC:
        raise DatabaseError(
            f"{path} is not an SQLite database (it looks like {describe_file(path)})",
            hint="--database takes sqlite:///PATH.db or postgresql+psycopg://...; "
            "lists are imported with `outreach contacts import FILE`",
        )


def _read_only_uri(path: Path) -> str | None:
    """A read-only SQLite URI for a database file this process cannot write, or None when it can.

    SQLite reads a WAL database through its ``-shm`` file, which it creates next to the database. Where
    the folder is not writable either and no ``-wal`` file is there (outreach checkpoints on a clean
    exit), the copy is opened ``immutable``: nothing can be writing it.
    """
    if not path.is_file() or os.access(path, os.W_OK):
        return None
    resolved = path.resolve()
    quoted = urllib.parse.quote(str(resolved))
    folder_writable = os.access(resolved.parent, os.W_OK)
    shm = resolved.with_name(resolved.name + "-shm")
    wal = resolved.with_name(resolved.name + "-wal")
    if folder_writable or shm.exists():
        return f"sqlite:///file:{quoted}?mode=ro&uri=true"
    if wal.exists() and wal.stat().st_size > 0:
        raise DatabaseError(
            f"cannot read {path}: it is read-only, its folder too, and its last writes are still in {wal}",
            hint="open it once where it can be written (outreach folds the log back in on exit), "
            "or copy it with `outreach backup`",
        )
    return f"sqlite:///file:{quoted}?mode=ro&immutable=1&uri=true"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the settings outreach relies on; does not touch the schema.

    An SQLite file that this process cannot write is opened read-only: every command that only reads
    works on it, and one that writes says the database is read-only.
    """
    try:
        if url.startswith("sqlite"):
            path = sqlite_path(url)
            read_only = False
            target = url
            if path is not None:
                parent = path.resolve().parent
                if not parent.is_dir():
                    raise DatabaseError(f"{url}: folder {parent} does not exist")
                _check_sqlite_file(path)
                uri = _read_only_uri(path)
                if uri is not None:
                    target, read_only = uri, True
            engine = create_engine(
                target,
                connect_args={"check_same_thread": False, "timeout": 30},
                execution_options={READ_ONLY: True} if read_only else {},
            )
            event.listen(engine, "connect", _sqlite_pragmas(read_only))

            @event.listens_for(engine, "connect")
            def _no_autobegin(dbapi_conn: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
                dbapi_conn.isolation_level = None

            event.listen(engine, "begin", _sqlite_begin)
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


def is_read_only(engine: Engine) -> bool:
    """Whether ``engine`` was opened read-only (an SQLite file this process cannot write)."""
    return bool(engine.url.query.get("mode") == "ro")


def _applied(conn: Connection) -> list[str]:
    rows = conn.execute(text("SELECT name FROM schema_migration ORDER BY name"))
    return [str(row[0]) for row in rows]


def _refuse_newer(applied: list[str]) -> None:
    known = {name for name, _ in MIGRATIONS}
    newer = [name for name in applied if name not in known]
    if newer:
        raise DatabaseError(
            f"the database was upgraded by a newer outreach (migrations {', '.join(newer)})",
            hint="upgrade outreach before using this database",
        )


def schema_state(engine: Engine) -> tuple[list[str] | None, bool]:
    """Read-only: the migrations recorded (None when there is no ``schema_migration`` table) and whether
    the database holds any other table. Takes no write lock, so it never waits for a writer."""
    with reader(engine).connect() as conn:
        tables = set(inspect(conn).get_table_names())
        applied = _applied(conn) if "schema_migration" in tables else None
    return applied, bool(tables - {"schema_migration"})


def migrate(engine: Engine) -> list[str]:
    """Bring the schema up to date; returns the names of the migrations applied now.

    The schema version is read first without a lock; only a database that needs a migration takes the
    write lock (and reads the version again under it, as another process may have migrated meanwhile).
    """
    applied, _ = schema_state(engine)
    if applied is not None:
        _refuse_newer(applied)
        missing = [name for name, _ in MIGRATIONS if name not in applied]
        if not missing:
            return []
        if is_read_only(engine):
            raise DatabaseError(
                f"the database is read-only and needs upgrading ({', '.join(missing)})",
                hint="upgrade a writable copy with `outreach init`",
            )
    elif is_read_only(engine):
        raise DatabaseError("the database is read-only and has no outreach tables")
    if not is_sqlite(engine):
        with engine.begin() as conn:
            return _migrate(conn)
    # SQLite: a migration may rebuild a table, which needs foreign keys off (the pragma is a no-op inside
    # a transaction); they are checked before the commit instead, and on again afterwards.
    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                done = _migrate(conn)
                if done:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        table, rowid, parent = broken[0], broken[1], broken[2]
                        raise DatabaseError(
                            f"cannot upgrade the database ({', '.join(done)}): row {rowid} of table "
                            f"{table} refers to a row of {parent} that does not exist",
                            hint="nothing was changed; repair or remove that row, then try again",
                        )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
    return done


def _migrate(conn: Connection) -> list[str]:
    if conn.dialect.name == "postgresql":
        # Several senders may open the same database at once: one migrates, the others wait.
        conn.execute(text("SELECT pg_advisory_xact_lock(7240001)"))
    conn.execute(
        text(
            "CREATE TABLE IF NOT EXISTS schema_migration ("
            "name VARCHAR(200) PRIMARY KEY, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
    )
    applied = _applied(conn)
    _refuse_newer(applied)
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


NO_DATABASE_HINT = "create one with `outreach init`, or point --database (OUTREACH_DATABASE_URL) at yours"


def open_database(url: str, *, upgrade: bool = True, create: bool = True) -> Engine:
    """Open (and by default create or upgrade) the database at ``url``.

    ``create=False`` (every command but ``init`` and ``demo``) refuses a database that does not exist
    yet, rather than creating an empty one at a mistyped path.
    """
    path = sqlite_path(url)
    if not create and path is not None and not path.exists():
        raise DatabaseError(f"there is no database at {path.absolute()}", hint=NO_DATABASE_HINT)
    engine = make_engine(url)
    try:
        if not create:
            applied, other_tables = schema_state(engine)
            if applied is None:
                engine.dispose()
                if path is not None and other_tables:
                    raise DatabaseError(
                        f"{path} is an SQLite database, but not one of outreach", hint=NO_DATABASE_HINT
                    )
                where = str(path) if path is not None else safe_url(url)
                raise DatabaseError(f"there is no outreach database at {where}", hint=NO_DATABASE_HINT)
        if upgrade:
            migrate(engine)
        else:
            with reader(engine).connect() as conn:
                conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        engine.dispose()
        raise DatabaseError(f"cannot open database {safe_url(url)}: {exc.orig}") from None
    return engine


def database_error(exc: DBAPIError, url: str) -> DatabaseError:
    """A database failure the command did not expect, as the one line the user sees."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    where = safe_url(url)
    if "readonly database" in reason:
        return DatabaseError(
            f"{where} is read-only: this command writes to the database",
            hint="run it on a writable copy (the file and its folder writable for you)",
        )
    if "database is locked" in reason:
        return DatabaseError(
            f"{where} is busy: another process held its write lock for 30 s",
            hint="see who is writing (`outreach status`), then try again",
        )
    if "disk is full" in reason or "No space left" in reason:
        return DatabaseError(f"{where}: the disk is full ({reason})", hint="nothing was written; free space")
    return DatabaseError(f"database {where}: {reason}")


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
