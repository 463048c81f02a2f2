"""What every command module shares: the application context, the error-mapping group, output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from outreach.config import Settings
from outreach.db import database_error, open_database, reader
from outreach.errors import OutreachError

# Human output goes to stdout; errors, warnings and progress go to stderr so `--json` stays clean.
err_console = Console(stderr=True, highlight=False)


@dataclass
class AppContext:
    settings: Settings
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        """The database, opened (and upgraded) on first use. Only ``init`` and ``demo`` create one: a
        mistyped path is an error, not a new empty database."""
        if self._engine is None:
            self._engine = open_database(self.settings.database_url, create=False)
        return self._engine

    def reader(self) -> Engine:
        """The database for a command that only reads: it never waits for a writer's lock."""
        return reader(self.engine())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def app_context(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext), "the root callback sets the AppContext"
    return obj


class OutreachGroup(typer.core.TyperGroup):
    """Maps OutreachError to a one-line message on stderr and the error's exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except OutreachError as exc:
            print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except DBAPIError as exc:  # read-only, locked, full: one line, not a traceback
            obj = ctx.find_root().obj
            url = obj.settings.database_url if isinstance(obj, AppContext) else ""
            error = database_error(exc, url)
            print_error(error)
            raise typer.Exit(error.exit_code) from None


def print_error(exc: OutreachError) -> None:
    # Plain write, not rich markup: messages quote user data that may contain [brackets].
    sys.stderr.write(f"Error: {exc.message}\n")
    if exc.hint:
        sys.stderr.write(f"Hint: {exc.hint}\n")
    sys.stderr.flush()


def echo_json(document: Any) -> None:
    """One JSON document on stdout, nothing else (design.md: --json output)."""
    sys.stdout.write(json.dumps(document, ensure_ascii=False, indent=2, default=str))
    sys.stdout.write("\n")


def new_typer(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        cls=OutreachGroup,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )


contacts_app = new_typer("The contact registry: import council lists, list, show, export and forget people.")
