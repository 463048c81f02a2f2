"""Bounces: the failed recipients of a delivery status notification (RFC 3464), or of a bounce that
does not follow it (qmail, Exim, old Exchange, appliances), read with flufl.bounce."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from flufl.bounce import all_failures

from outreach.letters.ids import token_from_verp, tokens_in_references
from outreach.registry.keys import email_key
from outreach.tracking.body_text import plain_text
from outreach.tracking.headers import address_keys, clip, header_value

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"\b([45]\d\d)\b")

# Mailer-daemon senders and NDR subjects of bounces that do not follow RFC 3464.
_BOUNCE_SENDER_RE = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon|bounce[s]?)(@|$)", re.I)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery (has )?failed|failure notice|"
    r"returned mail|mail delivery failed|non[- ]?delivery|onbestelbaar|niet (af)?geleverd|"
    r"kan niet worden bezorgd|bezorging (is )?mislukt",
    re.I,
)


@dataclass(frozen=True)
class Bounce:
    """One failed recipient of a bounce."""

    recipient: str | None
    status: str | None  # enhanced status code "5.1.1", or the SMTP code "550" when that is all we have
    hard: bool  # permanent: the delivery failed
    diagnostic: str | None = None

    @property
    def suppresses(self) -> bool:
        """Whether the address itself is bad. A 5.7.x refusal (policy, spam filter, DMARC) is permanent
        for this message but says nothing about the mailbox, so it fails the delivery without
        suppressing the person (RFC 3463 section 3.8)."""
        return self.hard and not (self.status or "").startswith("5.7.")


# --- bounces ---------------------------------------------------------------------------------------


def delivery_status_report(msg: Message) -> tuple[list[Bounce], list[str]] | None:
    """RFC 3464: the per-recipient fields of every message/delivery-status part, and our tokens in the
    returned original (message/rfc822 or text/rfc822-headers). None when the message is no DSN."""
    status_parts = [part for part in msg.walk() if part.get_content_type() == "message/delivery-status"]
    if not status_parts:
        return None
    bounces: list[Bounce] = []
    for part in status_parts:
        for block in _status_blocks(part):
            action = header_value(block, "Action").lower()
            recipient_field = header_value(block, "Final-Recipient") or header_value(
                block, "Original-Recipient"
            )
            if not recipient_field and not action:
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            status = _status_code(header_value(block, "Status"))
            diagnostic = header_value(block, "Diagnostic-Code") or None
            if status is None and diagnostic:
                status = _status_code(diagnostic)
            if action in ("delivered", "relayed", "expanded"):
                continue  # a success notice, not a bounce
            if status is None and action == "failed":
                status = "5.0.0"
            elif status is None and action == "delayed":
                status = "4.0.0"
            hard = is_permanent(status) and action != "delayed"
            bounces.append(
                Bounce(
                    recipient=_recipient_address(recipient_field),
                    status=status,
                    hard=hard,
                    diagnostic=clip(diagnostic, 200) if diagnostic else None,
                )
            )
    return bounces, embedded_message_tokens(msg)


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # Some MTAs base64-encode the status part; the parser then leaves it as text.
    text = part.get_payload(decode=True)
    if not isinstance(text, bytes):
        return []
    blocks = re.split(rb"\r?\n\s*\r?\n", text)
    return [email.message_from_bytes(block + b"\n\n", policy=email.policy.compat32) for block in blocks]


def is_permanent(status: str | None) -> bool:
    """5.x.x, except X.2.2 "mailbox full": RFC 3463 calls it persistent transient, and many servers send
    it as 552 5.2.2 although the mailbox will take mail again once it is emptied."""
    if status is None or not status.startswith("5"):
        return False
    return not re.fullmatch(r"5\.2\.2|552", status)


def _status_code(value: str) -> str | None:
    match = _STATUS_RE.search(value)
    if match:
        return ".".join(match.groups())
    code = _SMTP_CODE_RE.search(value)
    return code.group(1) if code else None


def _recipient_address(value: str) -> str | None:
    # "rfc822; j.jansen@example.nl" (RFC 3464 section 2.3.2)
    address = value.split(";", 1)[-1].strip().strip("<>")
    return email_key(address) if "@" in address else None


def embedded_message_tokens(msg: Message) -> list[str]:
    tokens: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        headers: Message | None = None
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                headers = payload[0]
        elif ctype == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                headers = email.message_from_bytes(text, policy=email.policy.compat32)
        if headers is not None:
            tokens.extend(tokens_in_references(header_value(headers, "Message-ID")))
            tokens.extend(_verp_tokens_from_return_path(headers))
    return tokens


def _verp_tokens_from_return_path(headers: Message) -> list[str]:
    tokens = []
    for address in address_keys(headers, "Return-Path"):
        token = token_from_verp(address)
        if token:
            tokens.append(token)
    return tokens


def looks_like_bounce(msg: Message, sender: str | None, subject: str) -> bool:
    if sender and _BOUNCE_SENDER_RE.match(sender):
        return True
    if header_value(msg, "X-Failed-Recipients"):
        return True
    return bool(_BOUNCE_SUBJECT_RE.search(subject)) and header_value(msg, "Return-Path") in ("<>", "")


def legacy_bounces(msg: Message) -> tuple[Bounce, ...]:
    """Bounces outside RFC 3464, via flufl.bounce's detectors for qmail, Exim, old Exchange, ..."""
    temporary, permanent = all_failures(msg)
    status = _status_code(plain_text(msg)) if (temporary or permanent) else None
    found: list[Bounce] = []
    listed = [(a, True) for a in sorted(permanent)] + [(a, False) for a in sorted(temporary)]
    for raw_address, permanent_failure in listed:
        address = raw_address.decode("ascii", "replace").strip().strip("<>")
        if "@" not in address:
            continue
        fallback = "5.0.0" if permanent_failure else "4.0.0"
        code = status if status and status[0] == fallback[0] else fallback
        found.append(Bounce(recipient=email_key(address), status=code, hard=is_permanent(code)))
    return tuple(found)


def bounce_summary(bounces: Iterable[Bounce]) -> str:
    parts = []
    for bounce in bounces:
        text = f"{bounce.status or '?'} {bounce.recipient or '(unknown recipient)'}"
        if bounce.diagnostic:
            text += f": {bounce.diagnostic}"
        parts.append(text)
    return clip("; ".join(parts))
