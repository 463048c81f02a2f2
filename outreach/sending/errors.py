"""The sending core's own exceptions, in one place.

SMTP errors of one try (``SmtpReplyError`` with the phase, code and text; ``ConnectionLostError``;
``ConnectFailedError``) are raised by ``outreach.sending.smtp`` and classified by
``outreach.sending.classify``; none of them reaches the user. What stops a run reaches the user as an
``OutreachError`` from outreach/errors.py (``SmtpError``, ``DatabaseError``).
"""

from __future__ import annotations

from outreach.errors import OutreachError
from outreach.sending.smtp import ConnectFailedError, ConnectionLostError, SmtpReplyError
from outreach.sending.writer import WriterFailedError

__all__ = ["ConnectFailedError", "ConnectionLostError", "SmtpReplyError", "StopRun", "WriterFailedError"]


class StopRun(Exception):
    """Stop the whole run (auth, TLS, sender refused, the server down); carries what the user sees."""

    def __init__(self, error: OutreachError) -> None:
        super().__init__(error.message)
        self.error = error
