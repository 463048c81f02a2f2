"""The review's pages. Each handler reads the cached check (``ReviewCache.get``, which checks again only
after a change) in a worker thread, builds the page's data with ``outreach.review`` and renders it."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from outreach.errors import OutreachError
from outreach.letters.approval import ApprovalRecord
from outreach.review import decide
from outreach.review.checked import CheckedCampaign, ReviewCache
from outreach.review.letter import attachments_of, compose_letter, letter_view
from outreach.review.overview import build_overview
from outreach.review.recipients import (
    PROBLEM_FILTERS,
    RecipientFilter,
    filter_options,
    neighbours,
    recipient_page,
)
from outreach.web.errors import error_response
from outreach.web.limits import RateLimiter
from outreach.web.pages import Pages
from outreach.web.review.access import Access, Session, csrf_ok

# The letter's own frame: nothing loads but inline styles and data: images, no script runs (CSP
# sandbox as well as the iframe's sandbox attribute), and only the review itself may frame it.
LETTER_CSP = (
    "default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'; font-src data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)
FORM_FIELDS = ("decision", "name", "comment", "reason", "fingerprint")
_SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")  # what may stand in a quoted filename unencoded


@dataclass
class Review:
    """What every handler needs: the campaign, its cached check, the sessions, the page renderer."""

    engine: Engine
    cache: ReviewCache
    slug: str
    access: Access
    pages: Pages
    # Listening on loopback, only loopback Host headers are accepted, so that a web page elsewhere
    # cannot reach the review through DNS rebinding (its own name made to resolve to 127.0.0.1).
    loopback_only: bool
    login_limit: RateLimiter


Handler = Callable[[Request, "Review", Session], Awaitable[Response]]


def _review(request: Request) -> Review:
    review: Review = request.app.state.review
    return review


def _host_ok(review: Review, request: Request) -> bool:
    if not review.loopback_only:
        return True
    host = request.headers.get("host", "").lower()
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def render(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    review = _review(request)
    return review.pages.render(
        request,
        name,
        {"slug": review.slug, "needs_login": review.access.needs_login, **context},
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET page: host checked, logged in when a password is set, a session (and its cookie) ensured."""

    async def endpoint(request: Request) -> Response:
        review = _review(request)
        if not _host_ok(review, request):
            return error_response(request, 400)
        session = review.access.session(request)
        if review.access.needs_login and not review.access.allowed(session):
            return RedirectResponse("/login", status_code=303)
        started = None
        if session is None:
            session = started = review.access.start()
        response = await handler(request, review, session)
        if started is not None:
            review.access.set_cookie(response, started)
        return response

    return endpoint


FormHandler = Callable[[Request, "Review", Session, FormData], Awaitable[Response]]


