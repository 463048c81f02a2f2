"""The access log: method, route template, status, time. Never the path itself: it carries tokens."""

from __future__ import annotations

import logging
import time

from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ACCESS_LOG = "outreach.web.access"
UNROUTED = "(no route)"


def route_label(scope: Scope) -> str:
    """``/afmelden/{token}`` for a matched route, ``/static/…`` under a mount, else ``(no route)``."""
    route: BaseRoute | None = scope.get("route")
    if isinstance(route, Route):
        return route.path
    if isinstance(route, Mount):
        return f"{route.path}/…"
    return UNROUTED


class AccessLogMiddleware:
    """One INFO line per request on ``outreach.web.access``; no client address either (personal data)."""

    def __init__(self, app: ASGIApp, logger: str = ACCESS_LOG) -> None:
        self.app = app
        self.log = logging.getLogger(logger)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if self.log.isEnabledFor(logging.INFO):
                self.log.info(
                    "%s %s %d %.1fms",
                    scope["method"],
                    route_label(scope),
                    status,
                    (time.perf_counter() - started) * 1000,
                )
