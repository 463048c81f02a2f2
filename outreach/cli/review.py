"""`outreach review`: the campaign's review in the browser (outreach/web/review/; docs/campaigns.md)."""

from __future__ import annotations

import ipaddress
import os
import threading
import webbrowser
from typing import Annotated

import typer

from outreach.cli.common import app_context
from outreach.errors import ConfigError
from outreach.letters.approval import ensure_campaign_row
from outreach.letters.campaign_file import load_campaign
from outreach.letters.kenmerk import store_campaign_kenmerk
from outreach.review.checked import ReviewCache
from outreach.web.review.app import create_review_app
from outreach.web.server import bind, run_app

PASSWORD_VARIABLE = "OUTREACH_REVIEW_PASSWORD"  # noqa: S105 (the name of the variable)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address; a name other than localhost counts as not (it may
    resolve to anything, and then strangers could reach the review)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def review(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Option("--campaign", "-c", help="The campaign's folder name (slug).")],
    host: Annotated[
        str,
        typer.Option(
            "--host", help=f"Address to listen on; anything but loopback needs {PASSWORD_VARIABLE}."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
) -> None:
    """Review a campaign in the browser: the check, every letter, and approve or reject it.

    Serves until Ctrl+C. Binding to an address other than loopback requires the password in
    OUTREACH_REVIEW_PASSWORD; reviewers then log in first.
    """
    password = os.environ.get(PASSWORD_VARIABLE) or None
    loopback = is_loopback(host)
    if not loopback and password is None:
        raise ConfigError(
            f"the review would be reachable from the network on {host}: set {PASSWORD_VARIABLE} first",
            hint="or review on this machine only: --host 127.0.0.1 (the default)",
        )
    sock = bind(host, port)  # a port in use is said before the check takes its seconds
    try:
        context = app_context(ctx)
        settings = context.settings
        engine = context.engine()
        # As `outreach approve` does: the campaign's kenmerk is fixed now, so the PDF letters the
        # reviewer reads carry the kenmerk they will be sent with (and are laid out once, for both).
        config = load_campaign(settings.templates, campaign)
        with engine.begin() as conn:
            store_campaign_kenmerk(conn, config, ensure_campaign_row(conn, config))
        cache = ReviewCache(engine, settings.templates, web_base_url=settings.web_base_url)
        typer.echo(f"Checking every letter of campaign {campaign} ...", err=True)
        checked = cache.get(campaign)
    except BaseException:
        sock.close()
        raise
    report = checked.report
    typer.echo(
        f"{report.recipients} recipients, {report.rendered} letters render, {len(report.failures)} fail, "
        f"{report.suppressed} suppressed, {report.invalid} unusable ({checked.seconds:.1f} s)",
        err=True,
    )
    app = create_review_app(
        engine, settings.templates, campaign, password=password, loopback=loopback, cache=cache
    )
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"

    def started() -> None:  # said once the server accepts, so the address works when it is read
        typer.echo(f"Review of campaign {campaign} at {url} (Ctrl+C to stop)")
        if not no_browser:
            threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()

    run_app(app, host, bound, sock=sock, on_started=started)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("review")(review)
