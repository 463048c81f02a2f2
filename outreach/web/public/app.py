"""The recipients' pages: ``/afmelden/<token>`` (RFC 8058 one-click and a page), ``/aanmelden/<token>``,
``/healthz``. GET and HEAD only show; only a POST records anything."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from outreach.config import Settings
from outreach.errors import OutreachError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.ids import is_token
from outreach.web.app import create_app
from outreach.web.limits import DEFAULT_MAX_BODY, RateLimiter, client_address, parse_networks
from outreach.web.pages import Pages
from outreach.web.public import store, texts
from outreach.web.public.oneclick import OneClickMiddleware, UnsubscribedPage
from outreach.web.public.writer import OptOutWriter
from outreach.web.security import SecurityHeaders

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
ORGANISATION = "Het Vergeten Kind"  # the sender named on pages whose campaign folder cannot be read
# Pages about one person's letter: never stored by a proxy or the browser's history cache, never indexed.
PRIVATE = {"cache-control": "no-store", "x-robots-tag": "noindex, nofollow"}
NO_STORE = {"cache-control": "no-store"}
PAGES = ("afmelden.html", "afgemeld.html", "aanmelden.html", "aangemeld.html", "error.html")
MAX_FIELDS = 8  # the forms have at most three fields; a one-click body one

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Sender:
    name: str
    reply_to: str | None


class PublicSite:
    """The state the handlers share: the database, the campaigns' senders, the limiter."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.reader = store.reading_engine(engine)
        self.settings = settings
        self.proxies = parse_networks(settings.web_trusted_proxies)
        self.limiter = RateLimiter(per_minute=settings.web_rate_limit)
        self.writer = OptOutWriter(engine)
        self._senders: dict[str, Sender] = {}

    def sender(self, slug: str) -> Sender:
        """Who writes, from the campaign folder (read once); the organisation when it cannot be read."""
        if slug not in self._senders:
            try:
                config: CampaignConfig = load_campaign(self.settings.templates, slug)
                self._senders[slug] = Sender(config.from_name, config.reply_to)
            except OutreachError as exc:  # remembered too: one warning, not one per request
                log.warning("campaign %s: folder not readable for the web pages: %s", slug, exc.message)
                self._senders[slug] = Sender(ORGANISATION, None)
        return self._senders[slug]

    def limit(self, request: Request) -> None:
        self.limiter.check(client_address(request, self.proxies))

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await run_in_threadpool(partial(fn, *args, **kwargs))


def _site(request: Request) -> PublicSite:
    site: PublicSite = request.app.state.site
    return site


def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


async def _letter(request: Request) -> store.Letter:
    site = _site(request)
    site.limit(request)
    letter = await site.run(store.load_letter, site.reader, request.path_params["token"])
    if letter is None:
        raise HTTPException(404)  # the same page as any unknown path: a token cannot be probed
    return letter


async def _form(request: Request) -> FormData:
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded":
        # What mail clients send: parsed directly, a tenth of the time python-multipart takes.
        try:
            fields = parse_qsl((await request.body()).decode("latin-1"), max_num_fields=MAX_FIELDS)
        except ValueError:  # more fields than any of our forms has
            raise HTTPException(400) from None
        return FormData([(name, value) for name, value in fields])
    try:
        return await request.form(max_files=0, max_fields=MAX_FIELDS)
    except HTTPException:
        raise
    except Exception:  # a malformed multipart body: python-multipart's errors have no common base
        raise HTTPException(400) from None


def _context(site: PublicSite, letter: store.Letter, token: str) -> dict[str, Any]:
    sender = site.sender(letter.campaign_slug)
    return {
        "token": token,
        "sender": sender,
        "site_name": sender.name,
        "campaign_name": letter.campaign_name,
        "address": store.mask_email(letter.email_key) if letter.email_key else None,
        "suppression": letter.suppression,
        "campaign_opt_out": letter.campaign_opt_out,
        "opted_in_at": letter.opted_in_at,
    }


async def unsubscribe_page(request: Request) -> Response:
    letter = await _letter(request)
    site = _site(request)
    context = _context(site, letter, request.path_params["token"])
    return _pages(request).render(request, "afmelden.html", context, headers=PRIVATE)


