"""Composing the message bytes of one letter, thousands per second.

The MIME structure is fixed (text, optionally text+HTML as multipart/alternative, optionally attachments
in multipart/mixed), so the bytes are assembled directly instead of through ``EmailMessage`` and the
generator, which costs about a millisecond per message. Everything that is the same for every letter is
built once per campaign: the From/Reply-To lines, the attachment parts (read and base64-encoded once).
The per-letter parts are encoded with the C codecs in ``binascii``. ``ComposedLetter.message`` parses the
bytes back with the standard library for anyone who wants an ``EmailMessage``; the tests check that
the structure and every header survive that round trip.

Header values are checked for control characters before anything is encoded: Python 3.11.7 still has
CVE-2024-6923 (an encoded newline in a header can become a real header line when re-folded), and a
line break in a display name or subject is never legitimate.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import mimetypes
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import EmailMessage, MIMEPart
from email.utils import format_datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from outreach.errors import AddressError, CampaignError, HeaderInjectionError, TemplateError
from outreach.letters.campaign import AMSTERDAM, CampaignConfig
from outreach.letters.ids import is_token, message_id
from outreach.letters.kenmerk import DRAFT_NUMBER, campaign_part, delivery_kenmerk
from outreach.letters.recipients import Recipient
from outreach.letters.render import SUBJECT, CampaignTemplates, RenderedLetter

if TYPE_CHECKING:
    from outreach.letters.pdf_letters import CampaignPdfs
    from outreach.letters.pdf_store import PdfStore

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_CONTROL_BYTES_RE = re.compile(rb"[\x00-\x1f\x7f]")
_ENCODED_WORD_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_ATEXT_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*$")
_MAX_LINE = 78  # RFC 5322 2.1.1: SHOULD be no more than 78 characters
# RFC 5322 2.1.1: a line MUST stay under 998 characters; a subject of this length, folded at spaces or
# encoded, always does (an unbreakable 300-character word included).
_MAX_SUBJECT = 300


def utc_year() -> int:
    return datetime.now(UTC).year


def _hides_control_character(value: str) -> bool:
    """Whether an RFC 2047 encoded word in ``value`` decodes to a control character (or cannot be
    decoded at all: a malformed encoded word has no business in a letter either)."""
    for word in _ENCODED_WORD_RE.findall(value):
        try:
            parts = decode_header(word)
        except (ValueError, LookupError, binascii.Error, HeaderParseError):
            return True
        decoded = b"".join(part if isinstance(part, bytes) else part.encode("utf-8") for part, _ in parts)
        if _CONTROL_BYTES_RE.search(decoded):
            return True
    return False


def check_header_value(name: str, value: str, *, where: str = "") -> None:
    """Raise HeaderInjectionError if ``value`` has a control character, also inside an encoded word."""
    if _CONTROL_RE.search(value) or ("=?" in value and _hides_control_character(value)):
        prefix = f"{where}: " if where else ""
        raise HeaderInjectionError(
            f"{prefix}{name} header value {value[:60]!r} contains a control character (line break, NUL, ...)"
            " or an encoded one",
            hint="remove line breaks from names and subjects; they would start a new mail header",
        )


def _fold_ascii(name: str, value: str) -> str:
    """'Name: value' folded at spaces to 78 columns (RFC 5322 2.2.3)."""
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line + "\r\n"
    out: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > _MAX_LINE and current.strip() and current != f"{name}:":
            out.append(current)
            current = ""
        current = f"{current} {word}"
    out.append(current)
    return "\r\n".join(out) + "\r\n"


def encoded_words(text: str, first_room: int) -> str:
    """``text`` as RFC 2047 base64 encoded words, folded with CRLF SP between them.

    ``email.header.Header`` does the same but costs ~0.5 ms per value (it measures every candidate split
    character by character); this cuts the UTF-8 at character boundaries into chunks of at most 45 bytes,
    which keeps every encoded word within the 75 characters RFC 2047 section 2 allows, and the first
    chunk small enough that the first line stays within 78 columns.
    """
    data = text.encode("utf-8")
    words: list[str] = []
    start, limit = 0, max(3, min(45, (first_room - 12) // 4 * 3))
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # never split a UTF-8 sequence
            end -= 1
        words.append(f"=?utf-8?b?{binascii.b2a_base64(data[start:end], newline=False).decode('ascii')}?=")
        start, limit = end, 45
    return "\r\n ".join(words)


def _foldable(name: str, value: str) -> bool:
    """Whether ``value`` is ASCII and folding at its spaces keeps every line within 78 columns.

    A word longer than a line cannot be folded (RFC 5322 folds only at whitespace): a 2,000-character
    name without spaces made a To line that servers refuse ("500 Line too long"). Such a value is
    written as encoded words instead, which can be cut anywhere.
    """
    room = _MAX_LINE - len(name) - 2
    return value.isascii() and (len(value) <= room or max(map(len, value.split(" "))) <= room)


def header_line(name: str, value: str, *, where: str = "") -> str:
    """One header field, RFC 2047-encoded when ``value`` is not ASCII (or has a word longer than a
    line), folded, ending in CRLF: no line over 78 columns."""
    check_header_value(name, value, where=where)
    if _foldable(name, value):
        return _fold_ascii(name, value)
    return f"{name}: {encoded_words(value, _MAX_LINE - len(name) - 2)}\r\n"


def _ascii_address(address: str, where: str) -> str:
    """The address as it can go into a header and RCPT TO: IDNA domain, ASCII local part."""
    check_header_value("address", address, where=where)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(ch in address for ch in ' <>,;"()[]\\'):
        raise AddressError(f"{where}: {address!r} is not an e-mail address")
    if not local.isascii():
        raise AddressError(f"{where}: {address!r} needs SMTPUTF8 (non-ASCII before the @); not supported")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AddressError(f"{where}: {address!r}: the domain is not a valid name ({exc})") from exc
    return f"{local}@{domain}"


def address_header(name: str, display: str, address: str, *, where: str = "") -> str:
    """'To: Anna van Dijk <anna@x.nl>' with the display name quoted or RFC 2047-encoded as needed."""
    return _address_line(name, display, _ascii_address(address, where), where)


def _address_line(name: str, display: str, addr: str, where: str) -> str:
    """address_header() for an address already through _ascii_address()."""
    check_header_value(name, display, where=where)
    if not display:
        return f"{name}: {addr}\r\n"
    if _foldable(name, display):
        if not _ATEXT_RE.match(display) or "." in display:
            display = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return _fold_ascii(name, f"{display} <{addr}>")
    return f"{name}: {encoded_words(display, _MAX_LINE - len(name) - 2)}\r\n <{addr}>\r\n"


def _qp(text: str) -> bytes:
    """Quoted-printable (RFC 2045 6.7) with CRLF line ends; lines longer than 76 get soft breaks."""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(data, istext=True).replace(b"\n", b"\r\n")


def attachment_part(path: Path) -> bytes:
    """The encoded MIME part of one attachment (headers, blank line, base64), built once per campaign."""
    check_header_value("attachment file name", path.name, where=str(path))
    ctype, encoding = mimetypes.guess_type(path.name)
    if ctype is None or encoding is not None:
        ctype = "application/octet-stream"
    maintype, subtype = ctype.split("/", 1)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read attachment: {exc.strerror}") from exc
    part = MIMEPart(policy=email.policy.SMTP)
    part.set_content(data, maintype=maintype, subtype=subtype, filename=path.name)
    return part.as_bytes(policy=email.policy.SMTP).rstrip(b"\r\n") + b"\r\n"


@dataclass(frozen=True)
class ComposedLetter:
    """One letter ready for SMTP: the bytes for DATA and the envelope recipients."""

    raw: bytes
    envelope_to: list[str]
    message_id: str
    subject: str
    text: str
    html: str | None
    recipient: Recipient
    is_copy: bool = False  # the griffie's separate copy
    kenmerk: str = ""

    def as_bytes(self) -> bytes:
        """The message with CRLF line ends, ready for SMTP DATA (dot-stuffing is the client's job)."""
        return self.raw

    @cached_property
    def message(self) -> EmailMessage:
        """The bytes parsed back by the standard library (policy SMTP)."""
        return email.message_from_bytes(self.raw, policy=email.policy.SMTP)


class LetterComposer:
    """Compiles a campaign's templates and static parts once; ``compose`` builds one letter.

    ``kenmerk`` is the campaign's part of each letter's kenmerk (``outreach.letters.kenmerk``; a draft
    "…/0000" without one). A campaign with a ``[letter]`` attaches each recipient's PDF letter, read
    from ``pdf_store`` when it was prepared there (``pdf_letters.prepare_pdfs``), else laid out here.
    """

    def __init__(
        self, campaign: CampaignConfig, *, kenmerk: str | None = None, pdf_store: PdfStore | None = None
    ) -> None:
        self.campaign = campaign
        self.templates = CampaignTemplates(campaign)
        self.kenmerk = kenmerk or campaign_part(campaign.kenmerk_prefix, utc_year(), DRAFT_NUMBER)
        self.pdfs: CampaignPdfs | None = None
        if campaign.letter is not None:
            from outreach.letters.pdf_letters import CampaignPdfs

            self.pdfs = CampaignPdfs(campaign, self.templates, pdf_store)
        where = f"campaign {campaign.slug}"
        self._static = (
            address_header("From", campaign.from_name, campaign.from_address, where=where)
            + address_header("Reply-To", "", campaign.reply_to, where=where)
        ).encode("ascii")
        trailer = [
            # RFC 3834: this is a mass mailing, so vacation responders should stay silent...
            "Auto-Submitted: auto-generated\r\n",
            # ...and Exchange honours only its own header for that.
            "X-Auto-Response-Suppress: OOF, AutoReply\r\n",
        ]
        if campaign.unsubscribe_url:
            trailer.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")  # RFC 8058
        trailer.append("MIME-Version: 1.0\r\n")
        self._trailer = "".join(trailer).encode("ascii")
        self._attachments = [attachment_part(path) for path in campaign.attachments]

    def kenmerk_of(self, recipient: Recipient) -> str:
        return delivery_kenmerk(self.kenmerk, recipient.contact_id)

    def render(self, recipient: Recipient, *, token: str, now: datetime) -> RenderedLetter:
        return self.templates.render(recipient, token=token, now=now, kenmerk=self.kenmerk_of(recipient))

    def compose(self, recipient: Recipient, *, token: str, now: datetime) -> ComposedLetter:
        """The letter for ``recipient``; ``now`` (naive UTC or aware) sets the Date header and the date line.

        Raises TemplateError (names recipient, template, line, field; or a PDF letter that cannot be laid
        out or whose address does not fit the envelope window), HeaderInjectionError, AddressError.
        """
        if not is_token(token):
            # The token ends up in Message-ID, MIME boundaries and links: only ids.new_token() will do.
            raise ValueError(f"not a delivery token: {token!r}")
        campaign = self.campaign
        where = f"campaign {campaign.slug}: {recipient.label}"
        kenmerk = self.kenmerk_of(recipient)
        letter = self.templates.render(recipient, token=token, now=now, kenmerk=kenmerk)
        if len(letter.subject) > _MAX_SUBJECT:
            raise TemplateError(
                f"{where}: {SUBJECT}: the subject is {len(letter.subject)} characters long;"
                f" at most {_MAX_SUBJECT} fit a mail header line"
            )
        moment = now.replace(tzinfo=UTC) if now.tzinfo is None else now
        msgid = message_id(token, campaign.message_domain)

        to_address = _ascii_address(recipient.email, where)
        envelope = [to_address]
        head = [_address_line("To", recipient.name, to_address, where)]
        if campaign.griffie_copy == "cc" and recipient.griffie_email:
            griffie = _ascii_address(recipient.griffie_email, f"{where}: griffie")
            if griffie.lower() != to_address.lower():
                label = f"Griffie {recipient.municipality or ''}".strip()
                head.append(_address_line("Cc", label, griffie, where))
                envelope.append(griffie)
        head.append(header_line("Subject", letter.subject, where=where))
        head.append(f"Date: {format_datetime(moment.astimezone(AMSTERDAM))}\r\n")
        head.append(f"Message-ID: {msgid}\r\n")
        unsubscribe = []
        if campaign.unsubscribe_mailto:
            unsubscribe.append(f"<mailto:{campaign.unsubscribe_mailto}?subject=afmelden%20{token}>")
        url = letter.unsubscribe_url
        if url is not None:
            check_header_value("List-Unsubscribe", url, where=where)
            if not url.isascii() or " " in url or ">" in url:
                raise HeaderInjectionError(f"{where}: the unsubscribe URL {url!r} is not a plain ASCII URL")
            unsubscribe.append(f"<{url}>")
        if unsubscribe:
            head.append("List-Unsubscribe: " + ",\r\n ".join(unsubscribe) + "\r\n")

        extra = [self.pdfs.part(recipient, now=now, kenmerk=kenmerk)] if self.pdfs is not None else []
        body = self._body(letter, token, extra)
        raw = b"".join((self._static, "".join(head).encode("ascii"), self._trailer, body))
        return ComposedLetter(
            raw=raw,
            envelope_to=envelope,
            message_id=msgid,
            subject=letter.subject,
            text=letter.text,
            html=letter.html,
            recipient=recipient,
            is_copy=letter.is_copy,
            kenmerk=kenmerk,
        )

    def _body(self, letter: RenderedLetter, token: str, extra: list[bytes]) -> bytes:
        text_part = (
            b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + _qp(letter.text)
        )
        if letter.html is not None:
            # "=_" never occurs in quoted-printable or base64 output, so the boundary cannot clash.
            boundary = f"=_alt_{token}".encode("ascii")
            content: bytes = b"".join(
                (
                    b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
                    b"--" + boundary + b"\r\n",
                    text_part,
                    b"\r\n--" + boundary + b"\r\n",
                    b'Content-Type: text/html; charset="utf-8"\r\n'
                    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                    _qp(letter.html),
                    b"\r\n--" + boundary + b"--\r\n",
                )
            )
        else:
            content = text_part
        if not self._attachments and not extra:
            return content
        boundary = f"=_mix_{token}".encode("ascii")
        pieces = [b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n']
        pieces.append(b"--" + boundary + b"\r\n" + content)
        for part in (*extra, *self._attachments):
            pieces.append(b"\r\n--" + boundary + b"\r\n" + part)
        pieces.append(b"\r\n--" + boundary + b"--\r\n")
        return b"".join(pieces)
