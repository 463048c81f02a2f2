"""What an inbound message is: a bounce, an automatic reply, an unsubscribe, a reply, or something else.

Pure functions over the raw bytes; nothing here touches the database. The classification proposes the
tokens (see ``outreach.letters.ids``) that may tie the message to a delivery; the caller checks them
against the stored deliveries, so a string that merely looks like a token never matches by accident.

Order matters and follows how mail systems behave:

1. Delivery status notifications (RFC 3464 ``multipart/report; report-type=delivery-status``). Postfix
   marks its bounces ``Auto-Submitted: auto-replied`` too, so they must be recognised before the
   RFC 3834 test. Bounces that are not RFC 3464 (qmail, old Exchange, appliances) are recognised by
   their sender or subject and parsed with flufl.bounce.
2. Automatic replies (RFC 3834 ``Auto-Submitted``, the older ``X-Autoreply``/``X-Autorespond``,
   ``Precedence: auto_reply/bulk/junk``, and the subjects that Outlook, Exchange and Gmail give
   out-of-office replies in Dutch and English).
3. Unsubscribe requests: mail to the campaign's List-Unsubscribe mailto address, or "afmelden",
   "uitschrijven", "unsubscribe" in the subject.
4. Replies: our Message-ID in ``In-Reply-To``/``References``.
5. Anything else is unmatched and listed for staff.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage, Message

from outreach.models import EventKind
from outreach.registry.keys import email_key
from outreach.tracking.body_text import kenmerken_in, reply_summary, reply_text
from outreach.tracking.bounces import (
    Bounce,
    bounce_summary,
    delivery_status_report,
    embedded_message_tokens,
    legacy_bounces,
    looks_like_bounce,
)
from outreach.tracking.headers import (
    address_keys,
    clip,
    date_utc,
    header_value,
    message_id_of,
    sender_key,
    subject_tokens,
    thread_tokens,
    unique,
    verp_tokens,
)

# RFC 3834 section 5: "Precedence: auto_reply" is what older vacation programs set. "bulk" and "list"
# mark newsletters, which are not answers to a letter either, but they are no automatic reply: they stay
# unmatched so that staff see them.
_AUTO_PRECEDENCE = {"auto_reply"}
# Subjects of out-of-office replies: Outlook/Exchange NL ("Automatisch antwoord: ..."), Gmail and webmail
# vacation responders ("Afwezigheidsbericht"), Exchange EN ("Automatic reply:"), and the home-made ones
# municipalities configure ("Afwezig", "Niet aanwezig").
_AUTO_SUBJECT_RE = re.compile(
    r"^\s*(automatisch antwoord|automatische reactie|automatisch bericht|afwezigheidsbericht|"
    r"afwezigheidsmelding|afwezig\b|niet aanwezig|out of (the )?office|automatic reply|auto[- ]?reply|"
    r"autoreply|abwesenheitsnotiz|vacation reply|vakantiemelding)",
    re.I,
)
_REPLY_PREFIX_RE = re.compile(r"^\s*((re|antw|aw|fw|fwd|doorst|tr)\s*:\s*)+", re.I)
_UNSUBSCRIBE_RE = re.compile(r"\b(afmelden|afmelding|uitschrijven|unsubscribe)\b", re.I)
_NEGATION_RE = re.compile(
    r"\b(niet|geen|not|don't)\s+(\w+\s+){0,2}(afmelden|afmelding|uitschrijven|unsubscribe)", re.I
)
_CLOSING_RE = re.compile(
    r"^\s*(met vriendelijke groet|vriendelijke groet|hartelijke groet|groet(en)?\b|mvg\b|m\.v\.g\.|"
    r"kind regards|best regards|regards\b|--\s*$)",
    re.I,
)
UNSUBSCRIBE_REPLY_CHARS = 200


@dataclass(frozen=True)
class InboundMessage:
    """A classified inbound message. ``kind`` is a proposal: the caller confirms the tokens."""

    kind: EventKind
    reason: str  # why: "RFC 3464 report", "Auto-Submitted: auto-replied", "subject 'afmelden'", ...
    message_id: str | None
    sender: str | None  # the From address, case-folded
    subject: str
    date: datetime | None  # naive UTC
    tokens: tuple[str, ...] = ()  # candidate delivery tokens, most specific first
    bounces: tuple[Bounce, ...] = ()
    summary: str = ""
    kenmerken: tuple[str, ...] = ()  # kenmerken of our letters quoted in the subject or text

    @property
    def hard_bounce(self) -> bool:
        return any(b.hard for b in self.bounces)

    @property
    def suppresses(self) -> bool:
        return any(b.suppresses for b in self.bounces)

    @property
    def bounce_status(self) -> str | None:
        ranked = sorted(self.bounces, key=lambda b: (not b.hard, b.status is None))
        return ranked[0].status if ranked else None


@dataclass(frozen=True)
class ClassifyOptions:
    """What the classifier needs to know about our own campaigns."""

    unsubscribe_addresses: frozenset[str] = field(default_factory=frozenset)  # email_key form


def parse_message(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def classify(raw: bytes, options: ClassifyOptions | None = None) -> InboundMessage:
    """Classify one raw RFC 5322 message."""
    opts = options or ClassifyOptions()
    msg = parse_message(raw)
    subject = header_value(msg, "Subject")
    sender = sender_key(msg)

    def make(
        kind: EventKind,
        reason: str,
        *,
        tokens: Iterable[str] = (),
        bounces: Iterable[Bounce] = (),
        summary: str = "",
    ) -> InboundMessage:
        return InboundMessage(
            kind=kind,
            reason=reason,
            message_id=message_id_of(msg),
            sender=sender,
            subject=subject,
            date=date_utc(msg),
            tokens=unique(tokens),
            bounces=tuple(bounces),
            summary=summary or clip(subject),
            kenmerken=kenmerken,
        )

    kenmerken = kenmerken_in(msg, subject)
    reference_tokens = thread_tokens(msg)
    report = delivery_status_report(msg)
    if report is not None:
        bounces, original_tokens = report
        if bounces:
            return make(
                EventKind.BOUNCE,
                "RFC 3464 delivery status report",
                tokens=[*verp_tokens(msg), *original_tokens, *reference_tokens],
                bounces=bounces,
                summary=bounce_summary(bounces),
            )
    elif looks_like_bounce(msg, sender, subject):
        legacy = legacy_bounces(msg)
        if legacy:
            return make(
                EventKind.BOUNCE,
                "non-standard bounce (flufl.bounce)",
                tokens=[*verp_tokens(msg), *embedded_message_tokens(msg), *reference_tokens],
                bounces=legacy,
                summary=bounce_summary(legacy),
            )

    auto = _auto_reply_reason(msg, subject)
    if auto is not None:
        return make(EventKind.AUTO_REPLY, auto, tokens=reference_tokens)

    unsubscribe = _unsubscribe_reason(msg, subject, opts.unsubscribe_addresses)
    if unsubscribe is not None:
        tokens = [*verp_tokens(msg), *subject_tokens(subject), *reference_tokens]
        return make(EventKind.OPT_OUT, unsubscribe, tokens=tokens)

    if reference_tokens:
        return make(
            EventKind.REPLY,
            "In-Reply-To/References",
            tokens=reference_tokens,
            summary=reply_summary(msg, subject),
        )
    if kenmerken:
        # Forwarded by the griffie, or written from another address: the kenmerk of the letter it
        # answers (the caller confirms it is ours, else it stays unmatched).
        return make(EventKind.REPLY, "kenmerk in subject or text", summary=reply_summary(msg, subject))
    return make(EventKind.UNMATCHED, "no Message-ID of ours in In-Reply-To/References, no kenmerk")


# --- automatic replies and unsubscribes ------------------------------------------------------------


def _auto_reply_reason(msg: Message, subject: str) -> str | None:
    auto_submitted = header_value(msg, "Auto-Submitted").split(";", 1)[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = header_value(msg, name).lower()
        if value and value not in ("no", "false", "0"):
            return f"{name}: {value}"
    precedence = header_value(msg, "Precedence").lower()
    if precedence in _AUTO_PRECEDENCE:
        return f"Precedence: {precedence}"
    if _AUTO_SUBJECT_RE.match(subject):
        return f"subject {subject[:40]!r}"
    return None


def unsubscribe_address_key(mailto: str) -> str | None:
    """The email_key of a List-Unsubscribe mailto ("mailto:afmelden@x.nl?subject=..."), or None."""
    value = mailto.strip().strip("<>")
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:") :]
    address = value.split("?", 1)[0].strip()
    return email_key(address) if "@" in address else None


def _base_address(key: str) -> str:
    # Sub-addressing: "afmelden+token@x.nl" arrives at "afmelden@x.nl".
    local, _, domain = key.rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def _unsubscribe_reason(msg: EmailMessage, subject: str, addresses: Collection[str]) -> str | None:
    if addresses:
        wanted = {_base_address(a) for a in addresses}
        for recipient in address_keys(msg, "To", "Cc", "Delivered-To", "X-Original-To"):
            if _base_address(recipient) in wanted:
                return f"sent to the unsubscribe address {recipient}"
    match = _UNSUBSCRIBE_RE.search(_REPLY_PREFIX_RE.sub("", subject))
    if match:
        return f"subject {match.group(1).lower()!r}"
    # The letters' privacy notice says: answer this message with "afmelden". Such an answer is short;
    # a substantive reply that merely mentions the word is not an unsubscribe, nor is "niet afmelden".
    request = _before_closing(reply_text(msg))
    match = _UNSUBSCRIBE_RE.search(request)
    if match and len(request) <= UNSUBSCRIBE_REPLY_CHARS and not _NEGATION_RE.search(request):
        return f"reply {match.group(1).lower()!r}"
    return None


def _before_closing(text: str) -> str:
    """The reply's words before the closing ("Met vriendelijke groet"), signature and disclaimer."""
    kept = []
    for line in text.splitlines():
        if _CLOSING_RE.match(line):
            break
        kept.append(line)
    return " ".join(" ".join(kept).split())


def to_summary_line(inbound: InboundMessage) -> str:
    """From and subject, for listing unmatched messages."""
    sender = inbound.sender or "(no sender)"
    return clip(f"From: {sender}; Subject: {inbound.subject or '(no subject)'}")
