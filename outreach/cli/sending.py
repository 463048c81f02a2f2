"""`outreach send` and `outreach status`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from outreach.cli.common import app_context, echo_json, err_console
from outreach.errors import UsageError
from outreach.letters.campaign import AMSTERDAM
from outreach.sending.run import SendOptions, SendSummary, run_send
from outreach.sending.status import CampaignStatus, campaign_status


class _RichProgress:
    """A progress bar on stderr: letters done of those due, sent/failed counts, rate and ETA."""

    def __init__(self, console: Console = err_console) -> None:
        self._bar = Progress(
            TextColumn("Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]}  failed {task.fields[failed]}  other {task.fields[other]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("send", total=0, sent=0, failed=0, other=0, rate="")
        self._counts = {"sent": 0, "failed": 0, "other": 0}
        self._pending = 0  # letters counted here, not yet handed to the bar
        self._updated = 0.0

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)
        self._bar.start()

    def advance(self, state: str) -> None:
        # Counted here and handed to rich at most every UPDATE_INTERVAL: rich's update and its speed
        # estimate (a sum over up to 1,000 samples) cost more per letter than sending it did.
        key = state if state in ("sent", "failed") else "other"
        self._counts[key] += 1
        self._pending += 1
        now = time.monotonic()
        if now - self._updated >= UPDATE_INTERVAL:
            self._update(now)

    def _update(self, now: float) -> None:
        counts = self._counts
        self._bar.update(
            self._task,
            advance=self._pending,
            sent=counts["sent"],
            failed=counts["failed"],
            other=counts["other"],
        )
        speed = self._bar.tasks[0].speed
        self._bar.update(self._task, rate=f"{speed:,.0f}/s" if speed else "")
        self._pending = 0
        self._updated = now

    def stop(self) -> None:
        if self._pending:
            self._update(time.monotonic())
        self._bar.stop()


#: Seconds between two updates of the progress bar (it redraws ten times a second).
UPDATE_INTERVAL = 0.1


def _confirm(campaign: str) -> Callable[[int], bool]:
    def ask(due: int) -> bool:
        if not sys.stdin.isatty():
            raise UsageError(
                f"{due} letters of campaign {campaign} are ready to send; confirm with --yes",
                hint=f"outreach send --campaign {campaign} --yes",
            )
        return typer.confirm(f"Send {due} letters of campaign {campaign}?", default=False, err=True)

    return ask


def send(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="The campaign folder's name (slug).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compose every letter and write .eml files; no SMTP.")
    ] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Send at most N letters now.")] = None,
    rate: Annotated[
        float | None,
        typer.Option("--rate", min=0.001, help="Letters per second, overriding the campaign's rate."),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=200, help="SMTP connections in parallel.")
    ] = 8,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send without asking for confirmation.")] = False,
    retry_unknown: Annotated[
        bool,
        typer.Option(
            "--retry-unknown",
            help="Also resend letters whose fate is unknown (the connection broke after the letter "
            "was handed over; the recipient may get it twice).",
        ),
    ] = False,
    outbox: Annotated[
        Path | None, typer.Option("--outbox", help="Folder for --dry-run's .eml files (default outbox/SLUG).")
    ] = None,
    ignore_window: Annotated[
        bool,
        typer.Option("--ignore-window", help="Send now, even outside the campaign's sending window."),
    ] = False,
) -> None:
    """Send the campaign's letters: exactly once, throttled, resumable.

    Plans a delivery for everyone in the audience (suppressed and invalid addresses are skipped), then
    sends what is due: new letters and deferred ones whose retry time has come. Safe to interrupt (Ctrl-C)
    and to run again; several senders may work one campaign together on PostgreSQL. Exits 0 when every
    delivery is sent or skipped, 1 otherwise.
    """
    from outreach.letters.campaign import with_web_base_url
    from outreach.letters.campaign_file import load_campaign

    context = app_context(ctx)
    settings = context.settings
    if outbox is not None and not dry_run:
        raise UsageError("--outbox only applies with --dry-run")
    options = SendOptions(
        dry_run=dry_run,
        limit=limit,
        rate=rate,
        concurrency=concurrency,
        retry_unknown=retry_unknown,
        outbox=outbox,
        ignore_window=ignore_window,
    )
    config = with_web_base_url(load_campaign(settings.templates, campaign), settings.web_base_url)
    engine = context.engine()
    confirm = None if (yes or dry_run) else _confirm(campaign)
    progress = _RichProgress() if not dry_run and err_console.is_terminal else None
    summary = run_send(engine, settings, config, options, confirm=confirm, progress=progress, notify=_tell)
    _print_summary(summary, limit=limit)
    raise typer.Exit(summary.exit_code)


def _tell(line: str) -> None:
    """A line for the user at once (Ctrl-C), above the progress bar when there is one; never wrapped."""
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _amsterdam(moment: datetime) -> str:
    """A moment (naive UTC, as the sender reports it) in the time the sending window is written in."""
    local = moment.replace(tzinfo=UTC).astimezone(AMSTERDAM)
    return f"{local:%Y-%m-%d %H:%M %Z} (Europe/Amsterdam)"


def _print_summary(summary: SendSummary, *, limit: int | None = None) -> None:
    slug = summary.campaign
    out = typer.echo
    plan = summary.plan
    if plan is not None and (plan.created or plan.skipped):
        out(
            f"Planned {plan.created} new deliveries; {plan.skipped} skipped (suppressed or unusable address)."
        )
    if plan is not None and plan.requeued:
        out(
            f"{plan.requeued} letters that could not be composed before are planned again "
            f"(the campaign was approved again or the contact changed)."
        )
    recovery = summary.recovery
    if recovery is not None and (recovery.unknown or recovery.released):
        out(
            f"Recovered after a stopped sender: {recovery.unknown} letters now 'unknown' (they may have "
            f"arrived; resend with --retry-unknown), {recovery.released} back in the queue."
        )
    if summary.dry_run and summary.outbox is not None:
        out(f"Dry run: wrote {summary.written} letters to {summary.outbox}; nothing was sent.")
    elif summary.dry_run and limit == 0:
        out("Dry run: no letters written (--limit 0); nothing was sent.")
    elif summary.cancelled:
        out("Nothing sent.")
    elif summary.window_opens_at is not None and summary.sent == 0:
        out(
            f"Outside the campaign's sending window; it opens next at "
            f"{_amsterdam(summary.window_opens_at)}. Nothing sent."
        )
    elif summary.due == 0:
        out(f"Nothing due for campaign {slug}.")
    else:
        held = f", held {summary.held}" if summary.held else ""
        out(
            f"Sent {summary.sent}, deferred {summary.deferred}, failed {summary.failed}, "
            f"unknown {summary.unknown}, skipped {summary.skipped}{held} in {summary.elapsed:.1f} s "
            f"({summary.rate:,.0f} letters/s)."
        )
        if summary.window_opens_at is not None:
            out(f"The sending window closed; it opens next at {_amsterdam(summary.window_opens_at)}.")
    for line in summary.errors[-5:]:
        err_console.print(f"  {line}", markup=False, highlight=False)
    counts = ", ".join(f"{state} {n}" for state, n in sorted(summary.counts.items()) if n)
    if counts:
        out(f"Campaign {slug}: {counts}.")
    if summary.elsewhere:
        out(f"{summary.elsewhere} letters are in the hands of other senders that are still running.")
    if summary.interrupted:
        sys.stderr.write(f"Interrupted. Resume with: outreach send --campaign {slug}\n")
    elif summary.exit_code != 0 and not summary.dry_run:
        unknown = summary.counts.get("unknown", 0)
        held_now = summary.counts.get("held", 0)
        if held_now:
            sys.stderr.write(
                f"{_letters(held_now)} could not be composed (held): fix the template or the contact's "
                f"data and approve the campaign again; `outreach send` then plans them again. "
                f"See: outreach status --campaign {slug}\n"
            )
        elif unknown and unknown == summary.left:
            sys.stderr.write(
                f"Not everything is sent: {_letters(unknown)} may or may not have arrived (unknown); "
                f"resend them on purpose with: outreach send --campaign {slug} --retry-unknown\n"
            )
        else:
            sys.stderr.write(f"Not everything is sent. See: outreach status --campaign {slug}\n")


def _letters(n: int) -> str:
    return f"{n:,} letter" if n == 1 else f"{n:,} letters"


def status(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="The campaign folder's name (slug).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """How far a campaign is: deliveries per state, recent errors, the next retry time."""
    report = campaign_status(app_context(ctx).reader(), campaign)
    if as_json:
        echo_json(report.as_json())
        return
    _print_status(report)


def _print_status(report: CampaignStatus) -> None:
    out = typer.echo
    out(f"Campaign {report.slug}: {report.name}")
    width = max(len(state) for state in report.counts)
    for state, n in report.counts.items():
        out(f"  {state:<{width}}  {n:>8,}")
    out(f"  {'total':<{width}}  {report.total:>8,}")
    if report.last_sent_at:
        out(f"Last letter sent at {report.last_sent_at:%Y-%m-%d %H:%M:%S} UTC.")
    if report.next_retry_at:
        out(f"Next retry of deferred letters from {report.next_retry_at:%Y-%m-%d %H:%M} UTC.")
    if report.workers:
        out(f"Sending now: {', '.join(report.workers)}")
    unknown = report.counts.get("unknown", 0)
    held = report.counts.get("held", 0)
    only_unknown = unknown > 0 and unknown == report.left
    if unknown and not only_unknown:
        out(
            f"{report.counts['unknown']} letters may or may not have arrived (unknown); "
            f"resend them on purpose with: outreach send --campaign {report.slug} --retry-unknown"
        )
    if report.recent_errors:
        out("Recent errors:")
        for error in report.recent_errors:
            code = f"{error.code} " if error.code else ""
            out(f"  {error.email or '(removed contact)'} [{error.state}] {code}{error.error}")
    if report.complete:
        out("Complete.")
    elif held:
        out(
            f"Not complete: {_letters(held)} could not be composed (held, see the errors above); fix "
            f"the template or the contact's data, approve the campaign again, then: "
            f"outreach send --campaign {report.slug}"
        )
    elif only_unknown:
        # `send` alone would answer "Nothing due": these letters wait for a decision, not for a run.
        out(
            f"Not complete: {_letters(unknown)} may or may not have arrived (unknown); resend them on "
            f"purpose with: outreach send --campaign {report.slug} --retry-unknown"
        )
    else:
        out(f"Not complete. Continue with: outreach send --campaign {report.slug}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("send")(send)
    app.command("status")(status)
