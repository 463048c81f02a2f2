"""A letter ready for SMTP, and what produces them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from outreach.sending.claim import ClaimedRow
from outreach.sending.smtp import Letter


@dataclass(slots=True)
class Job:
    row: ClaimedRow
    sender: str  # envelope sender (VERP or the From address)
    recipients: list[str]  # addressee first, then copies
    body: bytes
    domain: str  # the addressee's domain, for throttling
    attempted: bool = False  # moved to ``sending`` at least once in this run
    tries: int = 0  # tries in this run
    counted: int = 0  # of those, tries that count against the letter (not failures of a destination)
    group: str | None = None  # the MX provider group of ``domain`` (outreach.sending.mx), when known

    def letter(self) -> Letter:
        return Letter(self.row.id, self.sender, self.recipients, self.body)


class LetterSource(Protocol):
    """Turns claimed deliveries into ready-to-send letters. Runs on a worker thread."""

    def compose(
        self, rows: Sequence[ClaimedRow], now: datetime
    ) -> tuple[list[Job], list[tuple[ClaimedRow, str]]]:
        """``(jobs, unsendable)``: letters ready for SMTP, and rows that must be skipped, with why."""
        ...

    def write_eml(self, job: Job, folder: Path) -> Path: ...
