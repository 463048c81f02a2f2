"""Run an app under uvicorn: our own access log and headers, no proxy-header guessing by uvicorn."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp


def server_config(app: ASGIApp, host: str = "127.0.0.1", port: int = 8080) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        # The app logs requests itself (route templates, not paths with tokens) and decides which
        # X-Forwarded-For to believe (limits.client_address), so uvicorn does neither.
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        lifespan="on",
        timeout_keep_alive=5,
        limit_concurrency=1000,
    )


def run_app(app: ASGIApp, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve until SIGINT/SIGTERM; raises OSError when the address cannot be bound."""
    server = uvicorn.Server(server_config(app, host, port))
    server.run()