def action(handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
    """A POST: host checked, a live (logged-in) session, and the form's CSRF token, or 403."""

    async def endpoint(request: Request) -> Response:
        review = _review(request)
        if not _host_ok(review, request):
            return error_response(request, 400)
        session = review.access.session(request)
        form = await request.form()
        if not review.access.allowed(session) or not csrf_ok(session, form.get("csrf")):
            return error_response(request, 403)
        assert session is not None
        return await handler(request, review, session, form)

    return endpoint


async def _checked(review: Review) -> CheckedCampaign:
    return await run_in_threadpool(review.cache.get, review.slug)


def campaign_problem(request: Request, exc: OutreachError) -> HTMLResponse:
    """The campaign does not load (a template with a syntax error, a bad campaign.toml): say so."""
    return render(request, "problem.html", {"message": exc.message, "hint": exc.hint}, status_code=409)


async def overview(request: Request, review: Review, session: Session) -> Response:
    try:
        checked = await _checked(review)
    except OutreachError as exc:
        return campaign_problem(request, exc)
    data = await run_in_threadpool(build_overview, review.engine, checked)
    return render(request, "overview.html", {"o": data, "c": checked, "csrf": session.csrf})


def _filters(request: Request) -> RecipientFilter:
    q = request.query_params
    problem = q.get("problem", "")
    return RecipientFilter(
        municipality=q.get("municipality", "").strip(),
        role=q.get("role", "").strip(),
        party=q.get("party", "").strip(),
        province=q.get("province", "").strip(),
        problem=problem if problem in PROBLEM_FILTERS else "",
        search=q.get("q", "").strip()[:200],
    )


def _query(filters: RecipientFilter, **extra: object) -> str:
    fields = filters.as_query()
    if "search" in fields:
        fields["q"] = fields.pop("search")
    fields.update({k: str(v) for k, v in extra.items() if v})
    return urlencode(fields)


async def recipients(request: Request, review: Review, session: Session) -> Response:
    try:
        checked = await _checked(review)
    except OutreachError as exc:
        return campaign_problem(request, exc)
    filters = _filters(request)
    number = request.query_params.get("page", "1")
    result = recipient_page(checked, filters, int(number) if number.isdigit() else 1)
    return render(
        request,
        "recipients.html",
        {
            "c": checked,
            "filters": filters,
            "result": result,
            "options": filter_options(checked),
            "query": _query(filters),
            "previous_page": _query(filters, page=result.page - 1) if result.page > 1 else None,
            "next_page": _query(filters, page=result.page + 1) if result.page < result.pages else None,
        },
    )


async def _recipient(review: Review, request: Request) -> tuple[CheckedCampaign, Any]:
    checked = await _checked(review)
    recipient = checked.recipient(int(request.path_params["contact_id"]))
    if recipient is None:
        raise HTTPException(404)
    return checked, recipient


async def letter(request: Request, review: Review, session: Session) -> Response:
    try:
        checked, recipient = await _recipient(review, request)
    except OutreachError as exc:
        return campaign_problem(request, exc)
    filters = _filters(request)
    view = await run_in_threadpool(letter_view, checked, recipient)
    previous, following, position, total = neighbours(checked, filters, recipient.contact_id)
    query = _query(filters)
    return render(
        request,
        "letter.html",
        {
            "c": checked,
            "view": view,
            "query": query,
            "previous": previous,
            "next": following,
            "position": position,
            "total": total,
        },
    )


async def letter_frame(request: Request, review: Review, session: Session) -> Response:
    """The letter's HTML part as sent, for the sandboxed iframe, under its own strict CSP."""
    try:
        checked, recipient = await _recipient(review, request)
        composed = await run_in_threadpool(compose_letter, checked, recipient)
    except OutreachError:
        raise HTTPException(404) from None
    if composed.html is None:
        raise HTTPException(404)
    return HTMLResponse(
        composed.html,
        headers={"content-security-policy": LETTER_CSP, "cache-control": "no-store"},
    )


async def attachment(request: Request, review: Review, session: Session) -> Response:
    try:
        checked, recipient = await _recipient(review, request)
        composed = await run_in_threadpool(compose_letter, checked, recipient)
    except OutreachError:
        raise HTTPException(404) from None
    found = attachments_of(composed.message)
    index = int(request.path_params["index"])
    if index >= len(found):
        raise HTTPException(404)
    meta, part = found[index]
    payload = part.get_payload(decode=True)
    disposition = "attachment" if request.query_params.get("download") else "inline"
    return Response(
        payload if isinstance(payload, bytes) else b"",
        media_type=meta.content_type,
        headers={
            "content-disposition": content_disposition(disposition, meta.filename),
            "cache-control": "no-store",
        },
    )


def content_disposition(kind: str, filename: str) -> str:
    """``attachment; filename="ascii"`` plus RFC 6266's ``filename*`` when the name is not plain ASCII
    ('Brief aan Anna – HVK-2026-0003-0412.pdf')."""
    fallback = _SAFE_FILENAME.sub("_", filename).strip("_.") or "attachment"
    value = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


async def message_file(request: Request, review: Review, session: Session) -> Response:
    """The whole message as an .eml file, to open in a mail program."""
    try:
        checked, recipient = await _recipient(review, request)
        composed = await run_in_threadpool(compose_letter, checked, recipient)
    except OutreachError:
        raise HTTPException(404) from None
    return Response(
        composed.as_bytes(),
        media_type="message/rfc822",
        headers={
            "content-disposition": content_disposition("attachment", f"{review.slug}-{recipient.email}.eml"),
            "cache-control": "no-store",
        },
    )


async def _decide_page(
    request: Request,
    review: Review,
    session: Session,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    try:
        checked = await _checked(review)
    except OutreachError as exc:
        return campaign_problem(request, exc)
    data = await run_in_threadpool(build_overview, review.engine, checked)
    recorded: ApprovalRecord | None = None
    number = request.query_params.get("recorded", "")
    if number.isdigit():
        recorded = next((d for d in data.status.history if d.id == int(number)), None)
    return render(
        request,
        "decide.html",
        {
            "o": data,
            "c": checked,
            "csrf": session.csrf,
            "error": error,
            "form": dict.fromkeys(FORM_FIELDS, "") | (form or {}),
            "recorded": recorded,
        },
        status_code=status_code,
    )


async def decide_form(request: Request, review: Review, session: Session) -> Response:
    return await _decide_page(request, review, session)


async def decide_post(request: Request, review: Review, session: Session, form: FormData) -> Response:
    values = {key: str(form.get(key, "")) for key in FORM_FIELDS}
    try:
        if values["decision"] == "approve":
            record = await run_in_threadpool(
                lambda: decide.approve(
                    review.cache,
                    review.slug,
                    by=values["name"],
                    seen=values["fingerprint"],
                    comment=values["comment"],
                )
            )
        elif values["decision"] == "reject":
            record = await run_in_threadpool(
                lambda: decide.reject(review.cache, review.slug, by=values["name"], reason=values["reason"])
            )
        else:
            return error_response(request, 400)
    except OutreachError as exc:
        return await _decide_page(request, review, session, error=exc.message, form=values, status_code=409)
    return RedirectResponse(f"/decide?recorded={record.id}", status_code=303)


# ------------------------------------------------------------------------------------------- login


async def login_form(request: Request) -> Response:
    review = _review(request)
    if not _host_ok(review, request):
        return error_response(request, 400)
    if not review.access.needs_login:
        return RedirectResponse("/", status_code=303)
    # A session before the login carries only the login form's CSRF token; logging in replaces it.
    session = review.access.session(request)
    started = None
    if session is None:
        session = started = review.access.start()
    response = render(request, "login.html", {"csrf": session.csrf, "error": None})
    if started is not None:
        review.access.set_cookie(response, started)
    return response


async def login_post(request: Request) -> Response:
    review = _review(request)
    if not _host_ok(review, request):
        return error_response(request, 400)
    review.login_limit.check(request.client.host if request.client else "unknown")
    session = review.access.session(request)
    form = await request.form()
    if not csrf_ok(session, form.get("csrf")):
        return error_response(request, 403)
    assert session is not None
    if not review.access.password_matches(str(form.get("password", ""))):
        return render(
            request,
            "login.html",
            {"csrf": session.csrf, "error": "That is not the password."},
            status_code=401,
        )
    review.access.end(session)
    fresh = review.access.start(authenticated=True)
    response = RedirectResponse("/", status_code=303)
    review.access.set_cookie(response, fresh)
    return response


async def logout(request: Request, review: Review, session: Session, form: FormData) -> Response:
    review.access.end(session)
    response = RedirectResponse("/login" if review.access.needs_login else "/", status_code=303)
    review.access.clear_cookie(response)
    return response
