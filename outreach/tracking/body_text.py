"""The text of an inbound message: a reply's own words without the letter it quotes, the plain text of
a bounce, and the kenmerken of our letters that a reply or forward quotes."""

from __future__ import annotations

import re
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from typing import ClassVar

from outreach.letters.kenmerk import KENMERK_RE
from outreach.tracking.headers import clip, unique

# Where a reply's own text ends and the quoted letter begins: Gmail ("Op di 10 mrt 2026 om 09:12 schreef
# ...:"), Outlook ("Van: ..." header block or "-----Oorspronkelijk bericht-----"), English variants, and
# the underscore rule Outlook on the web draws above the quoted headers.
_QUOTE_START_RE = re.compile(
    r"^\s*(op .{0,200}schreef|on .{0,200}wrote|-{3,}\s*(oorspronkelijk bericht|original message)|"
    r"van:\s|from:\s|_{10,})",
    re.I,
)


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


def kenmerken_in(msg: Message, subject: str) -> tuple[str, ...]:
    """Kenmerken (``HVK/2026/0003/0412``) in the subject and the text parts, quoted parts included (a
    forwarded letter quotes it there), in order of appearance."""
    texts = [subject]
    for part in msg.walk():
        if part.get_content_maintype() == "text" and part.get_content_disposition() != "attachment":
            texts.append(decoded_text(part)[:_KENMERK_SEARCH_CHARS])
    return unique(match.group(0) for text in texts for match in KENMERK_RE.finditer(text))


def plain_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and part.get_content_disposition() != "attachment":
            return decoded_text(part)
    return ""


def decoded_text(part: Message) -> str:
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
    text = decoded_text(body)
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
    return clip(f"{subject} — {own}" if own else subject)
