"""What an SMTP outcome means for a delivery: sent, retry later, give up, or we cannot know."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from outreach.sending.destination import Signal
from outreach.sending.errors import ConnectFailedError, ConnectionLostError, SmtpReplyError


class Verdict(StrEnum):
    TRANSIENT = "transient"  # 4xx, disconnect or timeout before the body: retry (deferred)
    PERMANENT = "permanent"  # 5xx for this letter: failed
    UNKNOWN = "unknown"  # the body was handed over, no final reply: the server may have it
    STOP = "stop"  # the problem is ours or the server's as a whole: stop the run, mark nothing


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    code: int | None
    text: str
    # A transient failure that says something about a destination rather than this letter: the try does
    # not count against the letter, and the destination slows down. ``relay``: the SMTP server we connect
    # to (refused, silent, 421, lost before the body); else the letter's recipient domain and MX group.
    signal: Signal | None = None
    relay: bool = False

    @property
    def retry(self) -> bool:
        return self.verdict is Verdict.TRANSIENT


# 5xx replies that speak about the session or our account, not about the letter or the addressee:
# marking thousands of deliveries failed for them would be wrong; the run stops instead.
_SESSION_CODES = frozenset({530, 534, 535, 538})

_ENHANCED = re.compile(r"^\s*4\.(\d{1,3})\.(\d{1,3})\b")


def _throttling(text: str) -> bool:
    """A 4xx whose enhanced status code says "too much, too fast" (RFC 3463): 4.7.x policy replies such
    as Exchange Online's 4.7.650 rate limit (but not 4.7.1, greylisting, which is about this letter) and
    4.3.2, "system not accepting network messages"."""
    found = _ENHANCED.match(text)
    if found is None:
        return False
    subject, detail = found.groups()
    return (subject == "7" and detail != "1") or (subject, detail) == ("3", "2")


def classify_smtp_error(exc: BaseException) -> Classification:
    """Map an exception from ``SmtpConnection.open``/``send`` to what happens to the delivery."""
    if isinstance(exc, SmtpReplyError):
        text = exc.text.replace("\n", " ")[:500]
        if exc.code == 421:  # the server closes the channel (RFC 5321 3.8): it is busy
            return Classification(Verdict.TRANSIENT, exc.code, text, Signal.THROTTLE, relay=True)
        if 400 <= exc.code < 500:
            signal = Signal.THROTTLE if _throttling(exc.text) else None
            return Classification(Verdict.TRANSIENT, exc.code, text, signal)
        if exc.code in _SESSION_CODES or (exc.phase == "mail" and exc.code != 552):
            # A refused MAIL FROM (except 552, this letter is too large) means the server will not take
            # our sender at all.
            return Classification(Verdict.STOP, exc.code, text)
        return Classification(Verdict.PERMANENT, exc.code, text)
    if isinstance(exc, ConnectionLostError):
        if exc.body_sent:
            what = "timed out" if exc.timeout else "was lost"
            return Classification(
                Verdict.UNKNOWN, None, f"the connection {what} after the letter was handed over: {exc.text}"
            )
        return Classification(Verdict.TRANSIENT, None, exc.text, Signal.FAILURE, relay=True)
    if isinstance(exc, ConnectFailedError):
        return Classification(Verdict.TRANSIENT, exc.code, exc.text, Signal.FAILURE, relay=True)
    raise TypeError(f"not an SMTP outcome: {exc!r}")
