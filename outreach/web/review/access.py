"""Who may use the review: sessions, CSRF tokens on every POST, and the optional password.

A session is a random id in a cookie (HttpOnly, SameSite=Strict, Path=/) pointing at server-side state
that lives as long as the process: the CSRF token of the forms, and whether the password was given.
Bound to loopback without ``OUTREACH_REVIEW_PASSWORD`` every browser gets a session on its first page;
with a password (required for any other address) every page but the login asks for it first.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "outreach_review"
IDLE_SECONDS = 12 * 3600  # a session unused for a working day ends
MAX_SESSIONS = 1000  # the oldest are dropped first: a flood of first visits cannot exhaust memory


@dataclass
class Session:
    id: str
    csrf: str
    authenticated: bool = False
    seen: float = field(default_factory=time.monotonic)


class Access:
    """The sessions of one review server, and the password if there is one."""

    def __init__(self, password: str | None, *, secure_cookie: bool = False) -> None:
        # Only a digest is kept, so the password itself is not held in the app's state.
        self._password = hashlib.sha256(password.encode("utf-8")).digest() if password else None
        self.secure_cookie = secure_cookie
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    @property
    def needs_login(self) -> bool:
        return self._password is not None

    def password_matches(self, given: str) -> bool:
        if self._password is None:
            return True
        return hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).digest(), self._password)

    def session(self, request: Request) -> Session | None:
        """The request's live session, or None."""
        sid = request.cookies.get(COOKIE, "")
        now = time.monotonic()
        with self._lock:
            found = self._sessions.get(sid)
            if found is None:
                return None
            if now - found.seen > IDLE_SECONDS:
                del self._sessions[sid]
                return None
            found.seen = now
            return found

    def start(self, *, authenticated: bool = False) -> Session:
        """A new session (a login always gets a new id, so an id planted before it is worthless)."""
        session = Session(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), authenticated=authenticated
        )
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > MAX_SESSIONS:
                oldest = min(self._sessions.values(), key=lambda s: s.seen)
                del self._sessions[oldest.id]
        return session

    def end(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def allowed(self, session: Session | None) -> bool:
        """Whether this session may see the review."""
        if session is None:
            return False
        return session.authenticated or not self.needs_login

    def set_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE, session.id, httponly=True, samesite="strict", path="/", secure=self.secure_cookie
        )

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=self.secure_cookie)


def csrf_ok(session: Session | None, given: object) -> bool:
    """The form's token is the session's (compared in constant time)."""
    return (
        session is not None
        and isinstance(given, str)
        and hmac.compare_digest(given.encode("utf-8"), session.csrf.encode("utf-8"))
    )
