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
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from typing import ClassVar

from flufl.bounce import all_failures

from outreach.letters.ids import is_token, token_from_verp, tokens_in_references
from outreach.letters.kenmerk import KENMERK_RE
from outreach.models import EventKind
from outreach.registry.keys import email_key

SUMMARY_CHARS = 300  # Event.text is a summary for the report, never the whole letter

_STATUS_RE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"\b([45]\d\d)\b")
_TOKEN_WORD_RE = re.compile(r"\b[a-z2-7]{16}\b", re.IGNORECASE)

# Mailer-daemon senders and NDR subjects of bounces that do not follow RFC 3464.
_BOUNCE_SENDER_RE = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mdaemon|bounce[s]?)(@|$)", re.I)
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered mail|delivery status notification|delivery (has )?failed|failure notice|"
    r"returned mail|mail delivery failed|non[- ]?delivery|onbestelbaar|niet (af)?geleverd|"
    r"kan niet worden bezorgd|bezorging (is )?mislukt",
    re.I,
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

# Where a reply's own text ends and the quoted letter begins: Gmail ("Op di 10 mrt 2026 om 09:12 schreef
# ...:"), Outlook ("Van: ..." header block or "-----Oorspronkelijk bericht-----"), English variants, and
# the underscore rule Outlook on the web draws above the quoted headers.
_QUOTE_START_RE = re.compile(
    r"^\s*(op .{0,200}schreef|on .{0,200}wrote|-{3,}\s*(oorspronkelijk bericht|original message)|"
    r"van:\s|from:\s|_{10,})",
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
    subject = _header(msg, "Subject")
    sender = _sender(msg)

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
            message_id=_message_id(msg),
            sender=sender,
            subject=subject,
            date=_date(msg),
            tokens=_unique(tokens),
            bounces=tuple(bounces),
            summary=summary or _clip(subject),
            kenmerken=kenmerken,
        )

    kenmerken = _kenmerken(msg, subject)
    reference_tokens = _reference_tokens(msg)
    report = _delivery_status_report(msg)
    if report is not None:
        bounces, original_tokens = report
        if bounces:
            return make(
                EventKind.BOUNCE,
                "RFC 3464 delivery status report",
                tokens=[*_verp_tokens(msg), *original_tokens, *reference_tokens],
                bounces=bounces,
                summary=_bounce_summary(bounces),
            )
    elif _looks_like_bounce(msg, sender, subject):
        legacy = _legacy_bounces(msg)
        if legacy:
            return make(
                EventKind.BOUNCE,
                "non-standard bounce (flufl.bounce)",
                tokens=[*_verp_tokens(msg), *_embedded_message_tokens(msg), *reference_tokens],
                bounces=legacy,
                summary=_bounce_summary(legacy),
            )

    auto = _auto_reply_reason(msg, subject)
    if auto is not None:
        return make(EventKind.AUTO_REPLY, auto, tokens=reference_tokens)

    unsubscribe = _unsubscribe_reason(msg, subject, opts.unsubscribe_addresses)
    if unsubscribe is not None:
        tokens = [*_verp_tokens(msg), *_subject_tokens(subject), *reference_tokens]
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


# --- headers ---------------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError):  # a header the parser cannot decode: keep going without it
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def _message_id(msg: Message) -> str | None:
    value = _header(msg, "Message-ID")
    match = re.search(r"<[^<>\s]+>", value)
    return match.group(0) if match else (value or None)


def _sender(msg: Message) -> str | None:
    addresses = _addresses(msg, "From") or _addresses(msg, "Sender")
    return addresses[0] if addresses else None


def _addresses(msg: Message, *names: str) -> list[str]:
    values: list[str] = []
    for name in names:
        try:
            values.extend(str(v) for v in msg.get_all(name, []))
        except (ValueError, IndexError):
            continue
    found = []
    for _display, address in getaddresses(values):
        if "@" in address:
            found.append(email_key(address))
    return found


def _date(msg: Message) -> datetime | None:
    value = _header(msg, "Date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # RFC 5322 "-0000": the time is UTC with no known local offset
        return parsed
    return parsed.astimezone(UTC).replace(tzinfo=None)


def _reference_tokens(msg: Message) -> tuple[str, ...]:
    # In-Reply-To names the message answered; References lists the thread, most recent last.
    in_reply_to = tokens_in_references(_header(msg, "In-Reply-To"))
    references = list(reversed(tokens_in_references(_header(msg, "References"))))
    return _unique([*in_reply_to, *references])


def _verp_tokens(msg: Message) -> list[str]:
    # A bounce goes to the envelope sender; MTAs copy it into To, Delivered-To or X-Original-To.
    tokens = []
    for address in _addresses(msg, "To", "Delivered-To", "X-Original-To", "Envelope-To"):
        token = token_from_verp(address)
        if token:
            tokens.append(token)
    return tokens


def _subject_tokens(subject: str) -> list[str]:
    return [word.lower() for word in _TOKEN_WORD_RE.findall(subject) if is_token(word.lower())]


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- bounces ---------------------------------------------------------------------------------------


def _delivery_status_report(msg: Message) -> tuple[list[Bounce], list[str]] | None:
    """RFC 3464: the per-recipient fields of every message/delivery-status part, and our tokens in the
    returned original (message/rfc822 or text/rfc822-headers). None when the message is no DSN."""
    status_parts = [part for part in msg.walk() if part.get_content_type() == "message/delivery-status"]
    if not status_parts:
        return None
    bounces: list[Bounce] = []
    for part in status_parts:
        for block in _status_blocks(part):
            action = _header(block, "Action").lower()
            recipient_field = _header(block, "Final-Recipient") or _header(block, "Original-Recipient")
            if not recipient_field and not action:
                continue  # the per-message block (Reporting-MTA, Arrival-Date)
            status = _status_code(_header(block, "Status"))
            diagnostic = _header(block, "Diagnostic-Code") or None
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
                    diagnostic=_clip(diagnostic, 200) if diagnostic else None,
                )
            )
    return bounces, _embedded_message_tokens(msg)


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


