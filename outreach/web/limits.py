"""Limits: request size (413 page) and requests per client (429 page), with the client's real address."""

from __future__ import annotations

import functools
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY = 16 * 1024  # a one-click POST is 26 bytes; a form with a choice well under a KiB

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BodyLimitMiddleware:
    """Refuse a request body over ``max_bytes``: by its Content-Length before reading, or while streaming.
    The 413 is raised as an HTTPException so the app's error page answers it."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if too_large:
                raise HTTPException(413)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413)
            return message

        await self.app(scope, limited_receive, send)


def parse_networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """'127.0.0.1', '10.0.0.0/8', '::1' → networks; raises ValueError naming the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


def client_address(request: Request, trusted_proxies: tuple[IpNetwork, ...] = ()) -> str:
    """The client's address. X-Forwarded-For is believed only when the connection comes from a trusted
    proxy, and then the right-most address that is not itself a trusted proxy is the client (anything to
    its left was written by the client and can be forged)."""
    peer = request.client.host if request.client else "unknown"
    return forwarded_client(peer, request.headers.getlist("x-forwarded-for"), trusted_proxies)


def forwarded_client(peer: str, forwarded: Iterable[str], trusted_proxies: tuple[IpNetwork, ...]) -> str:
    """``client_address`` from the peer's address and the X-Forwarded-For header lines, in order."""
    if not trusted_proxies or not _in(peer, trusted_proxies):
        return peer
    for hop in reversed([h.strip() for h in ",".join(forwarded).split(",") if h.strip()]):
        if not _in(hop, trusted_proxies):
            return hop
    return peer


@functools.lru_cache(maxsize=4096)
def _in(address: str, networks: tuple[IpNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class RateLimiter:
    """A token bucket per key: ``per_minute`` requests a minute on average, bursts up to ``burst``.
    ``check`` raises HTTPException(429) with Retry-After. Thread-safe; keeps at most ``max_keys`` clients
    (the least recently seen are forgotten first), so a flood of addresses cannot exhaust memory."""

    def __init__(
        self,
        per_minute: float,
        burst: int | None = None,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(1, math.ceil(per_minute)))
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait

    def check(self, key: str) -> None:
        wait = self.allow(key)
        if wait > 0:
            raise HTTPException(429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
