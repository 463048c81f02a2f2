"""The RFC 8058 one-click POST, answered in front of Starlette's middleware, routing and Jinja.

A mail client's one-click unsubscribe is the request `outreach serve` gets in bulk (many recipients in
the first minutes after a campaign went out), often while `outreach send` keeps every core busy: each
CPU millisecond the server spends is one the send loses (docs/performance.md, *Web*). This layer answers
exactly ``POST /afmelden/<token>`` whose form-urlencoded body is ``List-Unsubscribe=One-Click``, by the
app's own rules: the rate limit per client, the token check, the writer's group commit, the same page
with the same headers, one access log line without the token, a 404 or 500 page from the app's error
handlers. Every other request, and one the limiter refuses, goes on to the app (with the body it read).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import escape
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outreach.letters.ids import is_token
from outreach.web.accesslog import ACCESS_LOG
from outreach.web.errors import error_response, server_error
from outreach.web.limits import RateLimiter, forwarded_client
from outreach.web.pages import Pages
from outreach.web.public import store
from outreach.web.public.writer import OptOutWriter
from outreach.web.security import SecurityHeaders

BODY = b"List-Unsubscribe=One-Click"
LENGTH = str(len(BODY)).encode()
FORM = b"application/x-www-form-urlencoded"
ROUTE = "/afmelden/{token}"  # the access log names the route, never the path
PATH = re.compile(r"/afmelden/([^/]+)")  # what the route's {token} matches
PAGE = "afgemeld.html"
# Stand-ins for the two values that differ per letter, in a page rendered once per campaign; autoescape
# leaves them as they are, and they cannot occur in a template's text.
_ADDRESS, _TOKEN = "\ue000address\ue000", "\ue000token\ue000"

Context = Callable[[store.Letter, str], dict[str, Any]]


class UnsubscribedPage:
    """The page of a recorded one-click opt-out, rendered once per campaign (and whether the person still
    has an address) with stand-ins for the masked address and the token, which are escaped into it per
    request. The first letter of each kind is also rendered by Jinja and compared: a template that does
    more with those two values than print them is rendered by Jinja every time."""

    def __init__(self, pages: Pages, context: Context) -> None:
        self.pages = pages
        self.context = context
        self._parts: dict[tuple[str, bool], list[str] | None] = {}

    def render(self, letter: store.Letter, token: str, request: Request) -> str:
        values = self.context(letter, token) | {"scope": "all", "request": request}
        key = (letter.campaign_slug, values["address"] is not None)
        if key not in self._parts:
            self._parts[key] = self._split(values)
        parts = self._parts[key]
        if parts is None:
            return self.pages.render_text(PAGE, values)
        return _join(parts, values["address"], token)

    def _split(self, values: Mapping[str, Any]) -> list[str] | None:
        stand_in = {**values, "token": _TOKEN}
        if values["address"] is not None:
            stand_in["address"] = _ADDRESS
        parts = re.split(f"({_ADDRESS}|{_TOKEN})", self.pages.render_text(PAGE, stand_in))
        real = self.pages.render_text(PAGE, values)
        return parts if _join(parts, values["address"], values["token"]) == real else None


def _join(parts: list[str], address: str | None, token: str) -> str:
    values = {_ADDRESS: str(escape(address or "")), _TOKEN: str(escape(token))}
    return "".join(values.get(part, part) for part in parts)


class OneClickMiddleware:
    """Outermost of the public app's middleware (inside Starlette's error handler)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limiter: RateLimiter,
        proxies: tuple[Any, ...],
        writer: OptOutWriter,
        page: UnsubscribedPage,
        security: SecurityHeaders,
        headers: Mapping[str, str],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.proxies = proxies
        self.writer = writer
        self.page = page
        self.log = logging.getLogger(ACCESS_LOG)
        self.enabled = len(BODY) <= max_body_bytes
        # The page's own headers, then the security headers the app's middleware would add.
        names = {name.lower() for name in headers}
        security_headers = [(n, v) for n, v in security.items() if n not in names]
        self.headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            *((name.lower().encode(), value.encode("latin-1")) for name, value in headers.items()),
            *((name.encode(), value.encode("latin-1")) for name, value in security_headers),
        ]
        self.security = security

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not self.enabled
            or scope.get("root_path")
            or (match := PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        content_type = length = None
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value if content_type is None else content_type
            elif name == b"content-length":
                length = value if length is None else length
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
        token = match.group(1)
        if (
            length != LENGTH
            or content_type is None
            or content_type.split(b";")[0].strip() != FORM
            or not is_token(token.lower())
        ):
            await self.app(scope, receive, send)
            return
        read: list[Message] = []
        body = b""
        while True:
            message = await receive()
            read.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if len(body) > len(BODY) or not message.get("more_body", False):
                break
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if (
            body != BODY
            or read[-1].get("more_body")
            or self.limiter.allow(forwarded_client(peer, forwarded, self.proxies))
        ):
            # Not a one-click body after all, or refused by the limiter: the app answers, and reads the
            # same body (the limiter did not count a refused request, so the app's check refuses it too).
            await self.app(scope, _replay(read, receive), send)
            return
        try:
            outcome = await self.writer.record(token, "all", one_click=True)
            page = None if outcome is None else self.page.render(outcome[0], token, Request(scope))
        except Exception as exc:  # the database failed: the 500 page, the cause in the server's log
            response = await server_error(Request(scope), exc)
            await response(scope, receive, send)
            self._log(500, started)
            return
        if page is None:  # not one of our letters: the app's 404 page, as for any unknown path
            response = error_response(Request(scope), 404)
            self.security.apply(response.headers)
            await response(scope, receive, send)
            self._log(404, started)
            return
        content = page.encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(content)).encode()), *self.headers],
            }
        )
        await send({"type": "http.response.body", "body": content})
        self._log(200, started)

    def _log(self, status: int, started: float) -> None:
        if self.log.isEnabledFor(logging.INFO):
            self.log.info("%s %s %d %.1fms", "POST", ROUTE, status, (time.perf_counter() - started) * 1000)


def _replay(read: list[Message], receive: Receive) -> Receive:
    """``receive`` that first hands out the messages already read."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
