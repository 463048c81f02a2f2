"""What reviewers run before anything is sent: list and show campaigns, check, preview, approve."""

from __future__ import annotations

import html
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from outreach.errors import CampaignError, NotFoundError, OutreachError
from outreach.letters.approval import (
    ApprovalRecord,
    approval_status,
    changes_since,
    ensure_campaign_row,
    record_approval,
    snapshot_folder,
)
from outreach.letters.campaign import CampaignConfig, with_web_base_url
from outreach.letters.campaign_file import list_campaign_slugs, load_campaign
from outreach.letters.compose import ComposedLetter, LetterComposer
from outreach.letters.ids import new_token
from outreach.letters.kenmerk import campaign_kenmerk, store_campaign_kenmerk
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import Recipient, load_recipients
from outreach.models import utcnow
from outreach.registry.audience import audience_contact_ids
from outreach.registry.keys import email_key, fold


def audience(engine: Engine, campaign: CampaignConfig) -> list[Recipient]:
    """Everyone the campaign addresses (suppressed and invalid included), by municipality and surname."""
    with engine.connect() as conn:
        recipients = load_recipients(conn, audience_contact_ids(campaign))
    return sorted(
        recipients.values(),
        key=lambda r: (fold(r.municipality or ""), r.role, fold(r.achternaam or ""), r.email, r.contact_id),
    )


def composer_for(engine: Engine, campaign: CampaignConfig, *, now: datetime | None = None) -> LetterComposer:
    """The composer of the letters as they would go out: the campaign's kenmerk, the PDF store."""
    with engine.connect() as conn:
        kenmerk = campaign_kenmerk(conn, campaign, now=now)
    return LetterComposer(campaign, kenmerk=kenmerk, pdf_store=PdfStore.default())


def letter_pdf(
    engine: Engine, campaign: CampaignConfig, contact_id: int, *, now: datetime | None = None
) -> bytes:
    """The PDF letter of one recipient as it would be sent now (for the browser review).

    Raises NotFoundError for a contact outside the audience or a campaign without ``[letter]``, and
    TemplateError when the letter cannot be laid out."""
    now = now or utcnow()
    if campaign.letter is None:
        raise NotFoundError(f"campaign {campaign.slug} has no PDF letter ([letter] in campaign.toml)")
    recipient = next((r for r in audience(engine, campaign) if r.contact_id == contact_id), None)
    if recipient is None:
        raise NotFoundError(f"contact {contact_id} is not in the audience of campaign {campaign.slug}")
    composer = composer_for(engine, campaign, now=now)
    assert composer.pdfs is not None
    return composer.pdfs.pdf(recipient, now=now, kenmerk=composer.kenmerk_of(recipient))


# ------------------------------------------------------------------------------------------ list/show


def approval_state(engine: Engine, campaign: CampaignConfig) -> str:
    """'approved (by Anna, 2026-01-20 14:02 UTC)', 'changed (...)', 'rejected (...)', 'not approved'."""
    return approval_status(engine, campaign).describe()


def decision_document(decision: ApprovalRecord) -> dict[str, str | None]:
    """One decision of the history as `campaign show --json` gives it."""
    return {
        "at": f"{decision.approved_at:%Y-%m-%dT%H:%M:%S}Z",
        "decision": decision.decision,
        "by": decision.approved_by,
        "comment": decision.comment,
        "fingerprint": decision.fingerprint,
    }


def format_decision(document: dict[str, str | None]) -> str:
    """One line of the history: '2026-01-20 14:02 UTC approved by Anna (fingerprint 3f2a...): comment'."""
    at = (document["at"] or "")[:16].replace("T", " ")
    short = (document["fingerprint"] or "")[:12]
    line = f"{at} UTC {document['decision']} by {document['by']} (fingerprint {short})"
    return f"{line}: {document['comment']}" if document["comment"] else line


@dataclass(frozen=True)
class CampaignSummary:
    slug: str
    name: str
    audience: str
    griffie_copy: str
    approval: str
    problem: str | None = None


def describe_audience(campaign: CampaignConfig) -> str:
    a = campaign.audience
    parts = [", ".join(a.roles)]
    for label, values in (
        ("provinces", a.provinces),
        ("municipalities", a.municipalities),
        ("parties", a.parties),
        ("portfolio", a.portfolio),
    ):
        if values:
            parts.append(f"{label}: {', '.join(values)}")
    return "; ".join(parts)


