"""What an SMTP outcome means for a delivery: sent, retry later, give up, or we cannot know."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from outreach.sending.smtp import ConnectFailedError, ConnectionLostError, SmtpReplyError


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

    @property
    def retry(self) -> bool:
        return self.verdict is Verdict.TRANSIENT


# 5xx replies that speak about the session or our account, not about the letter or the addressee:
# marking thousands of deliveries failed for them would be wrong; the run stops instead.
_SESSION_CODES = frozenset({530, 534, 535, 538})


def classify_smtp_error(exc: BaseException) -> Classification:
    """Map an exception from ``SmtpConnection.open``/``send`` to what happens to the delivery."""
    if isinstance(exc, SmtpReplyError):
        text = exc.text.replace("\n", " ")[:500]
        if 400 <= exc.code < 500:
            return Classification(Verdict.TRANSIENT, exc.code, text)
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
        return Classification(Verdict.TRANSIENT, None, exc.text)
    if isinstance(exc, ConnectFailedError):
        return Classification(Verdict.TRANSIENT, exc.code, exc.text)
    raise TypeError(f"not an SMTP outcome: {exc!r}")
