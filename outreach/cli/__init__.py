"""The command line. Commands parse, call one core function, print; see docs/cli.md."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from outreach import __version__
from outreach.cli import demo, letters, registry, sending, tracking
from outreach.cli.common import AppContext, contacts_app, new_typer
from outreach.config import load_settings

app = new_typer(
    "outreach: personalised letters to Dutch municipal decision makers on youth care.\n\n"
    "Settings come from flags, then OUTREACH_* environment variables, then outreach.toml."
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"outreach {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database: Annotated[
        str | None,
        typer.Option(
            "--database", help="Database URL (default sqlite:///outreach.db) [OUTREACH_DATABASE_URL]"
        ),
    ] = None,
    templates: Annotated[
        Path | None,
        typer.Option("--templates", help="Campaign folders, default templates/letters [OUTREACH_TEMPLATES]"),
    ] = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More log output (-vv: debug).")
    ] = 0,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG),
        format="%(levelname)s %(name)s: %(message)s",
    )
    context = AppContext(settings=load_settings({"database_url": database, "templates": templates}))
    ctx.obj = context
    ctx.call_on_close(context.close)


app.add_typer(contacts_app, name="contacts")
for module in (registry, letters, sending, tracking, demo):
    module.register(app)


def main() -> None:
    app(prog_name="outreach")
