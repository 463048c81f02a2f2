"""`outreach track`, `outreach inbox`, `outreach report` and `outreach contacts export|forget|purge`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from outreach.cli.common import app_context, contacts_app, echo_json, new_typer
from outreach.errors import UsageError
from outreach.models import EventKind

if TYPE_CHECKING:
    # The tracking modules (IMAP, bounce parsing) load when a tracking command runs: `outreach send`
    # and the other commands start faster without them.
    from outreach.tracking.events import TrackResult
    from outreach.tracking.imap_sync import SyncResult
    from outreach.tracking.report import CampaignReport, ReportRow

track_app = new_typer("Record a response by hand: a reply, an opt-in, an opt-out or a note.")
inbox_app = new_typer("Read replies, bounces and unsubscribes from the charity's mailbox (IMAP).")


class GroupBy(StrEnum):
    ROLE = "role"
    PARTY = "party"
    PROVINCE = "province"
    MUNICIPALITY = "municipality"


ContactOption = Annotated[
    str, typer.Option("--contact", metavar="EMAIL", help="The person's e-mail address (any capitalisation).")
]
CampaignOption = Annotated[
    str | None,
    typer.Option(
        "--campaign",
        metavar="SLUG",
        help="The campaign the response belongs to (default: the last letter sent).",
    ),
]
AtOption = Annotated[
    datetime | None,
    typer.Option(
        "--at",
        metavar="DATETIME",
        help="When it happened, local time (default: now), e.g. 2026-03-12 or '2026-03-12 14:30'.",
        formats=["%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S"],
    ),
]
UnmatchedOption = Annotated[
    int | None,
    typer.Option(
        "--unmatched",
        metavar="ID",
        help="Attach this unmatched inbox message (see `outreach inbox unmatched`).",
    ),
]


def _utc(value: datetime | None) -> datetime | None:
    # Staff type the local (Dutch) time; the database holds naive UTC.
    return value.astimezone(UTC).replace(tzinfo=None) if value is not None else None


def _print_tracked(result: TrackResult) -> None:
    where = f"campaign {result.campaign}" if result.campaign else "no campaign"
    letter = f", letter {result.delivery_id}" if result.delivery_id else ""
    typer.echo(f"Recorded {result.kind.value} for {result.email} ({where}{letter}); event {result.event_id}.")
    if not result.known_contact:
        typer.echo(f"{result.email} is not in the registry; the address is suppressed all the same.")
    if result.kind is EventKind.OPT_OUT:
        state = "now suppressed" if result.suppressed else "was already suppressed"
        typer.echo(f"The address {state}: no campaign will write to it again.")
        if result.skipped:
            typer.echo(f"{result.skipped} letter(s) not yet sent to it are skipped.")
    if result.lifted:
        typer.echo("The earlier opt-out of this address is lifted.")


def _track_command(kind: EventKind, doc: str) -> Callable[..., None]:
    def command(
        ctx: typer.Context,
        contact: ContactOption,
        campaign: CampaignOption = None,
        text: Annotated[
            str | None,
            typer.Option(
                "--text",
                metavar="TEXT",
                help="What was said or asked for, in a sentence (kept, never a letter).",
            ),
        ] = None,
        at: AtOption = None,
        unmatched: UnmatchedOption = None,
    ) -> None:
        context = app_context(ctx)
        from outreach.tracking.events import track

        result = track(
            context.engine(),
            kind,
            contact,
            campaign=campaign,
            text=text,
            at=_utc(at),
            unmatched_id=unmatched,
        )
        _print_tracked(result)

    command.__doc__ = doc
    return command


# --- inbox -----------------------------------------------------------------------------------------


def sync_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Read new messages from the mailbox (OUTREACH_IMAP_*) and record replies, bounces, opt-outs.

    Incremental and idempotent: a second run adds nothing. Messages are not marked as read.
    """
    context = app_context(ctx)
    settings = context.settings
    engine = context.engine()
    from outreach.tracking.classify import ClassifyOptions
    from outreach.tracking.imap_sync import sync_inbox, unsubscribe_addresses

    options = ClassifyOptions(unsubscribe_addresses=unsubscribe_addresses(engine, settings.templates))
    result = sync_inbox(engine, settings, options=options)
    if as_json:
        echo_json(_sync_json(result))
        return
    _print_sync(result)


def _sync_json(result: SyncResult) -> dict[str, object]:
    return {
        "mailbox": result.mailbox,
        "folders": [
            {
                "folder": f.folder,
                "uidvalidity": f.uidvalidity,
                "reset": f.reset,
                "new_messages": f.new_messages,
                "recorded": f.recorded,
                "duplicates": f.duplicates,
                "last_uid": f.last_uid,
            }
            for f in result.folders
        ],
        "recorded": result.counts,
        "suppressed": result.suppressed,
        "failed_letters": result.failed_deliveries,
        "unmatched": [{"id": e.event_id, "summary": e.summary} for e in result.unmatched],
    }


