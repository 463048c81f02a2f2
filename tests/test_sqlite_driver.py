"""outreach.sqlite_driver: waiting for SQLite's write lock by asking again, never in its busy handler."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from outreach.db import open_database
from outreach.sqlite_driver import sqlite_busy, sqlite_transaction, while_locked


def _writer(path: Path) -> sqlite3.Connection:
    """A connection as the hot paths hold one: autocommit, busy timeout 0."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_while_locked_waits_for_another_writer_and_gives_up_after_its_patience(db_url: str) -> None:
    """The writer that finds the write lock taken asks again (every SQLITE_LOCK_POLL) until the other
    writer commits, and only that: a lock held longer than its patience, or any other error, is raised."""
    path = Path(db_url.removeprefix("sqlite:///"))
    open_database(db_url).dispose()
    holder, waiter = _writer(path), _writer(path)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE held (n INTEGER)")
    tries = []

    def insert() -> int:
        tries.append(1)
        with sqlite_transaction(waiter):
            return waiter.execute("INSERT INTO held VALUES (1)").rowcount

    with pytest.raises(sqlite3.OperationalError) as refused:
        while_locked(insert, patience=0.02)
    assert sqlite_busy(refused.value) and len(tries) > 1
    release = threading.Timer(0.05, holder.commit)
    release.start()
    tries.clear()
    assert while_locked(insert, patience=10) == 1
    release.join()
    assert len(tries) > 1  # it found the lock taken at least once, then got it
    assert waiter.execute("SELECT count(*) FROM held").fetchone() == (1,)
    tries.clear()

    def broken() -> object:
        tries.append(1)
        return waiter.execute("SELECT * FROM missing")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        while_locked(broken, patience=10)
    assert len(tries) == 1
    holder.close()
    waiter.close()
