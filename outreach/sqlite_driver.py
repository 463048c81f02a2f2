"""What the hot paths that use pysqlite directly share (the sender's and the web's group commits): their
transactions, waiting for the write lock while another connection (a send, `outreach serve`) holds it,
and SQLAlchemy's conversions of datetimes to the text SQLite stores."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Dialect
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

from outreach import models  # noqa: F401  (registers the tables on SQLModel.metadata)

#: How long a writer waits for another one's write lock (every connection's busy timeout, outreach.db).
SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
#: How often ``while_locked`` tries again. SQLite's own busy handler (busy_timeout) sleeps 1, 2, 5, 10, 15,
#: 20, 25, 25, ... ms between its tries, so a lock another writer held for 3 ms cost the waiter 18 ms, and
#: a few such in a row over 100 ms (docs/performance.md, *Web*); a try that finds the lock taken costs
#: microseconds.
SQLITE_LOCK_POLL = 0.0005

_T = TypeVar("_T")


def sqlite_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED (also wrapped by SQLAlchemy): another connection holds the write lock."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def while_locked(transaction: Callable[[], _T], *, patience: float) -> _T:
    """``transaction()`` (on a connection with busy timeout 0), again every SQLITE_LOCK_POLL seconds
    while it fails because another connection holds the write lock, for up to ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return transaction()
        except Exception as exc:
            if not sqlite_busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(SQLITE_LOCK_POLL)


@contextmanager
def sqlite_transaction(raw: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``) on a pysqlite connection of ours, in autocommit
    mode (``isolation_level = None``, as outreach.db sets it). Through SQLAlchemy (its begin event, an
    execution context for the BEGIN, the commit) they cost a tenth of the sender's event loop per letter
    (py-spy, 100,000 letters), more than its two statements themselves."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        raw.rollback()
        raise
    raw.commit()


class Conversions(NamedTuple):
    """SQLAlchemy's conversions of a datetime to the text SQLite stores, and back, for statements sent
    to the driver itself (they bypass the column types): both paths write and read the same text."""

    stamp: Callable[[datetime | None], Any]
    parse: Callable[[Any], datetime | None]


def conversions(dialect: Dialect) -> Conversions:
    column = SQLModel.metadata.tables["delivery"].c.updated_at  # every timestamp column has this type
    stamp = column.type.dialect_impl(dialect).bind_processor(dialect)
    parse = column.type.dialect_impl(dialect).result_processor(dialect, None)
    assert stamp is not None and parse is not None, "SQLite keeps datetimes as text"
    return Conversions(stamp, parse)
