"""The header fields of an inbound message as the classifier reads them: decoded, folded to one line,
addresses as their ``email_key``, and the delivery tokens our letters put in them.

A header that the parser cannot decode reads as empty: a broken message is still classified."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from outreach.letters.ids import is_token, token_from_verp, tokens_in_references
from outreach.registry.keys import email_key

SUMMARY_CHARS = 300  # Event.text is a summary for the report, never the whole letter

_TOKEN_WORD_RE = re.compile(r"\b[a-z2-7]{16}\b", re.IGNORECASE)


# --- headers ---------------------------------------------------------------------------------------


def header_value(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except (ValueError, IndexError):  # a header the parser cannot decode: keep going without it
        return ""
    if value is None:
        return ""
    return " ".join(str(value).split())


def message_id_of(msg: Message) -> str | None:
    value = header_value(msg, "Message-ID")
    match = re.search(r"<[^<>\s]+>", value)
    return match.group(0) if match else (value or None)


def sender_key(msg: Message) -> str | None:
    addresses = address_keys(msg, "From") or address_keys(msg, "Sender")
    return addresses[0] if addresses else None


def address_keys(msg: Message, *names: str) -> list[str]:
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


def date_utc(msg: Message) -> datetime | None:
    value = header_value(msg, "Date")
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:  # RFC 5322 "-0000": the time is UTC with no known local offset
        return parsed
    return parsed.astimezone(UTC).replace(tzinfo=None)


def thread_tokens(msg: Message) -> tuple[str, ...]:
    # In-Reply-To names the message answered; References lists the thread, most recent last.
    in_reply_to = tokens_in_references(header_value(msg, "In-Reply-To"))
    references = list(reversed(tokens_in_references(header_value(msg, "References"))))
    return unique([*in_reply_to, *references])


def verp_tokens(msg: Message) -> list[str]:
    # A bounce goes to the envelope sender; MTAs copy it into To, Delivered-To or X-Original-To.
    tokens = []
    for address in address_keys(msg, "To", "Delivered-To", "X-Original-To", "Envelope-To"):
        token = token_from_verp(address)
        if token:
            tokens.append(token)
    return tokens


def subject_tokens(subject: str) -> list[str]:
    return [word.lower() for word in _TOKEN_WORD_RE.findall(subject) if is_token(word.lower())]


def unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def clip(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