def list_campaigns(engine: Engine, templates_dir: Path) -> list[CampaignSummary]:
    """Every campaign folder; one that does not load is listed with its problem instead of failing all."""
    summaries = []
    for slug in list_campaign_slugs(templates_dir):
        try:
            campaign = load_campaign(templates_dir, slug)
        except OutreachError as exc:
            summaries.append(CampaignSummary(slug, "", "", "", "", problem=exc.message))
            continue
        summaries.append(
            CampaignSummary(
                slug=slug,
                name=campaign.name,
                audience=describe_audience(campaign),
                griffie_copy=campaign.griffie_copy,
                approval=approval_state(engine, campaign),
            )
        )
    return summaries


def show_campaign(engine: Engine, campaign: CampaignConfig) -> dict[str, object]:
    """Everything `campaign show` prints, as plain data (also its --json document)."""
    sending = campaign.sending
    recipients = audience(engine, campaign)
    status = approval_status(engine, campaign)
    return {
        "slug": campaign.slug,
        "name": campaign.name,
        "folder": str(campaign.folder),
        "from": f"{campaign.from_name} <{campaign.from_address}>",
        "reply_to": campaign.reply_to,
        "message_domain": campaign.message_domain,
        "subject": campaign.subject,
        "text_template": campaign.text_template,
        "html_template": campaign.html_template,
        "attachments": [p.name for p in campaign.attachments],
        "audience": describe_audience(campaign),
        "recipients": len(recipients),
        "suppressed": sum(1 for r in recipients if r.suppressed),
        "invalid": sum(1 for r in recipients if r.email_problem and not r.suppressed),
        "griffie_copy": campaign.griffie_copy,
        "salutation": campaign.salutation,
        "privacy_notice": campaign.privacy.notice,
        "unsubscribe_mailto": campaign.unsubscribe_mailto,
        "unsubscribe_url": campaign.unsubscribe_url,
        "rate": sending.rate,
        "domain_rate": sending.domain_rate,
        "domain_connections": sending.domain_connections,
        "max_per_connection": sending.max_per_connection,
        "window": sending.window.describe() if sending.window else None,
        "verp_local": sending.verp_local,
        "dkim": f"{sending.dkim_selector}._domainkey.{sending.dkim_domain}"
        if sending.dkim_selector
        else None,
        "approvals_required": campaign.approvals,
        "approval": status.describe(),
        "history": [decision_document(d) for d in reversed(status.history)],  # newest first
    }


# ---------------------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckFailure:
    recipient: str  # e-mail address
    message: str  # names campaign, recipient, template, line and field
    problem: str  # the same without campaign and recipient: what failures have in common
    contact_id: int | None = None  # which office of that address (one mailbox may serve several)


