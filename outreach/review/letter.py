"""One letter as its recipient will get it: composed by the campaign's own composer (no second way to
render), with the headers, the attachments, and the merge data the templates were given."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage

from jinja2.defaults import DEFAULT_NAMESPACE

from outreach.errors import OutreachError
from outreach.letters.compose import ComposedLetter
from outreach.letters.ids import new_token
from outreach.letters.recipients import Recipient
from outreach.letters.render import Fields
from outreach.models import utcnow
from outreach.review.checked import CheckedCampaign, Problem

HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post")


@dataclass(frozen=True)
class Attachment:
    index: int  # position among the message's attachments, for the download link
    filename: str
    content_type: str
    size: int  # bytes, decoded


@dataclass(frozen=True)
class LetterView:
    recipient: Recipient
    problem: Problem | None
    letter: ComposedLetter | None  # None when the letter does not render
    error: str | None  # why it does not render
    headers: list[tuple[str, str]]
    attachments: list[Attachment]
    merge_data: list[tuple[str, str]]  # ("contact.achternaam", "Dijk"), in the templates' terms


def attachments_of(message: EmailMessage) -> list[tuple[Attachment, EmailMessage]]:
    found = []
    for index, part in enumerate(message.iter_attachments()):
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        found.append(
            (
                Attachment(
                    index, part.get_filename() or f"attachment-{index + 1}", part.get_content_type(), size
                ),
                part,
            )
        )
    return found


def _merge_data(context: dict[str, object]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in context.items():
        if key in DEFAULT_NAMESPACE:
            continue  # Jinja's own globals (range, dict, ...), the same for every letter
        if isinstance(value, Fields):
            rows.extend((f"{key}.{name}", str(item)) for name, item in value.items())
        elif value is None:
            rows.append((key, "(none)"))
        else:
            rows.append((key, str(value)))
    return rows


def compose_letter(checked: CheckedCampaign, recipient: Recipient) -> ComposedLetter:
    """The letter for ``recipient`` as it would be composed now (raises the composer's OutreachError)."""
    return checked.composer.compose(recipient, token=new_token(), now=utcnow())


def letter_view(checked: CheckedCampaign, recipient: Recipient) -> LetterView:
    token, now = new_token(), utcnow()
    composer = checked.composer
    letter: ComposedLetter | None = None
    error = None
    try:
        letter = composer.compose(recipient, token=token, now=now)
    except OutreachError as exc:
        error = exc.message
    try:
        context = composer.templates.context(
            recipient, token=token, now=now, kenmerk=composer.kenmerk_of(recipient)
        )
        merge = _merge_data(context)
    except OutreachError:
        merge = []  # the unsubscribe URL template failed; the error above says so
    headers: list[tuple[str, str]] = []
    attachments: list[Attachment] = []
    if letter is not None:
        message = letter.message
        headers = [(name, str(message[name])) for name in HEADERS if message[name] is not None]
        headers.append(("Envelope-To", ", ".join(letter.envelope_to)))
        attachments = [a for a, _ in attachments_of(message)]
    return LetterView(
        recipient=recipient,
        problem=checked.problems.get(recipient.contact_id),
        letter=letter,
        error=error,
        headers=headers,
        attachments=attachments,
        merge_data=merge,
    )
