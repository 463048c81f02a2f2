"""Letters on paper: ``outreach print`` writes one PDF for the print shop and a CSV of the addresses.

Who gets a paper letter: everyone in the audience without an e-mail address (the register lists many
office holders without one), or with ``everyone`` every letter that has not gone out yet. Each is
recorded as delivered on paper (state ``printed``), exactly once like the e-mail path: the rows are
marked in the same transaction that writes the files, only rows still waiting are marked (a letter a
sender took meanwhile is not printed), and a second run prints nothing new unless ``reprint`` is asked
(then the letters already printed are written again and nothing is recorded). Suppressed people (opt-out)
are never printed: their deliveries are skipped by planning as for e-mail.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, and_, or_, select, update

from outreach import csvfiles
from outreach.csvfiles import neutralise
from outreach.errors import CampaignError, TemplateError
from outreach.letters.address import MAX_LINES
from outreach.letters.campaign import CampaignConfig
from outreach.letters.dates import amsterdam_date
from outreach.letters.kenmerk import delivery_kenmerk, store_campaign_kenmerk
from outreach.letters.pdf_letters import CampaignPdfs, LetterJob, prepare_pdfs
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import Recipient, load_recipients, table
from outreach.letters.render import CampaignTemplates
from outreach.models import Contact, Delivery, DeliveryState, utcnow
from outreach.registry.keys import fold

PRINTED = DeliveryState.PRINTED.value
_WAITING = (DeliveryState.PENDING.value, DeliveryState.DEFERRED.value, DeliveryState.HELD.value)


@dataclass
class PrintResult:
    campaign: str
    letters: int = 0
    pages: int = 0
    sheets: int = 0
    pdf: Path | None = None
    addresses: Path | None = None
    reprint: bool = False
    without_email: int = 0  # of the letters: recipients without an e-mail address
    failures: list[str] = field(default_factory=list)


def safe_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run as a formula (CSV injection): a leading quote neutralises.
    Numbers too, as text: "-2" in an address line is not a sum (outreach.csvfiles does the rest)."""
    return str(neutralise("" if value is None else str(value)))


def _candidates(conn: Connection, campaign_id: int, *, everyone: bool, reprint: bool) -> list[int]:
    d = table(Delivery).c
    mine = d.campaign_id == campaign_id
    condition = and_(mine, d.state == PRINTED) if reprint else _still_waiting(everyone, mine)
    return [int(i) for i in conn.execute(select(d.id).where(condition).order_by(d.id)).scalars()]  # type: ignore[arg-type]


def print_letters(
    engine: Engine,
    campaign: CampaignConfig,
    out: Path,
    *,
    everyone: bool = False,
    reprint: bool = False,
    duplex: bool = False,
    now: datetime | None = None,
    workers: int | None = None,
) -> PrintResult:
    """Print the campaign's paper letters into ``out``: ``<slug>-<date>-brieven.pdf`` (every letter, in
    the order of the CSV) and ``<slug>-<date>-adressen.csv``. Raises CampaignError (not approved, no
    ``[letter]``, nothing to print is not an error) and TemplateError (a letter cannot be laid out: then
    nothing is printed or recorded)."""
    from outreach.letters.approval import require_approval
    from outreach.sending.plan import plan_deliveries

    now = now or utcnow()
    if campaign.letter is None:
        raise CampaignError(
            f"campaign {campaign.slug} has no letter to print",
            hint="add a [letter] section to campaign.toml (docs/campaigns.md, The formal letter)",
        )
    require_approval(engine, campaign)
    plan = plan_deliveries(engine, campaign)
    with engine.begin() as conn:
        kenmerk = store_campaign_kenmerk(conn, campaign, plan.campaign_id)
        ids = _candidates(conn, plan.campaign_id, everyone=everyone, reprint=reprint)
    result = PrintResult(campaign=campaign.slug, reprint=reprint)
    if not ids:
        return result
    d = table(Delivery).c
    with engine.connect() as conn:
        rows = conn.execute(select(d.id, d.contact_id).where(d.id.in_(ids))).all()
        contact_of = {int(row.id): row.contact_id for row in rows}
        recipients = load_recipients(conn, [c for c in contact_of.values() if c is not None])
    order = sorted(
        ((delivery_id, recipients[contact_id]) for delivery_id, contact_id in contact_of.items()),
        key=lambda item: (fold(item[1].municipality or ""), fold(item[1].achternaam or ""), item[0]),
    )
    store = PdfStore.default()
    jobs = [LetterJob(r, delivery_kenmerk(kenmerk, r.contact_id)) for _, r in order]
    prepared = prepare_pdfs(campaign, jobs, now=now, store=store, workers=workers)
    if prepared.failures:
        _, error = prepared.failures[0]
        raise TemplateError(
            f"campaign {campaign.slug}: {len(prepared.failures)} letter(s) cannot be laid out; nothing"
            f" printed (first: {error.message})",
            hint=f"see `outreach check --campaign {campaign.slug}`",
        )
    pdfs = CampaignPdfs(campaign, CampaignTemplates(campaign), store)
    stem = f"{campaign.slug}-{amsterdam_date(now):%Y-%m-%d}"
    pdf_path, csv_path = out / f"{stem}-brieven.pdf", out / f"{stem}-adressen.csv"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CampaignError(f"{out}: cannot create the folder: {exc.strerror}") from exc
    written: list[Path] = []
    try:
        with engine.begin() as conn:
            if reprint:
                printed = list(order)
            else:
                # Only rows still waiting now: a sender (or another print) that took one meanwhile wins.
                conn.execute(
                    update(table(Delivery))
                    .where(_still_waiting(everyone, d.id.in_(ids)))  # type: ignore[arg-type]
                    .values(
                        state=PRINTED,
                        sent_at=now,
                        updated_at=now,
                        skip_reason=None,
                        claimed_by=None,
                        lease_until=None,
                        last_error=None,
                    )
                )
                mine = set(
                    conn.execute(
                        select(d.id).where(d.id.in_(ids), d.state == PRINTED, d.sent_at == now)
                    ).scalars()
                )
                printed = [item for item in order if item[0] in mine]
            if not printed:
                return result
            letters = [
                (r, pdfs.pdf(r, now=now, kenmerk=delivery_kenmerk(kenmerk, r.contact_id))) for _, r in printed
            ]
            written.append(_write_atomically(pdf_path, _batch_pdf(letters, duplex, result)))
            kenmerken = [delivery_kenmerk(kenmerk, r.contact_id) for r, _ in letters]
            written.append(_write_atomically(csv_path, _addresses_csv(pdfs, letters, kenmerken, now)))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    result.letters = len(letters)
    result.without_email = sum(1 for r, _ in letters if not r.email)
    result.pdf, result.addresses = pdf_path, csv_path
    return result


