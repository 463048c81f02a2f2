"""A real uvicorn server on 127.0.0.1 with an ephemeral port, in a thread, for the web tests.

with serve(app) as base_url:          # "http://127.0.0.1:43817"
    httpx.get(base_url + "/healthz")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from starlette.types import ASGIApp

from outreach.web.server import server_config

START_TIMEOUT = 10.0


@contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Start ``app`` under uvicorn (as ``outreach serve`` configures it), yield its base URL, stop it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("uvicorn did not start on 127.0.0.1")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT)
        sock.close()


def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The access log lines, waiting for ``count``: the server thread logs just after it answers."""
    deadline = time.monotonic() + 5
    while True:
        lines = [r.getMessage() for r in caplog.records if r.name == "outreach.web.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)
