"""The command line. Commands parse, call one core function, print; see docs/cli.md."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from outreach import __version__
from outreach.cli import database, demo, letters, printing, registry, review, sending, tracking, web
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
for module in (registry, letters, printing, review, sending, tracking, web, database, demo):
    module.register(app)


def main() -> None:
    try:
        app(prog_name="outreach")
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


def _exit_now(code: str | int | None) -> None:
    """End the process without the interpreter's teardown.

    By the time a command returns, its work is committed and its database closed (``AppContext.close``).
    What Python does after that, freeing every module and object one by one, took 0.4-0.5 s at the end
    of each ``outreach send`` (measured in bench/send_bench.py; docs/performance.md). This does what of
    that matters: the ``atexit`` handlers, logging's flush, stdout and stderr; then ``os._exit``. While
    another thread still runs (a library's, say), the normal exit waits for it as always.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): print it and fail, as the interpreter would
        sys.stderr.write(f"{code}\n")
        status = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (outreach ... | head): nothing more to say
            status = status or 120
    os._exit(status)
