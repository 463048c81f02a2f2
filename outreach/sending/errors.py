"""The sending core's own exceptions, in one place.

The errors of one try (``SmtpReplyError`` with the phase, code and text; ``ConnectionLostError``;
``ConnectFailedError``) are raised by ``outreach.sending.smtp`` and classified by
``outreach.sending.classify``; none of them reaches the user. What stops a run reaches the user as an
``OutreachError`` from outreach/errors.py (``SmtpError``, ``DatabaseError``), carried by ``StopRun``.
"""

from __future__ import annotations

from outreach.errors import OutreachError


class SmtpReplyError(Exception):
    """The server answered a command with a 4xx/5xx reply."""

    def __init__(self, code: int, text: str, phase: str, recipient: str | None = None) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.phase = phase  # "connect", "mail", "rcpt", "data", "body"
        self.recipient = recipient


class ConnectionLostError(Exception):
    """The connection closed or timed out. ``body_sent`` tells whether the server may have the letter."""

    def __init__(self, text: str, *, body_sent: bool, timeout: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.body_sent = body_sent
        self.timeout = timeout


class ConnectFailedError(Exception):
    """A connection could not be opened for a reason that may pass (refused, timeout, 4xx greeting)."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


class WriterFailedError(Exception):
    """The database refused a state update; the run must stop (rows stay ``sending`` → ``unknown``)."""


class StopRun(Exception):
    """Stop the whole run (auth, TLS, sender refused, the server down); carries what the user sees."""

    def __init__(self, error: OutreachError) -> None:
        super().__init__(error.message)
        self.error = error
