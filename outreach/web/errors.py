"""Errors as pages: a short Dutch explanation and the status, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from outreach.web.pages import Pages

log = logging.getLogger(__name__)

# status -> (title, explanation) in the voice of the pages.
MESSAGES: dict[int, tuple[str, str]] = {
    400: ("Dit verzoek begrijpen we niet", "Het formulier was onvolledig. Ga terug en probeer het opnieuw."),
    403: ("Geen toegang", "U heeft geen toegang tot deze pagina."),
    404: (
        "Pagina niet gevonden",
        "Deze pagina bestaat niet (meer). Controleer of de link uit de brief volledig is overgenomen.",
    ),
    405: ("Dat kan hier niet", "Deze pagina ondersteunt deze handeling niet."),
    413: ("Verzoek te groot", "Het verzoek bevat meer gegevens dan deze pagina aanneemt."),
    429: ("Even geduld", "Er kwamen te veel verzoeken achter elkaar. Probeer het over een minuut opnieuw."),
    500: ("Er ging iets mis", "Er ging aan onze kant iets mis. Probeer het later opnieuw."),
}


def error_response(request: Request, status: int, headers: dict[str, str] | None = None) -> Response:
    title, text = MESSAGES.get(status, (f"Fout {status}", "Dit verzoek kon niet worden afgehandeld."))
    context = {"status": status, "title": title, "text": text}
    headers = {**(headers or {}), "cache-control": "no-store"}
    pages: Pages | None = getattr(request.app.state, "pages", None)
    if pages is None:  # only when an app was built without create_app
        return HTMLResponse(f"<h1>{status}</h1>", status_code=status, headers=headers)
    response = pages.render(request, "error.html", context, status_code=status, headers=headers)
    if request.method == "HEAD":
        return Response(status_code=status, headers=dict(response.headers))
    return response


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(request, exc.status_code, dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    """The outermost handler: it runs outside the middleware, so it adds the security headers itself."""
    log.error("error while answering %s: %s", request.method, type(exc).__name__, exc_info=exc)
    response = error_response(request, 500)
    security: Any = getattr(request.app.state, "security", None)
    if security is not None:
        security.apply(response.headers)
    return response
