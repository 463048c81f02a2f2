"""A campaign's PDF letters: one per recipient, made ahead of time in worker processes, read when composed.

Laying out a letter takes 30-100 ms (docs/performance.md#pdf-letters), composing an e-mail a quarter of
a millisecond, so ``outreach send`` never lays out while it sends: :func:`prepare_pdfs` renders every
letter that is not in the :class:`PdfStore` yet, in one process per core, before the first letter goes
out, and the composer (:class:`CampaignPdfs`, inside ``LetterComposer``) finds each one by its content
key. A letter that is missing after all (the date changed at midnight between the two) is laid out by
the composer itself: slower, never wrong.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import encode_rfc2231
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select

from outreach.errors import OutreachError, TemplateError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.kenmerk import campaign_kenmerk, delivery_kenmerk, store_campaign_kenmerk
from outreach.letters.pdf import LetterRenderer
from outreach.letters.pdf_store import PdfStore
from outreach.letters.recipients import Recipient, load_recipients, table
from outreach.letters.render import CampaignTemplates
from outreach.models import Delivery, DeliveryState

if TYPE_CHECKING:
    from outreach.letters.compose import LetterComposer

log = logging.getLogger(__name__)

_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]+')
_CHUNK = 8  # letters per task sent to a worker: enough to hide the pipe, small enough to balance


def attachment_name(recipient: Recipient, kenmerk: str) -> str:
    """'Brief aan J. de Vries – HVK-2026-0003-0412.pdf' (slashes would be folders to a mail program)."""
    who = recipient.name or recipient.municipality or "u"
    name = f"Brief aan {who} – {kenmerk.replace('/', '-')}.pdf"
    return _UNSAFE_NAME.sub("-", name)


def _filename_parameter(name: str) -> str:
    """``filename*`` per RFC 2231, split into continuations of at most 60 characters per line."""
    encoded = encode_rfc2231(name, "utf-8")
    if len(encoded) <= 60:
        return f"filename*={encoded}"
    pieces: list[str] = []
    start = 0
    while start < len(encoded):
        end = min(start + 60, len(encoded))
        # never split a %XX escape
        while end < len(encoded) and "%" in encoded[end - 2 : end]:
            end -= 1
        pieces.append(encoded[start:end])
        start = end
    return ";\r\n ".join(f"filename*{i}*={piece}" for i, piece in enumerate(pieces))


def pdf_part(name: str, data: bytes) -> bytes:
    """The MIME part of a PDF attachment: headers, blank line, base64 in 76-character lines."""
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    head = (
        "Content-Type: application/pdf\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        f"Content-Disposition: attachment;\r\n {_filename_parameter(name)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class CampaignPdfs:
    """The PDF letter of each recipient of one campaign, from the store or laid out on the spot."""

    def __init__(
        self, campaign: CampaignConfig, templates: CampaignTemplates, store: PdfStore | None = None
    ) -> None:
        self.campaign = campaign
        self.templates = templates
        self.store = store
        self.renderer = LetterRenderer(campaign)
        self.laid_out = 0  # letters this instance had to lay out itself (not found in the store)

    def html(self, recipient: Recipient, *, now: datetime, kenmerk: str) -> str:
        # No delivery token in the letter: it is the same on paper (where there is none) and by e-mail,
        # and its cache key does not change with each new token.
        return self.templates.render_letter(recipient, token="", now=now, kenmerk=kenmerk)

    def key(self, html: str) -> str:
        return hashlib.sha256(f"{self.renderer.fingerprint}\n{html}".encode()).hexdigest()

    def where(self, recipient: Recipient) -> str:
        return f"campaign {self.campaign.slug}: {recipient.label}"

    def pdf(self, recipient: Recipient, *, now: datetime, kenmerk: str) -> bytes:
        html = self.html(recipient, now=now, kenmerk=kenmerk)
        key = self.key(html)
        if self.store is not None:
            data = self.store.get(key)
            if data is not None:
                return data
        data = self.renderer.render(html, where=self.where(recipient)).data
        self.laid_out += 1
        if self.store is not None:
            self.store.put(key, data)
        return data

    def part(self, recipient: Recipient, *, now: datetime, kenmerk: str) -> bytes:
        data = self.pdf(recipient, now=now, kenmerk=kenmerk)
        return pdf_part(attachment_name(recipient, kenmerk), data)


# --------------------------------------------------------------------------------------- preparing


@dataclass(frozen=True)
class LetterJob:
    """One letter to prepare: who, with which kenmerk."""

    recipient: Recipient
    kenmerk: str


@dataclass
class PrepareReport:
    letters: int = 0
    cached: int = 0  # found in the store
    rendered: int = 0  # laid out now
    pages: int = 0  # of the letters laid out now
    failures: list[tuple[Recipient, TemplateError]] = field(default_factory=list)


def _start_method() -> str:
    # As the composer process: fork only while this is the only thread (a fork copies held locks).
    import multiprocessing

    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


_worker_renderer: LetterRenderer | None = None
_worker_store: PdfStore | None = None


def _worker_init(campaign: CampaignConfig, store_folder: str) -> None:
    global _worker_renderer, _worker_store
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    _worker_renderer = LetterRenderer(campaign)
    _worker_store = PdfStore(Path(store_folder))
    # What the worker inherited from its parent stays: the collector no longer walks it.
    gc.freeze()


#: Collector thresholds while letters are laid out: with the default (700, 10, 10) the collector ran 5
#: times a letter and through the whole heap every 20 letters, 5.8 ms of a letter's ~65; with these 1.7 ms.
_GC_THRESHOLDS = (10_000, 50, 100)


def _worker_render(tasks: Sequence[tuple[int, str, str, str]]) -> list[tuple[int, int, str | None]]:
    """(index, key, html, where) -> (index, pages, error); the PDF goes to the store, not the pipe."""
    assert _worker_renderer is not None and _worker_store is not None
    results: list[tuple[int, int, str | None]] = []
    thresholds = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)
    try:
        for index, key, html, where in tasks:
            try:
                rendered = _worker_renderer.render(html, where=where)
            except OutreachError as exc:
                results.append((index, 0, exc.message))
                continue
            _worker_store.put(key, rendered.data)
            results.append((index, rendered.pages, None))
    finally:
        gc.set_threshold(*thresholds)
    return results


def _chunks(items: list[tuple[int, str, str, str]], size: int) -> Iterator[list[tuple[int, str, str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prepare_pdfs(
    campaign: CampaignConfig,
    jobs: Iterable[LetterJob],
    *,
    now: datetime,
    store: PdfStore,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport:
    """Lay out, in ``workers`` processes (default: one per core), every letter of ``jobs`` that the
    store does not hold yet; collect the failures (a letter that cannot render or whose address does
    not fit the window) instead of stopping."""
    templates = CampaignTemplates(campaign)
    pdfs = CampaignPdfs(campaign, templates, store)
    report = PrepareReport()
    todo: list[tuple[int, str, str, str]] = []
    recipients: list[Recipient] = []
    for job in jobs:
        report.letters += 1
        try:
            html = pdfs.html(job.recipient, now=now, kenmerk=job.kenmerk)
        except TemplateError as exc:
            report.failures.append((job.recipient, exc))
            continue
        key = pdfs.key(html)
        if store.has(key):
            report.cached += 1
            continue
        recipients.append(job.recipient)
        todo.append((len(recipients) - 1, key, html, pdfs.where(job.recipient)))
    if not todo:
        return report
    store.prune()
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) // _CHUNK + 1))
    results: Iterable[list[tuple[int, int, str | None]]]
    if workers == 1:
        _worker_init_local(campaign, store)
        results = map(_worker_render, _chunks(todo, _CHUNK))
        report = _collect(report, results, recipients, len(todo), progress)
    else:
        import multiprocessing

        context = multiprocessing.get_context(_start_method())
        with context.Pool(workers, initializer=_worker_init, initargs=(campaign, str(store.folder))) as pool:
            results = pool.imap_unordered(_worker_render, _chunks(todo, _CHUNK))
            report = _collect(report, results, recipients, len(todo), progress)
    log.info(
        "campaign %s: %d PDF letters laid out, %d found ready", campaign.slug, report.rendered, report.cached
    )
    return report


def _worker_init_local(campaign: CampaignConfig, store: PdfStore) -> None:
    global _worker_renderer, _worker_store
    _worker_renderer = LetterRenderer(campaign)
    _worker_store = store


def _collect(
    report: PrepareReport,
    results: Iterable[list[tuple[int, int, str | None]]],
    recipients: list[Recipient],
    total: int,
    progress: Callable[[int, int], None] | None,
) -> PrepareReport:
    done = 0
    for batch in results:
        for index, pages, error in batch:
            done += 1
            if error is None:
                report.rendered += 1
                report.pages += pages
            else:
                report.failures.append((recipients[index], TemplateError(error)))
        if progress is not None:
            progress(done, total)
    return report


# ----------------------------------------------------------------------------------- for the sender


def letter_composer(engine: Engine, campaign: CampaignConfig) -> LetterComposer:
    """The composer ``outreach send`` uses: the campaign's stored kenmerk, PDFs from the default store.

    Only reads the database (the composing process never writes)."""
    from outreach.letters.compose import LetterComposer

    with engine.connect() as conn:
        kenmerk = campaign_kenmerk(conn, campaign)
    return LetterComposer(
        campaign, kenmerk=kenmerk, pdf_store=PdfStore.default() if campaign.letter else None
    )


def prepare_for_sending(
    engine: Engine,
    campaign: CampaignConfig,
    campaign_id: int,
    *,
    now: datetime,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareReport | None:
    """Before ``send`` sends: fix the campaign's kenmerk and lay out the PDF letter of every delivery not
    sent yet that the store lacks, in one process per core. None for a campaign without ``[letter]``."""
    with engine.begin() as conn:
        kenmerk = store_campaign_kenmerk(conn, campaign, campaign_id)
    if campaign.letter is None:
        return None
    d = table(Delivery).c
    open_states = (DeliveryState.PENDING.value, DeliveryState.DEFERRED.value, DeliveryState.UNKNOWN.value)
    query = (
        select(d.contact_id)
        .where(d.campaign_id == campaign_id, d.state.in_(open_states), d.contact_id.is_not(None))
        .order_by(d.id)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        recipients = load_recipients(conn, query)
    jobs = [LetterJob(r, delivery_kenmerk(kenmerk, r.contact_id)) for r in recipients.values() if r.sendable]
    if progress is None and sys.stderr.isatty():
        progress = terminal_progress("PDF letters laid out before sending")
    return prepare_pdfs(campaign, jobs, now=now, store=PdfStore.default(), progress=progress)


def terminal_progress(what: str) -> Callable[[int, int], None]:
    """'<what>: 1,200 of 12,000' on one line of the terminal (stderr), at most twice a second."""
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 0.5:
            last[0] = now
            end = "\n" if done == total else ""
            sys.stderr.write(f"\r{what}: {done:,} of {total:,}{end}")
            sys.stderr.flush()

    return show
