"""Run an app under uvicorn: our own access log and headers, no proxy-header guessing by uvicorn."""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from outreach.errors import ServeError


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


class _Server(uvicorn.Server):
    on_started: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_started is not None:
            self.on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn raises the signal again after a graceful shutdown; SIGINT would then end `outreach
        # serve` with a KeyboardInterrupt traceback. A requested stop is a normal end: exit 0.
        self._captured_signals.clear()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port; ServeError names the address when it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def run_app(
    app: ASGIApp,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    sock: socket.socket | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; raises ServeError when the address cannot be bound. ``sock``: a
    socket from ``bind`` (to learn the port of port 0 first); ``on_started``: called once it accepts."""
    sock = sock or bind(host, port)
    server = _Server(server_config(app, host, port))
    server.on_started = on_started
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