@dataclass
class CheckReport:
    campaign: str
    recipients: int = 0  # everyone in the audience, griffie copies included
    suppressed: int = 0
    no_email: int = 0  # in the audience without an address (the register lists many): cannot be reached
    invalid: int = 0
    rendered: int = 0
    griffie_copies: int = 0
    cc_griffie: int = 0
    failures: list[CheckFailure] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # campaign-wide: empty audience, ...

    @property
    def ok(self) -> bool:
        return not self.failures and not self.problems

    def failure_summary(self) -> list[tuple[str, int]]:
        """Each distinct problem with the number of recipients it hit, most frequent first."""
        counts = Counter(f.problem for f in self.failures)
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def check_campaign(
    engine: Engine,
    campaign: CampaignConfig,
    *,
    now: datetime | None = None,
    recipients: list[Recipient] | None = None,
    composer: LetterComposer | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Render and compose the letter of every sendable recipient; collect every failure, never stop.

    ``recipients`` (the audience, already loaded) and ``composer`` are for callers that keep them, such
    as `outreach review`; by default both are made here. A campaign with a PDF letter first lays out
    every letter in ``workers`` processes (into the PDF store, where ``send`` later finds them): a letter
    that cannot be laid out, or whose address does not fit the envelope window, is a failure like a
    template error.
    """
    now = now or utcnow()
    composer = composer or composer_for(engine, campaign, now=now)
    report = CheckReport(campaign=campaign.slug)
    if recipients is None:
        recipients = audience(engine, campaign)
    report.recipients = len(recipients)
    if not recipients:
        report.problems.append(
            f"campaign {campaign.slug}: nobody in the registry matches the audience"
            f" ({describe_audience(campaign)})"
        )
    sendable = []
    for recipient in recipients:
        if recipient.suppressed:
            report.suppressed += 1
        elif not recipient.email:
            report.no_email += 1
        elif recipient.email_problem:
            report.invalid += 1
        else:
            sendable.append(recipient)
    failed: set[int] = set()
    if composer.pdfs is not None and composer.pdfs.store is not None:
        from outreach.letters.pdf_letters import LetterJob, prepare_pdfs, terminal_progress

        prepared = prepare_pdfs(
            campaign,
            [LetterJob(r, composer.kenmerk_of(r)) for r in sendable],
            now=now,
            store=composer.pdfs.store,
            workers=workers,
            # Laying out 12,000 letters takes minutes: a terminal sees it move.
            progress=terminal_progress("PDF letters laid out") if sys.stderr.isatty() else None,
        )
        for recipient, error in prepared.failures:
            failed.add(recipient.contact_id)
            _add_failure(report, campaign, recipient, error)
    for recipient in sendable:
        if recipient.contact_id in failed:
            continue
        try:
            letter = composer.compose(recipient, token=new_token(), now=now)
        except OutreachError as exc:
            _add_failure(report, campaign, recipient, exc)
            continue
        report.rendered += 1
        if len(letter.envelope_to) > 1:
            report.cc_griffie += 1
        if letter.is_copy:
            report.griffie_copies += 1
    return report


def _add_failure(
    report: CheckReport, campaign: CampaignConfig, recipient: Recipient, exc: OutreachError
) -> None:
    problem = exc.message.removeprefix(f"campaign {campaign.slug}: ").removeprefix(f"{recipient.label}: ")
    report.failures.append(CheckFailure(recipient.email, exc.message, problem, recipient.contact_id))


# -------------------------------------------------------------------------------------------- preview


def preview_letters(
    engine: Engine,
    campaign: CampaignConfig,
    *,
    contact: str | None = None,
    limit: int | None = None,
    now: datetime | None = None,
) -> Iterator[tuple[Recipient, ComposedLetter]]:
    """The letters recipients would get now, in audience order; ``contact`` picks one e-mail address.

    Suppressed and invalid recipients are previewed too when asked for by address (the reviewer wants to
    see them), and left out of a preview of everyone.
    """
    now = now or utcnow()
    composer = composer_for(engine, campaign, now=now)
    recipients = audience(engine, campaign)
    if contact is not None:
        key = email_key(contact)
        recipients = [r for r in recipients if email_key(r.email) == key]
        if not recipients:
            raise NotFoundError(
                f"{contact} is not in the audience of campaign {campaign.slug}"
                f" ({describe_audience(campaign)})",
                hint="`outreach contacts show EMAIL` shows the contact's role and municipality",
            )
    else:
        recipients = [r for r in recipients if r.sendable]
    if limit is not None:
        recipients = recipients[:limit]
    for recipient in recipients:
        yield recipient, composer.compose(recipient, token=new_token(), now=now)


_UNSAFE_RE = re.compile(r"[^A-Za-z0-9@._+-]+")
_PREVIEW_FILE_RE = re.compile(r"^\d{5}-[A-Za-z0-9@._+-]+\.(eml|html|pdf)$")


@dataclass(frozen=True)
class PreviewResult:
    folder: Path
    letters: int
    index: Path


def write_preview(
    letters: Iterator[tuple[Recipient, ComposedLetter]], out: Path, *, title: str = "Preview"
) -> PreviewResult:
    """One .eml and one .html per letter plus index.html, for reviewing in a mail program or browser."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CampaignError(f"{out}: cannot create the preview folder: {exc.strerror}") from exc
    # Letters of an earlier preview in the same folder would otherwise linger beside the new index.
    for stale in out.iterdir():
        if _PREVIEW_FILE_RE.match(stale.name) and stale.is_file():
            stale.unlink()
    rows = []
    count = 0
    for count, (recipient, letter) in enumerate(letters, start=1):
        stem = f"{count:05d}-{_UNSAFE_RE.sub('_', recipient.email)[:80]}"
        (out / f"{stem}.eml").write_bytes(letter.as_bytes())
        (out / f"{stem}.html").write_text(_letter_page(letter), encoding="utf-8")
        links = f'<a href="{stem}.html">brief</a> · <a href="{stem}.eml">.eml</a>'
        pdf = next(
            (p for p in letter.message.iter_attachments() if p.get_content_type() == "application/pdf"), None
        )
        if letter.kenmerk and pdf is not None and (pdf.get_filename() or "").startswith("Brief aan"):
            (out / f"{stem}.pdf").write_bytes(pdf.get_payload(decode=True))  # type: ignore[arg-type]
            links += f' · <a href="{stem}.pdf">PDF</a>'
        status = ""
        if recipient.suppressed:
            status = f"suppressed: {recipient.suppressed}"
        elif recipient.email_problem:
            status = f"invalid: {recipient.email_problem}"
        rows.append(
            "<tr>"
            f"<td>{count}</td><td>{html.escape(recipient.name)}</td><td>{html.escape(recipient.email)}</td>"
            f"<td>{html.escape(recipient.role)}</td><td>{html.escape(recipient.municipality or '')}</td>"
            f"<td>{html.escape(', '.join(letter.envelope_to[1:]))}</td>"
            f"<td>{html.escape(letter.subject)}</td>"
            f"<td>{links}</td>"
            f"<td>{html.escape(status)}</td></tr>"
        )
    index = out / "index.html"
    index.write_text(
        '<!DOCTYPE html>\n<html lang="nl"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style></head><body>\n"
        f"<h1>{html.escape(title)}: {count} letters</h1>\n<table>\n"
        "<tr><th>#</th><th>name</th><th>e-mail</th><th>role</th><th>municipality</th><th>cc</th>"
        "<th>subject</th><th>files</th><th></th></tr>\n" + "\n".join(rows) + "\n</table>\n</body></html>\n",
        encoding="utf-8",
    )
    return PreviewResult(folder=out, letters=count, index=index)


def _letter_page(letter: ComposedLetter) -> str:
    """The HTML part as sent, with the envelope shown above it; a text-only letter in <pre>."""
    message = letter.message
    head = "".join(
        f"<tr><th>{name}</th><td>{html.escape(str(message[name]))}</td></tr>"
        for name in ("From", "To", "Cc", "Reply-To", "Subject", "Date")
        if message[name] is not None
    )
    attachments = ", ".join(html.escape(p.get_filename() or "") for p in message.iter_attachments())
    if attachments:
        head += f"<tr><th>Attachments</th><td>{attachments}</td></tr>"
    banner = (
        '<table style="font:13px sans-serif;background:#eef;margin-bottom:1em;padding:4px">'
        + head
        + "</table>\n"
    )
    if letter.html is not None:
        body = letter.html
        match = re.search(r"<body[^>]*>", body, re.IGNORECASE)
        if match:
            return body[: match.end()] + "\n" + banner + body[match.end() :]
        return banner + body
    return (
        '<!DOCTYPE html>\n<html lang="nl"><head><meta charset="utf-8"></head><body>\n'
        + banner
        + '<pre style="white-space:pre-wrap;font:15px sans-serif">'
        + html.escape(letter.text)
        + "</pre>\n</body></html>\n"
    )


def format_letter(letter: ComposedLetter) -> str:
    """Headers and text as `outreach preview` prints them."""
    message = letter.message
    lines = [
        f"{name}: {message[name]}"
        for name in (
            "From",
            "Reply-To",
            "To",
            "Cc",
            "Subject",
            "Date",
            "Message-ID",
            "List-Unsubscribe",
            "List-Unsubscribe-Post",
            "Auto-Submitted",
        )
        if message[name] is not None
    ]
    lines.append(f"Envelope-To: {', '.join(letter.envelope_to)}")
    for part in message.iter_attachments():
        lines.append(f"Attachment: {part.get_filename()} ({part.get_content_type()})")
    return "\n".join(lines) + "\n\n" + letter.text


# -------------------------------------------------------------------------------------------- approve


def approve_campaign(
    engine: Engine,
    campaign: CampaignConfig,
    approved_by: str,
    *,
    now: datetime | None = None,
    comment: str | None = None,
) -> tuple[ApprovalRecord, CheckReport]:
    """Run the check and, when every letter renders, record the approval of the folder as checked.

    The folder is read first and the campaign read afresh after it, so that what is approved is never
    newer than what was rendered; a file that changes while the check runs voids the approval.
    """
    snapshot = snapshot_folder(campaign.folder)
    campaign = with_web_base_url(load_campaign(campaign.folder.parent, campaign.slug), campaign.web_base_url)
    # The campaign's kenmerk is fixed before the check, so the PDF letters it lays out are the ones that
    # go out (the store finds them again when sending on the same day).
    with engine.begin() as conn:
        store_campaign_kenmerk(conn, campaign, ensure_campaign_row(conn, campaign))
    report = check_campaign(engine, campaign, now=now)
    refuse_unless_ready(campaign, report)
    changes = changes_since(snapshot.files, snapshot_folder(campaign.folder).files)
    if changes:
        raise CampaignError(
            f"campaign {campaign.slug} changed while it was being checked: {', '.join(changes)}",
            hint="approve again when nobody is editing the campaign",
        )
    return record_approval(engine, campaign, approved_by, snapshot=snapshot, comment=comment), report


def refuse_unless_ready(campaign: CampaignConfig, report: CheckReport) -> None:
    """Raise CampaignError when the check found any letter that does not render (approval refused)."""
    if report.ok:
        return
    first = (report.problems + [f"{f.recipient}: {f.message}" for f in report.failures])[0]
    raise CampaignError(
        f"campaign {campaign.slug} cannot be approved: {len(report.failures)} letter(s) fail to render"
        f"{', and ' + '; '.join(report.problems) if report.problems else ''} (first: {first})",
        hint=f"see `outreach check --campaign {campaign.slug}`",
    )