def _still_waiting(everyone: bool, among: object) -> object:
    """The WHERE of the marking UPDATE: the rows of ``among`` still waiting for a paper letter."""
    from outreach.sending.plan import SKIP_NO_EMAIL

    d, c = table(Delivery).c, table(Contact).c
    no_email = select(c.id).where(or_(c.email_normalized.is_(None), c.email_normalized == ""))
    without = or_(
        and_(d.state == DeliveryState.SKIPPED.value, d.skip_reason == SKIP_NO_EMAIL),
        and_(d.state.in_(_WAITING), d.contact_id.in_(no_email)),
    )
    waiting = or_(without, d.state.in_(_WAITING)) if everyone else without
    return and_(among, waiting)  # type: ignore[arg-type]


def _batch_pdf(letters: Sequence[tuple[Recipient, bytes]], duplex: bool, result: PrintResult) -> bytes:
    """Every letter in one PDF; with ``duplex`` a blank page after a letter with an odd page count, so
    that each letter starts on a sheet of its own."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for _, data in letters:
        reader = PdfReader(io.BytesIO(data))
        for page in reader.pages:
            writer.add_page(page)
        pages = len(reader.pages)
        result.pages += pages
        result.sheets += (pages + 1) // 2 if duplex else pages
        if duplex and pages % 2:
            box = reader.pages[-1].mediabox
            writer.add_blank_page(width=float(box.width), height=float(box.height))
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _addresses_csv(
    pdfs: CampaignPdfs, letters: Sequence[tuple[Recipient, bytes]], kenmerken: list[str], now: datetime
) -> bytes:
    """nr;kenmerk;pagina's;adresregel 1..6: the order of the PDF, for the print shop's envelopes."""
    out = io.StringIO()
    writer = csvfiles.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["nr", "kenmerk", "paginas", *(f"adresregel {i}" for i in range(1, MAX_LINES + 1))])
    from pypdf import PdfReader

    for number, ((recipient, data), kenmerk) in enumerate(zip(letters, kenmerken, strict=True), start=1):
        context = pdfs.templates.context(recipient, token="", now=now, kenmerk=kenmerk)
        lines = [line.replace("\u00a0", " ") for line in context["adres"]][:MAX_LINES]
        pages = len(PdfReader(io.BytesIO(data)).pages)
        cells = [number, kenmerk, pages, *lines, *([""] * (MAX_LINES - len(lines)))]
        writer.writerow([safe_cell(cell) for cell in cells])
    # utf-8-sig: Excel opens it with the right accents (Súdwest-Fryslân) by double-click.
    return out.getvalue().encode("utf-8-sig")


def _write_atomically(path: Path, data: bytes) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise CampaignError(f"{path}: cannot write: {exc.strerror}") from exc
    return path
