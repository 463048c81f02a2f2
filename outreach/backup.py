"""`outreach backup DEST`: a consistent copy of the database while it may be in use.

A plain copy of an SQLite file can miss the last writes (still in the ``-wal`` file) or catch a page
mid-write. SQLite's online backup API copies a snapshot instead, as ``sqlite3 outreach.db ".backup
DEST"`` does; the copy is one self-contained file (rollback journal, no ``-wal``), checked with
``PRAGMA quick_check`` before it takes its name. PostgreSQL has its own tool for this: ``pg_dump``
(custom format, restored with ``pg_restore``), which takes its snapshot in one transaction.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from outreach.db import is_sqlite, open_database, safe_url
from outreach.errors import DatabaseError, UsageError


@dataclass(frozen=True)
class BackupResult:
    source: str  # the URL, password masked
    destination: Path
    method: str  # "sqlite backup API" | "pg_dump"
    size: int  # bytes
    contacts: int | None  # counted in the copy (SQLite)
    deliveries: int | None


def backup_database(url: str, destination: Path) -> BackupResult:
    """Write a consistent copy of the database at ``url`` to ``destination`` (never overwritten)."""
    if destination.exists():
        raise UsageError(f"{destination} exists: a backup never overwrites a file", hint="choose a new name")
    if not destination.parent.is_dir():
        raise UsageError(f"folder {destination.parent} does not exist")
    engine = open_database(url, create=False, upgrade=False)  # the copy keeps the schema it had
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        if is_sqlite(engine):
            result = _sqlite_backup(engine, partial, destination)
        else:
            result = _pg_dump(url, partial, destination)
        os.replace(partial, destination)
        return result
    finally:
        engine.dispose()
        partial.unlink(missing_ok=True)


def _sqlite_backup(engine: Engine, partial: Path, destination: Path) -> BackupResult:
    raw = engine.raw_connection()
    try:
        source = raw.driver_connection
        assert isinstance(source, sqlite3.Connection)
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            # All pages in one step: one read snapshot for the whole copy, so writers elsewhere do not
            # make it start over, and the copy is the database as it was at one moment.
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")
            check = target.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise DatabaseError(f"the copy in {partial} does not pass PRAGMA quick_check: {check}")
            contacts = int(target.execute("SELECT count(*) FROM contact").fetchone()[0])
            deliveries = int(target.execute("SELECT count(*) FROM delivery").fetchone()[0])
        finally:
            target.close()
        with partial.open("rb") as fh:
            os.fsync(fh.fileno())
    except sqlite3.Error as exc:
        raise DatabaseError(
            f"cannot write the backup {destination}: {exc}", hint="nothing was written"
        ) from None
    except OSError as exc:
        raise DatabaseError(
            f"cannot write the backup {destination}: {exc.strerror}", hint="nothing was written"
        ) from None
    finally:
        raw.close()
    return BackupResult(
        source=safe_url(str(engine.url)),
        destination=destination,
        method="sqlite backup API",
        size=partial.stat().st_size,
        contacts=contacts,
        deliveries=deliveries,
    )


def _pg_dump(url: str, partial: Path, destination: Path) -> BackupResult:
    program = shutil.which("pg_dump")
    if program is None:
        raise DatabaseError(
            "cannot back up a PostgreSQL database without pg_dump",
            hint="install the PostgreSQL client tools (Debian: apt-get install postgresql-client), "
            "or use the server's own backup",
        )
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:  # through the environment, never on a command line others can read
        env["PGPASSWORD"] = str(parsed.password)
    libpq = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    try:
        done = subprocess.run(  # noqa: S603  (pg_dump found on PATH, arguments are ours)
            [program, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={libpq}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise DatabaseError(f"cannot run {program}: {exc.strerror}") from None
    if done.returncode != 0:
        reason = next((line for line in done.stderr.splitlines() if line.strip()), f"exit {done.returncode}")
        with contextlib.suppress(OSError):
            partial.unlink()
        raise DatabaseError(
            f"pg_dump could not back up {safe_url(url)}: {reason}", hint="nothing was written"
        )
    return BackupResult(
        source=safe_url(url),
        destination=destination,
        method="pg_dump",
        size=partial.stat().st_size,
        contacts=None,
        deliveries=None,
    )