def _print_sync(result: SyncResult) -> None:
    for folder in result.folders:
        note = " (UIDVALIDITY changed: read again, known messages skipped)" if folder.reset else ""
        typer.echo(f"{result.mailbox}/{folder.folder}: {folder.new_messages} new message(s){note}")
    counts = result.counts
    labels = [
        ("reply", "replies"),
        ("auto-reply", "automatic replies"),
        ("bounce", "bounces"),
        ("opt-out", "opt-outs"),
        ("unmatched", "unmatched"),
    ]
    typer.echo("Recorded: " + ", ".join(f"{counts.get(kind, 0)} {label}" for kind, label in labels))
    if result.failed_deliveries:
        typer.echo(f"{result.failed_deliveries} letter(s) marked failed after a hard bounce.")
    if result.suppressed:
        typer.echo(f"{result.suppressed} address(es) newly suppressed (hard bounce or opt-out).")
    if result.unmatched:
        typer.echo(
            "Not matched to a letter (attach with `outreach track reply --contact EMAIL --unmatched ID`):"
        )
        for event in result.unmatched:
            typer.echo(f"  {event.event_id:>6}  {event.summary}")


def unmatched_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List the inbox messages nothing could be matched to, newest first."""
    from outreach.tracking.events import list_unmatched

    items = list_unmatched(app_context(ctx).reader())
    if as_json:
        echo_json(
            [
                {"id": m.event_id, "received": m.occurred_at, "summary": m.summary, "message_id": m.reference}
                for m in items
            ]
        )
        return
    if not items:
        typer.echo("No unmatched messages.")
        return
    for m in items:
        typer.echo(f"{m.event_id:>6}  {m.occurred_at:%Y-%m-%d %H:%M}  {m.summary}")


# --- report ----------------------------------------------------------------------------------------


def report_command(
    ctx: typer.Context,
    campaign: Annotated[
        str, typer.Option("--campaign", "-c", metavar="SLUG", help="The campaign's folder name.")
    ],
    by: Annotated[
        GroupBy | None, typer.Option("--by", help="One row per role, party, province or municipality.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout (coverage is in --json).")] = False,
) -> None:
    """Sent, failed, bounced, replied, automatic replies, opt-outs and response rate; and the
    municipalities where no letter was delivered."""
    if as_json and as_csv:
        raise UsageError("--json and --csv cannot be combined")
    context = app_context(ctx)
    from outreach.tracking.report import build_report

    report = build_report(
        context.reader(),
        campaign,
        by=by.value if by else None,
        templates=context.settings.templates,
    )
    if as_json:
        echo_json(report.as_json())
    elif as_csv:
        typer.echo(report.as_csv(), nl=False)
    else:
        _print_report(report)


UNCOVERED_SHOWN = 60
UNPLANNED_SHOWN = 20


def _rate(row: ReportRow) -> str:
    return f"{row.response_rate:.1%}" if row.response_rate is not None else "-"


def _print_report(report: CampaignReport) -> None:
    # Piped output (a file, `less`) is not squeezed to 80 columns; a terminal gets its own width.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 140)
    table = Table(title=f"{report.name} ({report.campaign})", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column(report.by or "", style="bold", no_wrap=True)
    headers = (
        *("letters", "sent", "failed", "skipped", "no\ne-mail", "bounced", "replied", "auto-\nreplied"),
        "opted\nout",
    )
    for header in (*headers, "response\nrate"):
        table.add_column(header, justify="right", no_wrap=True)

    def cells(row: ReportRow) -> list[str]:
        numbers = (row.letters, row.sent, row.failed, row.skipped, row.no_email, row.bounced, row.replied)
        return [f"{n:,}" for n in (*numbers, row.auto_replied, row.opted_out)] + [_rate(row)]

    for row in report.rows:
        from outreach.tracking.report import UNKNOWN

        label = row.group if row.group is not None else UNKNOWN[report.by or ""]
        table.add_row(label, *cells(row))
    table.add_row("total", *cells(report.totals), style="bold" if report.rows else None)
    console.print(table)
    console.print(
        f"Coverage ({report.scope}): a letter was delivered in {report.covered} of "
        f"{report.municipalities_in_scope} municipalities."
    )
    planned = [m for m in report.uncovered if m.letters]
    unplanned = [m for m in report.uncovered if not m.letters]
    if planned:
        console.print(f"Letters planned but none delivered in {len(planned)}:")
        for m in planned[:UNCOVERED_SHOWN]:
            unreachable = f"; {m.no_email} without an e-mail address" if m.no_email else ""
            console.print(
                f"  {m.cbs_code}  {m.name}, {m.province} ({m.letters} letter(s) planned, none delivered"
                f"{unreachable})"
            )
        if len(planned) > UNCOVERED_SHOWN:
            console.print(f"  … and {len(planned) - UNCOVERED_SHOWN} more (all of them: --json)")
    if unplanned:
        # A long list of places nobody in the registry was written to is noise; a short one is a to-do.
        names = ", ".join(m.name for m in unplanned)
        if len(unplanned) <= UNPLANNED_SHOWN:
            console.print(f"No letter planned in {len(unplanned)}: {names}")
        else:
            console.print(f"No letter planned in {len(unplanned)} municipalities (the list: --json).")


# --- privacy ---------------------------------------------------------------------------------------


def export_command(
    ctx: typer.Context,
    email: Annotated[
        str,
        typer.Argument(
            help="The person's e-mail address, or register:ID for an office holder the register lists "
            "without one."
        ),
    ],
) -> None:
    """Everything held on one person (every office, letters, responses, suppression) as JSON."""
    from outreach.tracking.privacy import export_person

    echo_json(export_person(app_context(ctx).reader(), email))


def forget_command(
    ctx: typer.Context,
    email: Annotated[
        str,
        typer.Argument(
            help="The person's e-mail address, or register:ID for an office holder the register lists "
            "without one."
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase a person: contacts deleted, responses anonymised, only a hashed suppression kept so that no
    later import writes to them again."""
    if not yes:
        typer.confirm(f"Erase everything held on {email}? This cannot be undone", abort=True, err=True)
    from outreach.tracking.privacy import forget_person

    result = forget_person(app_context(ctx).engine(), email)
    typer.echo(
        f"Erased {result.email}: {result.contacts} contact row(s) deleted, {result.letters} letter(s) and "
        f"{result.events} response(s) anonymised."
    )
    typer.echo(f"Kept: a hashed suppression ({result.suppression}); the address itself is no longer stored.")
    _clear_pdf_store()


