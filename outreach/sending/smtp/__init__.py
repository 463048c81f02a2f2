"""SMTP for the sender: the connection (``connection``), its reply reader (``protocol``), replies and
status codes by name (``reply``). Errors of one try are in ``outreach.sending.errors``."""

from outreach.sending.errors import ConnectFailedError, ConnectionLostError, SmtpReplyError
from outreach.sending.smtp.connection import Letter, SendResult, SmtpConnection, tls_context
from outreach.sending.smtp.reply import SmtpReply

__all__ = [
    "ConnectFailedError",
    "ConnectionLostError",
    "Letter",
    "SendResult",
    "SmtpConnection",
    "SmtpReply",
    "SmtpReplyError",
    "tls_context",
]
