"""From claimed deliveries to letters ready for SMTP, with the letters package's composer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from outreach.db import reader
from outreach.errors import AddressError, HeaderInjectionError, TemplateError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.ids import verp_address
from outreach.letters.pdf_letters import letter_composer
from outreach.letters.recipients import load_recipients
from outreach.sending.claim import ClaimedRow
from outreach.sending.jobs import Job
from outreach.sending.plan import RENDER_FAILED, SKIP_FORGOTTEN, SKIP_INVALID, SKIP_SUPPRESSED

if TYPE_CHECKING:
    from outreach.sending.dkim import DkimSigner

_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9@._+-]")


def reading_engine(engine: Engine) -> Engine:
    """An engine for the recipients query that takes no lock on SQLite (``outreach.db.reader``).

    Writers begin SQLite transactions with ``BEGIN IMMEDIATE``; reading the recipients of a batch under
    it would make the state writer wait once per batch. The reader shares the engine's pool, so closing
    the engine closes it too (a second engine of its own was never closed, and left the WAL behind).
    """
    return reader(engine)


class CampaignLetters:
    """``LetterSource`` for a campaign: one query for the recipients of a batch, then compose (and sign)."""

    def __init__(self, engine: Engine, campaign: CampaignConfig) -> None:
        self._engine = reading_engine(engine)
        self._campaign = campaign
        self._composer = letter_composer(self._engine, campaign)
        sending = campaign.sending
        self._signer: DkimSigner | None = None
        if sending.dkim_key_file is not None:
            # dkimpy (and the crypto it loads) only when a campaign signs: ~50 ms of every start-up.
            from outreach.sending.dkim import DkimSigner

            key_file = sending.dkim_key_file
            if not key_file.is_absolute():
                key_file = campaign.folder / key_file
            self._signer = DkimSigner(
                sending.dkim_selector or "default",
                sending.dkim_domain or campaign.message_domain,
                key_file,
            )

    def _envelope_sender(self, token: str) -> str:
        verp_local = self._campaign.sending.verp_local
        if verp_local:
            return verp_address(token, verp_local, self._campaign.message_domain)
        return self._campaign.from_address

    def compose(
        self, rows: Sequence[ClaimedRow], now: datetime
    ) -> tuple[list[Job], list[tuple[ClaimedRow, str]]]:
        with self._engine.connect() as conn:
            recipients = load_recipients(conn, [row.contact_id for row in rows if row.contact_id is not None])
        jobs: list[Job] = []
        unsendable: list[tuple[ClaimedRow, str]] = []
        composer, signer = self._composer, self._signer
        for row in rows:
            recipient = recipients.get(row.contact_id) if row.contact_id is not None else None
            if recipient is None:
                unsendable.append((row, SKIP_FORGOTTEN))
                continue
            if recipient.suppressed is not None:
                unsendable.append((row, f"{SKIP_SUPPRESSED}: {recipient.suppressed}"))
                continue
            if recipient.email_problem is not None:
                unsendable.append((row, f"{SKIP_INVALID}: {recipient.email_problem}"))
                continue
            try:
                letter = composer.compose(recipient, token=row.token, now=now)
            except (AddressError, HeaderInjectionError) as exc:
                # The registry holds something that cannot go on an envelope or in a header for this one
                # person; the letter is skipped, the rest of the campaign goes on.
                unsendable.append((row, f"{SKIP_INVALID}: {exc.message}"))
                continue
            except TemplateError as exc:
                # Approval rendered every letter, but this contact was added or changed since: nothing
                # half-rendered leaves; the reason (recipient, template, line, field) stays on the row.
                unsendable.append((row, f"{RENDER_FAILED}: {exc.message}"))
                continue
            body = letter.as_bytes()
            if signer is not None:
                body = signer.sign(body)
            to = letter.envelope_to
            jobs.append(
                Job(row, self._envelope_sender(row.token), to, body, to[0].rpartition("@")[2].lower())
            )
        return jobs, unsendable

    def write_eml(self, job: Job, folder: Path) -> Path:
        name = _UNSAFE_FILE_CHARS.sub("_", job.recipients[0])
        path = folder / f"{job.row.id:07d}-{name}.eml"
        path.write_bytes(job.body)
        return path