def _clear_pdf_store() -> None:
    """Stored PDF letters carry names and offices but no owner, so an erasure removes them all."""
    from outreach.letters.pdf_store import PdfStore

    store = PdfStore.default()
    removed = store.clear()
    if removed:
        typer.echo(
            f"Removed {removed} stored PDF letter(s) from {store.folder} (laid out again when needed)."
        )


def purge_command(
    ctx: typer.Context,
    ended_before: Annotated[
        datetime,
        typer.Option(
            "--ended-before",
            metavar="DATE",
            help="Erase contacts whose term ended before this date (YYYY-MM-DD).",
            formats=["%Y-%m-%d"],
        ),
    ],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count only; change nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase the contacts whose term ended (after elections); their responses are anonymised."""
    from outreach.tracking.privacy import purge_ended

    engine = app_context(ctx).engine()
    cutoff = ended_before.date()
    if not dry_run and not yes:
        preview = purge_ended(engine, cutoff, dry_run=True)
        typer.confirm(
            f"Erase {preview.contacts} contact row(s) whose term ended before {cutoff:%Y-%m-%d}?",
            abort=True,
            err=True,
        )
    result = purge_ended(engine, cutoff, dry_run=dry_run)
    verb = "Would erase" if result.dry_run else "Erased"
    typer.echo(
        f"{verb} {result.contacts} contact row(s) of {result.people} address(es) whose term ended before "
        f"{cutoff:%Y-%m-%d}; {result.letters} letter(s) kept anonymously"
        + ("." if result.dry_run else f", {result.events} response(s) anonymised.")
    )
    if not result.dry_run and result.contacts:
        _clear_pdf_store()


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    for kind, name, doc in (
        (EventKind.REPLY, "reply", "Record a reply (a letter, a call, a meeting request)."),
        (
            EventKind.OPT_IN,
            "optin",
            "Record that a person asked to receive the charity's mailings (--text: what).",
        ),
        (
            EventKind.OPT_OUT,
            "optout",
            "Record an opt-out: the address is suppressed at once for every campaign.",
        ),
        (EventKind.NOTE, "note", "Record a note on a person (and campaign)."),
    ):
        track_app.command(name)(_track_command(kind, doc))
    app.add_typer(track_app, name="track")
    inbox_app.command("sync")(sync_command)
    inbox_app.command("unmatched")(unmatched_command)
    app.add_typer(inbox_app, name="inbox")
    app.command("report")(report_command)
    contacts_app.command("export")(export_command)
    contacts_app.command("forget")(forget_command)
    contacts_app.command("purge")(purge_command)