async def unsubscribe(request: Request) -> Response:
    site = _site(request)
    site.limit(request)
    token = request.path_params["token"]
    if not is_token(token.lower()):
        raise HTTPException(404)
    form = await _form(request)
    one_click = form.get("List-Unsubscribe") == "One-Click"  # RFC 8058: a mail client's one-click POST
    choice = "alles" if one_click else form.get("keuze")
    if choice not in ("alles", "campagne"):
        raise HTTPException(400)
    scope: store.Scope = "all" if choice == "alles" else "campaign"
    outcome = await site.writer.record(token, scope, one_click=one_click)
    if outcome is None:
        raise HTTPException(404)
    letter, _ = outcome
    context = _context(site, letter, token) | {"scope": scope}
    return _pages(request).render(request, "afgemeld.html", context, headers=PRIVATE)


async def optin_page(request: Request) -> Response:
    letter = await _letter(request)
    if letter.email_key is None:
        raise HTTPException(404)
    context = _context(_site(request), letter, request.path_params["token"]) | {
        "version": texts.CURRENT,
        "paragraphs": texts.OPTIN_TEXTS[texts.CURRENT],
    }
    return _pages(request).render(request, "aanmelden.html", context, headers=PRIVATE)


async def optin(request: Request) -> Response:
    letter = await _letter(request)
    site = _site(request)
    form = await _form(request)
    version = form.get("tekst")
    if not isinstance(version, str) or version not in texts.OPTIN_TEXTS:
        raise HTTPException(400)
    token = request.path_params["token"]
    result = await site.run(
        store.record_opt_in,
        site.engine,
        token,
        text_version=version,
        topics=f"{texts.TOPICS} (tekst {version})",
        lift_opt_out=form.get("opheffen") == "ja",
    )
    if result is None:
        raise HTTPException(404)
    context = _context(site, letter, token) | {"result": result}
    return _pages(request).render(request, "aangemeld.html", context, headers=PRIVATE)


async def healthz(request: Request) -> Response:
    """For the proxy and the service manager: the database answers."""
    site = _site(request)
    try:
        await site.run(_ping, site.reader)
    except Exception as exc:
        log.error("health check: the database does not answer: %s", type(exc).__name__)
        return PlainTextResponse(
            "database unavailable\n", status_code=503, headers={"cache-control": "no-store"}
        )
    return PlainTextResponse("ok\n", headers={"cache-control": "no-store"})


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def robots(request: Request) -> Response:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")


def _by_method(show: Endpoint, record: Endpoint) -> Endpoint:
    """One route per path (so a 405 names every allowed method): GET/HEAD show, POST records."""

    async def endpoint(request: Request) -> Response:
        return await (record if request.method == "POST" else show)(request)

    endpoint.__name__ = show.__name__
    return endpoint


def build_public_app(engine: Engine, settings: Settings) -> Starlette:
    """The application `outreach serve` runs."""
    routes = [
        Route("/afmelden/{token}", _by_method(unsubscribe_page, unsubscribe), methods=["GET", "POST"]),
        Route("/aanmelden/{token}", _by_method(optin_page, optin), methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/robots.txt", robots, methods=["GET"]),
    ]
    site = PublicSite(engine, settings)
    pages = Pages([TEMPLATES], globals={"site_name": ORGANISATION})
    security = SecurityHeaders.for_base_url(settings.web_base_url)
    one_click = Middleware(
        OneClickMiddleware,
        limiter=site.limiter,
        proxies=site.proxies,
        writer=site.writer,
        page=UnsubscribedPage(pages, partial(_context, site)),
        security=security,
        headers=PRIVATE,
        max_body_bytes=DEFAULT_MAX_BODY,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        for name in PAGES:  # compiled before the first visitor, not during the first burst
            pages.env.get_template(name)
        site.writer.start()
        try:
            yield
        finally:
            site.writer.stop()

    return create_app(
        routes,
        lifespan=lifespan,
        pages=pages,
        security=security,
        state={"site": site},
        first=[one_click],
    )
