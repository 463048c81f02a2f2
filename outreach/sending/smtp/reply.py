"""An SMTP reply and the status codes the sender acts on, by name (RFC 5321 4.2.3)."""

from __future__ import annotations

from typing import NamedTuple


class SmtpReply(NamedTuple):
    code: int
    text: str  # multi-line replies joined with "\n", the code and separators removed


SERVICE_READY = 220
OK = 250  # requested action completed (MAIL, RCPT, the end of data)
WILL_FORWARD = 251  # RCPT: user not local, will forward
START_MAIL_INPUT = 354  # DATA: go ahead, end with <CRLF>.<CRLF>
BAD_SEQUENCE = 503  # bad sequence of commands: the server is in another state than we are
CLOSING = 421  # service not available, closing the transmission channel (RFC 5321 3.8)
TLS_NOT_AVAILABLE = 454  # temporary TLS or authentication failure: a configuration matter for us

#: RCPT replies that accept the recipient.
RECIPIENT_OK = frozenset({OK, WILL_FORWARD})
