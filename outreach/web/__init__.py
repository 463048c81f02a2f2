"""The web foundation shared by the public pages (`outreach serve`) and the reviewer UI (`outreach review`).

What lives where:

- ``app.py``: ``create_app(routes, pages=..., security=..., ...)``, a Starlette application with every
  piece below wired in: security headers, request-size limit, access log, error pages, ``/static``.
- ``pages.py``: ``Pages``, the Jinja2 environment (``templates/`` here, plus an app's own folders first)
  and ``Pages.render(request, name, context)``; ``templates/base.html`` is the layout every page extends.
- ``security.py``: ``SecurityHeaders`` (CSP, frame-ancestors, Referrer-Policy, nosniff, HSTS) and its
  middleware; a response that sets its own CSP keeps it (the review app's sandboxed letter frame).
- ``limits.py``: the request-size limit (413 page), ``RateLimiter`` per client and ``client_address``
  (X-Forwarded-For only from a trusted proxy).
- ``accesslog.py``: one line per request with the route template (``/afmelden/{token}``), never the path.
- ``errors.py``: 400/404/405/413/429/500 as pages, never tracebacks.
- ``server.py``: ``run_app(app, host, port)`` under uvicorn.
- ``static/site.css``: the one style sheet; pages carry no inline styles or scripts, so ``default-src
  'self'`` holds.
- ``public/``: the recipients' pages (``/afmelden``, ``/aanmelden``, ``/healthz``); ``review/``: the
  reviewer UI.
"""
