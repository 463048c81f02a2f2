"""`outreach print`: the campaign's letters on paper, for a print shop. See docs/campaigns.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from outreach.cli.common import app_context, err_console
from outreach.letters.campaign_file import load_campaign


def print_command(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="The campaign's folder name (slug).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the PDF and the addresses CSV.")],
    everyone: Annotated[
        bool,
        typer.Option(
            "--all", help="Everyone whose letter has not gone out yet, not only those without e-mail."
        ),
    ] = False,
    reprint: Annotated[
        bool, typer.Option("--reprint", help="Write the letters already printed again (records nothing).")
    ] = False,
    duplex: Annotated[
        bool, typer.Option("--duplex", help="A blank page after each letter of an odd number of pages.")
    ] = False,
) -> None:
    """Print the letters of everyone without an e-mail address: one PDF and a CSV of the addresses.

    Each letter printed is recorded as delivered on paper (state printed), exactly once: a second run
    prints only letters that were not printed or sent yet. The campaign must be approved and have a
    [letter] section."""
    from outreach.letters.printing import print_letters  # pypdf and the PDF machinery: only when printing

    context = app_context(ctx)
    config = load_campaign(context.settings.templates, campaign)
    result = print_letters(context.engine(), config, out, everyone=everyone, reprint=reprint, duplex=duplex)
    if not result.letters:
        who = "already printed" if reprint else "waiting for a paper letter"
        err_console.print(f"Nothing to print: no letter of campaign {campaign} is {who}")
        return
    verb = "Printed again" if reprint else "Printed"
    typer.echo(
        f"{verb} {result.letters} letters ({result.pages} pages, {result.without_email} without an e-mail"
        f" address) to {result.pdf}; addresses in {result.addresses}"
    )
    if not reprint:
        typer.echo(f"Recorded as delivered on paper; `outreach status --campaign {campaign}` counts them.")


def register(app: typer.Typer) -> None:
    app.command("print")(print_command)
