"""`outreach demo`: the whole flow on a fresh SQLite database and a local SMTP sink."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

REPO = Path(__file__).resolve().parents[2]


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder for the demo's database, previews and received mail.")
    ] = Path("demo"),
) -> None:
    """Run a whole demo campaign end to end: init, import, check, preview, approve, send, status, report.

    Needs no server: the demo starts its own SMTP sink on 127.0.0.1 and files what it receives as .eml.
    """
    from outreach.cli import app

    command = typer.main.get_command(app)

    def invoke(args: Sequence[str]) -> int:
        # Without standalone mode, click returns the exit code of typer.Exit instead of exiting.
        try:
            result = command.main(args=list(args), prog_name="outreach", standalone_mode=False)
        except typer.Exit as exc:
            return exc.exit_code
        return result if isinstance(result, int) else 0

    from outreach.demo import run_demo  # aiosmtpd: only the demo needs it

    code = run_demo(directory.resolve(), REPO, invoke, typer.echo)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
