"""A database failure during a send, told in one line (never a traceback): what failed, in the
database's own words, without the SQL and the driver's class names."""

from __future__ import annotations

import re

from sqlalchemy.exc import DBAPIError

from outreach.errors import DatabaseError

#: SQLAlchemy's "(psycopg.errors.AdminShutdown) " in front of the driver's message.
_DRIVER_CLASS = re.compile(r"\((?:\w+\.)+\w+\)\s*")

HINT = (
    "no letter is sent twice: run the same `outreach send` again once the database is back (letters "
    "that were being handed over are then marked 'unknown'); `outreach status` shows where it stands"
)


def reason(exc: BaseException) -> str:
    """The first line of what the database (or its driver) said."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else type(orig).__name__
    return _DRIVER_CLASS.sub("", first).strip() or type(orig).__name__


def database_failure(exc: BaseException) -> DatabaseError:
    return DatabaseError(f"the database failed during the send: {reason(exc)}", hint=HINT)
