"""`outreach review`: the campaign's review in the browser (outreach/web/review/; docs/campaigns.md)."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import webbrowser
from typing import Annotated

import typer
import uvicorn

from outreach.cli.common import app_context, err_console
from outreach.errors import ConfigError
from outreach.review.checked import ReviewCache
from outreach.web.review.app import create_review_app
from outreach.web.server import server_config

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


def listen(host: str, port: int) -> socket.socket:
    """A listening socket (so the browser can connect before uvicorn accepts); ConfigError names the
    address when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


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
    context = app_context(ctx)
    engine = context.engine()
    cache = ReviewCache(engine, context.settings.templates)
    err_console.print(f"Checking every letter of campaign {campaign} ...")
    checked = cache.get(campaign)
    report = checked.report
    err_console.print(
        f"{report.recipients} recipients, {report.rendered} letters render, {len(report.failures)} fail, "
        f"{report.suppressed} suppressed, {report.invalid} unusable ({checked.seconds:.1f} s)"
    )
    app = create_review_app(
        engine, context.settings.templates, campaign, password=password, loopback=loopback, cache=cache
    )
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    server = uvicorn.Server(server_config(app, host, bound))
    typer.echo(f"Review of campaign {campaign} at {url} (Ctrl+C to stop)")
    if not no_browser:
        threading.Thread(target=_open_when_started, args=(server, url), daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _open_when_started(server: uvicorn.Server, url: str) -> None:
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("review")(review)
