"""Security headers on every response; an app chooses its policy, a single response may set its own CSP."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Pages load only our own style sheet; no inline script or style, no framing by anyone, forms post home.
DEFAULT_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
HSTS_MAX_AGE = 365 * 24 * 3600


@dataclass(frozen=True)
class SecurityHeaders:
    """The headers an app sends. ``hsts`` belongs on only when the public address is https."""

    csp: str = DEFAULT_CSP
    hsts: bool = False
    referrer_policy: str = "no-referrer"

    @classmethod
    def for_base_url(cls, base_url: str | None, *, csp: str = DEFAULT_CSP) -> SecurityHeaders:
        return cls(csp=csp, hsts=bool(base_url and base_url.lower().startswith("https://")))

    def items(self) -> list[tuple[str, str]]:
        headers = [
            ("content-security-policy", self.csp),
            ("referrer-policy", self.referrer_policy),
            ("x-content-type-options", "nosniff"),
            ("cross-origin-opener-policy", "same-origin"),
        ]
        if self.hsts:
            headers.append(("strict-transport-security", f"max-age={HSTS_MAX_AGE}"))
        return headers

    def apply(self, headers: MutableHeaders) -> None:
        """Add what the response has not set itself (a route may send a stricter or framed CSP)."""
        for name, value in self.items():
            if name not in headers:
                headers[name] = value


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, headers: SecurityHeaders) -> None:
        self.app = app
        self.headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.headers.apply(MutableHeaders(scope=message))
            await send(message)

        await self.app(scope, receive, send_with_headers)
