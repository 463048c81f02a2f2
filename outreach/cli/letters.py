"""Campaigns and their review: `campaign list|show`, `preview`, `check`, `approve`. See docs/campaigns.md."""

from __future__ import annotations

import getpass
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from outreach.cli.common import app_context, echo_json, err_console, new_typer
from outreach.errors import UsageError
from outreach.letters.approval import approval_status, record_rejection
from outreach.letters.campaign import CampaignConfig, with_web_base_url
from outreach.letters.campaign_file import load_campaign
from outreach.letters.review import (
    approve_campaign,
    check_campaign,
    format_decision,
    format_letter,
    list_campaigns,
    preview_letters,
    show_campaign,
    write_preview,
)

campaign_app = new_typer("Campaign folders under templates/letters: list them, show one.")

CampaignOption = Annotated[str, typer.Option("--campaign", "-c", help="The campaign's folder name (slug).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of text.")]


def _campaign(ctx: typer.Context, slug: str) -> CampaignConfig:
    settings = app_context(ctx).settings
    return with_web_base_url(load_campaign(settings.templates, slug), settings.web_base_url)


@campaign_app.command("list")
def campaign_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """List the campaigns with their audience and approval state."""
    context = app_context(ctx)
    summaries = list_campaigns(context.reader(), context.settings.templates)
    if as_json:
        echo_json([asdict(s) for s in summaries])
        return
    if not summaries:
        err_console.print(f"No campaigns in {context.settings.templates}")
    for s in summaries:
        if s.problem:
            typer.echo(f"{s.slug}\tINVALID: {s.problem}")
        else:
            typer.echo(f"{s.slug}\t{s.name}\t{s.audience}\tgriffie copy: {s.griffie_copy}\t{s.approval}")


@campaign_app.command("show")
def campaign_show(
    ctx: typer.Context,
    slug: Annotated[str, typer.Argument(help="The campaign's folder name.")],
    as_json: JsonOption = False,
) -> None:
    """Show a campaign's settings, audience size and approval state."""
    details = show_campaign(app_context(ctx).reader(), _campaign(ctx, slug))
    if as_json:
        echo_json(details)
        return
    history = details.pop("history", [])
    for key, value in details.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value) or "-"
        typer.echo(f"{key:<20} {'-' if value is None else value}")
    typer.echo("history" + ("" if history else f"{'':<13} -"))
    for decision in history if isinstance(history, list) else []:
        typer.echo(f"  {format_decision(decision)}")


def preview(
    ctx: typer.Context,
    campaign: CampaignOption,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Preview the letter(s) for this e-mail address.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write .eml and .html per recipient and an index.html into this folder."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="At most N recipients (default: 1 printed, all with --out)."),
    ] = None,
) -> None:
    """Show exactly what recipients will get: headers and text, or files to open in a browser."""
    config = _campaign(ctx, campaign)
    engine = app_context(ctx).reader()
    if out is not None:
        letters = preview_letters(engine, config, contact=contact, limit=limit)
        result = write_preview(letters, out, title=f"Preview of {config.name}")
        typer.echo(f"Wrote {result.letters} letters to {result.folder}; open {result.index}")
        return
    # Printed, one letter is the default: a whole audience on a terminal helps nobody.
    letters = preview_letters(engine, config, contact=contact, limit=limit or (None if contact else 1))
    shown = 0
    for recipient, letter in letters:
        if shown:
            typer.echo("\n" + "=" * 78 + "\n")
        if not recipient.sendable:
            err_console.print(
                f"Note: {recipient.email} will not be sent: {recipient.suppressed or recipient.email_problem}"
            )
        typer.echo(format_letter(letter))
        shown += 1
    if shown == 0:
        err_console.print(f"Nobody to preview: campaign {campaign} has no sendable recipients")


def check(ctx: typer.Context, campaign: CampaignOption, as_json: JsonOption = False) -> None:
    """Render the letter for every recipient and report every failure; exit 1 on any."""
    report = check_campaign(app_context(ctx).reader(), _campaign(ctx, campaign))
    if as_json:
        echo_json(asdict(report) | {"ok": report.ok, "by_problem": dict(report.failure_summary())})
    else:
        for problem in report.problems:
            typer.echo(f"PROBLEM {problem}")
        for failure in report.failures:
            typer.echo(f"FAIL {failure.recipient}: {failure.message}")
        if report.failures:
            typer.echo("Failures by problem:")
            for problem, count in report.failure_summary():
                typer.echo(f"  {count:>6}  {problem}")
        typer.echo(
            f"campaign {report.campaign}: {report.recipients} recipients, {report.suppressed} suppressed, "
            f"{report.no_email} without an e-mail address, "
            f"{report.invalid} invalid, {report.rendered} letters rendered "
            f"({report.cc_griffie} with Cc to the griffie, {report.griffie_copies} separate griffie copies), "
            f"{len(report.failures)} failures"
        )
    if report.no_email and not as_json:
        typer.echo(
            f"{report.no_email} of the {report.recipients} in the audience cannot be reached by e-mail: the "
            "registry has no address for them (`outreach contacts list --without-email` lists them; "
            f"`outreach print --campaign {report.campaign}` writes their letters on paper)"
        )
    if not report.ok:
        sys.stderr.write(f"Error: campaign {report.campaign} is not ready: fix the problems above\n")
        raise typer.Exit(1)


def approve(
    ctx: typer.Context,
    campaign: CampaignOption,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (default: your login name).")] = None,
    comment: Annotated[
        str | None, typer.Option("--comment", help="A remark kept with the approval in the history.")
    ] = None,
) -> None:
    """Check the campaign and record who approved it, when, and a fingerprint of every file in it."""
    by = _who(by, "approves")
    engine = app_context(ctx).engine()
    config = _campaign(ctx, campaign)
    record, report = approve_campaign(engine, config, by, comment=comment)
    typer.echo(
        f"Approved campaign {record.campaign} by {record.approved_by}"
        f" at {record.approved_at:%Y-%m-%d %H:%M} UTC: "
        f"{report.rendered} letters, {len(record.files)} files, fingerprint {record.fingerprint[:16]}"
    )
    status = approval_status(engine, config)
    if not status.approved:
        typer.echo(f"Not ready to send yet: {status.refusal()}")


def reject(
    ctx: typer.Context,
    campaign: CampaignOption,
    reason: Annotated[str, typer.Option("--reason", help="Why: kept in the history, shown to everyone.")],
    by: Annotated[str | None, typer.Option("--by", help="Who rejects (default: your login name).")] = None,
) -> None:
    """Record that the campaign is not to be sent as it is; `send` refuses until it is approved again."""
    by = _who(by, "rejects")
    if not reason.strip():
        raise UsageError("say why: --reason TEXT")
    record = record_rejection(app_context(ctx).engine(), _campaign(ctx, campaign), by, reason)
    typer.echo(
        f"Rejected campaign {record.campaign} by {record.approved_by} at {record.when}: {record.comment}"
    )


def _who(by: str | None, verb: str) -> str:
    if by is None:
        try:
            by = getpass.getuser()
        except (OSError, KeyError):
            by = ""
    if not by.strip():
        raise UsageError(f"say who {verb}: --by NAME")
    return by


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.add_typer(campaign_app, name="campaign")
    app.command("preview")(preview)
    app.command("check")(check)
    app.command("approve")(approve)
    app.command("reject")(reject)
