"""`outreach init`: create or upgrade the database and load the reference list of municipalities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.exc import DBAPIError

from outreach.db import make_engine, migrate, safe_url
from outreach.errors import DatabaseError
from outreach.registry.municipalities import LoadResult, default_reference_file, load_municipalities


@dataclass(frozen=True)
class InitResult:
    database: str  # the URL, password masked
    created: bool  # there was no outreach schema before
    migrations: list[str]  # applied now
    municipalities: LoadResult
    reference: Path


def initialise(database_url: str, reference: Path | None = None) -> InitResult:
    """Create or upgrade the schema, then insert or update the municipalities; safe to run again."""
    source = reference or default_reference_file()
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            created = "schema_migration" not in inspect(conn).get_table_names()
        applied = migrate(engine)
        loaded = load_municipalities(engine, source)
    except DBAPIError as exc:
        raise DatabaseError(f"cannot initialise database {safe_url(database_url)}: {exc.orig}") from None
    finally:
        engine.dispose()
    return InitResult(
        database=safe_url(database_url),
        created=created,
        migrations=applied,
        municipalities=loaded,
        reference=source,
    )
