"""``create_review_app``: the review of one campaign, on the shared web foundation."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from outreach.review.checked import ReviewCache
from outreach.web.app import create_app
from outreach.web.limits import RateLimiter
from outreach.web.pages import Pages
from outreach.web.review import views
from outreach.web.review.access import Access

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
LOGIN_ATTEMPTS_PER_MINUTE = 10


def _review_static(name: str) -> str:
    path = STATIC / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.is_file() else "0"
    return f"/review-static/{name}?v={digest}"


def create_review_app(
    engine: Engine,
    templates_dir: Path,
    slug: str,
    *,
    password: str | None = None,
    loopback: bool = True,
    cache: ReviewCache | None = None,
    web_base_url: str | None = None,
) -> Starlette:
    """The review of campaign ``slug``. ``loopback``: the server listens on loopback only, so only
    loopback host names are accepted; elsewhere a ``password`` is required (the caller refuses to bind
    without one). ``web_base_url``: where `outreach serve` answers, for the letters' links."""
    pages = Pages([TEMPLATES], globals={"review_static": _review_static, "site_name": "outreach review"})
    review = views.Review(
        engine=engine,
        cache=cache or ReviewCache(engine, templates_dir, web_base_url=web_base_url),
        slug=slug,
        access=Access(password),
        pages=pages,
        loopback_only=loopback,
        login_limit=RateLimiter(LOGIN_ATTEMPTS_PER_MINUTE, burst=5),
    )
    routes = [
        Route("/", views.page(views.overview), methods=["GET", "HEAD"]),
        Route("/recipients", views.page(views.recipients), methods=["GET", "HEAD"]),
        Route("/letters/{contact_id:int}", views.page(views.letter), methods=["GET", "HEAD"]),
        Route("/letters/{contact_id:int}/frame", views.page(views.letter_frame), methods=["GET", "HEAD"]),
        Route(
            "/letters/{contact_id:int}/attachments/{index:int}",
            views.page(views.attachment),
            methods=["GET", "HEAD"],
        ),
        Route(
            "/letters/{contact_id:int}/message.eml", views.page(views.message_file), methods=["GET", "HEAD"]
        ),
        Route("/decide", views.page(views.decide_form), methods=["GET", "HEAD"]),
        Route("/decide", views.action(views.decide_post), methods=["POST"]),
        Route("/login", views.login_form, methods=["GET", "HEAD"]),
        Route("/login", views.login_post, methods=["POST"]),
        Route("/logout", views.action(views.logout), methods=["POST"]),
        Mount("/review-static", app=StaticFiles(directory=STATIC), name="review-static"),
    ]
    return create_app(routes, pages=pages, state={"review": review})
