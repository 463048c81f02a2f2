"""`outreach serve`: the recipients' pages (unsubscribe, opt-in) behind the charity's reverse proxy."""

from __future__ import annotations

import gc
import logging
import sys
from typing import Annotated

import typer

from outreach.cli.common import app_context, err_console


def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (the proxy's side).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8080,
) -> None:
    """Serve the pages a recipient reaches from a letter: /afmelden/<token> (one-click unsubscribe,
    RFC 8058) and /aanmelden/<token> (opt-in), plus /healthz. Runs until Ctrl-C or SIGTERM.

    The public https address is [web] base_url in outreach.toml or OUTREACH_WEB_BASE_URL; campaigns'
    unsubscribe and opt-in links default to it. See docs/web.md for TLS, the proxy and systemd.
    """
    from outreach.web.public.app import build_public_app
    from outreach.web.server import bind, run_app

    context = app_context(ctx)
    settings = context.settings
    bind(host, port).close()  # a clear error before the database is opened
    app = build_public_app(context.engine(), settings)
    # A server's log: the access log (route templates, never tokens) and uvicorn's start/stop lines.
    for name in ("outreach.web", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.INFO)
    if settings.web_base_url is None:
        err_console.print(
            "Warning: [web] base_url is not set; letters carry no web unsubscribe link.", markup=False
        )
    elif not settings.web_base_url.startswith("https://"):
        err_console.print(
            f"Warning: base_url {settings.web_base_url} is not https (RFC 8058 needs https).", markup=False
        )
    err_console.print(f"Serving on http://{host}:{port} (Ctrl-C stops)", markup=False)
    # Process-wide tuning, so here and not in the app (tests run it inside pytest): what start-up built
    # lives as long as the process, the collector need not walk it again; and the opt-out writer thread
    # gets the GIL back after each SQLite call within 0.5 ms instead of the default 5 ms while the event
    # loop is busy (docs/performance.md, *Web*).
    gc.freeze()
    sys.setswitchinterval(0.0005)
    run_app(app, host, port)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve)