def _embedded_message_tokens(msg: Message) -> list[str]:
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
            tokens.extend(tokens_in_references(_header(headers, "Message-ID")))
            tokens.extend(_verp_tokens_from_return_path(headers))
    return tokens


def _verp_tokens_from_return_path(headers: Message) -> list[str]:
    tokens = []
    for address in _addresses(headers, "Return-Path"):
        token = token_from_verp(address)
        if token:
            tokens.append(token)
    return tokens


def _looks_like_bounce(msg: Message, sender: str | None, subject: str) -> bool:
    if sender and _BOUNCE_SENDER_RE.match(sender):
        return True
    if _header(msg, "X-Failed-Recipients"):
        return True
    return bool(_BOUNCE_SUBJECT_RE.search(subject)) and _header(msg, "Return-Path") in ("<>", "")


def _legacy_bounces(msg: Message) -> tuple[Bounce, ...]:
    """Bounces outside RFC 3464, via flufl.bounce's detectors for qmail, Exim, old Exchange, ..."""
    temporary, permanent = all_failures(msg)
    status = _status_code(_plain_text(msg)) if (temporary or permanent) else None
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


def _bounce_summary(bounces: Iterable[Bounce]) -> str:
    parts = []
    for bounce in bounces:
        text = f"{bounce.status or '?'} {bounce.recipient or '(unknown recipient)'}"
        if bounce.diagnostic:
            text += f": {bounce.diagnostic}"
        parts.append(text)
    return _clip("; ".join(parts))


# --- automatic replies and unsubscribes ------------------------------------------------------------


def _auto_reply_reason(msg: Message, subject: str) -> str | None:
    auto_submitted = _header(msg, "Auto-Submitted").split(";", 1)[0].strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        value = _header(msg, name).lower()
        if value and value not in ("no", "false", "0"):
            return f"{name}: {value}"
    precedence = _header(msg, "Precedence").lower()
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
        for recipient in _addresses(msg, "To", "Cc", "Delivered-To", "X-Original-To"):
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


# --- reply text ------------------------------------------------------------------------------------


class _TextOfHtml(HTMLParser):
    """Visible text of an HTML body; stops at the quoted part Gmail and Outlook mark up."""

    _BLOCK: ClassVar[frozenset[str]] = frozenset({"p", "div", "br", "tr", "li", "h1", "h2", "blockquote"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0
        self.done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        ident = attributes.get("id") or ""
        if "gmail_quote" in classes or ident in ("divRplyFwdMsg", "appendonsend") or tag == "blockquote":
            self.done = True
        if tag in ("style", "script", "head"):
            self._skip += 1
        if tag in self._BLOCK:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and not self.done:
            self.chunks.append(data)


_KENMERK_SEARCH_CHARS = 200_000  # of each text part: a kenmerk sits near the top of a reply or forward


def _kenmerken(msg: Message, subject: str) -> tuple[str, ...]:
    """Kenmerken (``HVK/2026/0003/0412``) in the subject and the text parts, quoted parts included (a
    forwarded letter quotes it there), in order of appearance."""
    texts = [subject]
    for part in msg.walk():
        if part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment":
            texts.append(_decoded(part)[:_KENMERK_SEARCH_CHARS])
    return _unique(match.group(0) for text in texts for match in KENMERK_RE.finditer(text))


def _plain_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and part.get_content_disposition() != "attachment":
            return _decoded(part)
    return ""


def _decoded(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", errors="replace")


def reply_text(msg: EmailMessage) -> str:
    """The reply's own words: the plain-text (or HTML) body without the quoted letter."""
    body = None
    try:
        body = msg.get_body(preferencelist=("plain", "html"))
    except (KeyError, LookupError):
        body = None
    if body is None:
        return ""
    text = _decoded(body)
    if body.get_content_type() == "text/html":
        parser = _TextOfHtml()
        parser.feed(text)
        text = "".join(parser.chunks)
    kept: list[str] = []
    for line in text.splitlines():
        if _QUOTE_START_RE.match(line):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


def reply_summary(msg: EmailMessage, subject: str) -> str:
    own = reply_text(msg)
    return _clip(f"{subject} — {own}" if own else subject)


def to_summary_line(inbound: InboundMessage) -> str:
    """From and subject, for listing unmatched messages."""
    sender = inbound.sender or "(no sender)"
    return _clip(f"From: {sender}; Subject: {inbound.subject or '(no subject)'}")
