"""`outreach backup`: the database's own maintenance command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from outreach.cli.common import app_context


def backup(
    ctx: typer.Context,
    destination: Annotated[
        Path, typer.Argument(help="The file to write (must not exist): an SQLite file, or a pg_dump archive.")
    ],
) -> None:
    """Write a consistent copy of the database, safe while others use it.

    SQLite: the online backup API (as sqlite3's .backup), one self-contained file checked with
    PRAGMA quick_check; use it with --database sqlite:///DEST. PostgreSQL: pg_dump --format=custom
    (restore with pg_restore); needs the PostgreSQL client tools.
    """
    from outreach.backup import backup_database

    result = backup_database(app_context(ctx).settings.database_url, destination)
    counted = (
        f"; {result.contacts:,} contacts, {result.deliveries:,} deliveries"
        if result.contacts is not None and result.deliveries is not None
        else ""
    )
    typer.echo(
        f"Backed up {result.source} to {result.destination} ({result.method}, "
        f"{result.size / 1_000_000:,.1f} MB{counted})"
    )


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
