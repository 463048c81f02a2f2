"""``create_app``: a Starlette application with the shared foundation wired in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from outreach.web.accesslog import ACCESS_LOG, AccessLogMiddleware
from outreach.web.errors import http_error, server_error
from outreach.web.limits import DEFAULT_MAX_BODY, BodyLimitMiddleware
from outreach.web.pages import STATIC_DIR, Pages
from outreach.web.security import SecurityHeaders, SecurityHeadersMiddleware


def create_app(
    routes: Sequence[BaseRoute],
    *,
    pages: Pages | None = None,
    security: SecurityHeaders | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    access_logger: str = ACCESS_LOG,
    lifespan: Any = None,
    state: dict[str, Any] | None = None,
    first: Sequence[Middleware] = (),
) -> Starlette:
    """An app serving ``routes`` plus ``/static`` (the shared CSS), with security headers, a request-size
    limit, an access log without paths, and error pages. ``app.state.pages`` / ``.security`` hold the
    renderer and header policy; ``state`` adds more (a database engine, settings). ``first``: middleware
    outside the shared ones, such as a fast path that does their work itself for one kind of request."""
    pages = pages or Pages()
    security = security or SecurityHeaders()
    app = Starlette(
        routes=[*routes, Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static")],
        middleware=[
            *first,
            Middleware(AccessLogMiddleware, logger=access_logger),
            Middleware(SecurityHeadersMiddleware, headers=security),
            Middleware(BodyLimitMiddleware, max_bytes=max_body_bytes),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # /x/ is not /x: an unknown path is a 404, never a redirect
    app.state.pages = pages
    app.state.security = security
    for name, value in (state or {}).items():
        setattr(app.state, name, value)
    return app
