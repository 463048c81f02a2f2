"""Jinja2 pages: the shared layout in ``outreach/web/templates/``, an app's own template folders first."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"


@functools.lru_cache(maxsize=64)
def _static_url(name: str) -> str:
    """``/static/<name>?v=<hash>``: a relative URL (right behind any proxy) that changes with the file.
    Computed once per process: a new release restarts the server."""
    path = STATIC_DIR / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.is_file() else "0"
    return f"/static/{name}?v={digest}"


class Pages:
    """Renders pages. ``template_dirs`` are searched before the shared templates, so an app can add pages
    and override ``error.html``; ``globals`` are available in every template (e.g. ``sender_name``)."""

    def __init__(
        self, template_dirs: Sequence[Path] = (), *, globals: Mapping[str, Any] | None = None
    ) -> None:
        loaders = [FileSystemLoader(str(d)) for d in template_dirs] + [FileSystemLoader(str(TEMPLATES_DIR))]
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            # Templates are compiled once: checking every file's mtime on each render was a third of
            # a request's time (bench/web_bench.py). Restart the server after changing a template.
            auto_reload=False,
        )
        self.env.globals["static"] = _static_url
        self.env.globals.update(globals or {})

    def render_text(self, name: str, context: Mapping[str, Any] | None = None) -> str:
        return self.env.get_template(name).render(**(context or {}))

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> HTMLResponse:
        values = {"request": request, **(context or {})}
        body = self.render_text(name, values)
        return HTMLResponse(body, status_code=status_code, headers=dict(headers or {}))
