"""What a run is asked to do (``SendOptions``), what it did (``SendSummary``), and how it reports progress."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from outreach.errors import UsageError
from outreach.models import DeliveryState
from outreach.sending.retry import RetryPolicy

if TYPE_CHECKING:
    from outreach.sending.claim import Recovery
    from outreach.sending.plan import PlanResult


@dataclass(frozen=True)
class SendOptions:
    dry_run: bool = False
    limit: int | None = None  # at most this many letters in this run
    rate: float | None = None  # letters per second, all domains together; overrides the campaign's
    concurrency: int = 8  # SMTP connections
    retry_unknown: bool = False  # resend letters whose fate is unknown
    ignore_window: bool = False  # send now even outside the campaign's sending window
    outbox: Path | None = None  # --dry-run: where the .eml files go (default outbox/<slug>)
    attempts_per_run: int = 3  # tries of one letter within a run before it waits for the next run
    max_attempts: int = 15  # tries over all runs before a letter is given up (failed)
    backoff_initial: float = 2.0  # seconds before the second try within a run (exponential, jittered)
    backoff_max: float = 60.0
    retry_after: timedelta = timedelta(minutes=15)  # deferred: first wait until the next run may retry
    retry_after_max: timedelta = timedelta(hours=6)
    batch_size: int = 200  # deliveries per claim
    lease: timedelta = timedelta(minutes=2)  # how long a claim holds without renewal
    # Failures of the SMTP server as a whole in a row (refused, silent, every try timing out), with no
    # letter accepted in between, after which the run stops with one line: the server is down.
    connect_attempts: int = 8
    # A recipient destination (domain, MX group) that signals overload pauses for this long once it is
    # down to one letter at a time, doubling per further signal; at the maximum its letters wait for a
    # later run.
    destination_pause: float = 1.0
    destination_pause_max: float = 30.0
    # Claim and compose in a second process (outreach.sending.composer): None decides by the number of
    # letters due (worth its start-up from COMPOSER_PROCESS_MIN letters on); True/False force it.
    compose_process: bool | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.rate is not None and self.rate <= 0:
            raise UsageError(f"--rate must be a positive number of letters per second, not {self.rate}")
        if self.limit is not None and self.limit < 0:
            raise UsageError(f"--limit must not be negative, not {self.limit}")

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            tries_per_run=self.attempts_per_run,
            max_tries=self.max_attempts,
            backoff_initial=self.backoff_initial,
            backoff_max=max(self.backoff_max, self.backoff_initial),
            next_run_delay=self.retry_after,
            next_run_delay_max=self.retry_after_max,
        )


@dataclass
class SendSummary:
    campaign: str
    worker: str = ""
    plan: PlanResult | None = None
    recovery: Recovery | None = None
    due: int = 0  # letters due when the run started (all workers together)
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0  # found unsendable while composing (contact gone)
    held: int = 0  # could not be composed (the template fails for this contact): waits for a change
    written: int = 0  # --dry-run: .eml files written
    outbox: Path | None = None
    dry_run: bool = False
    cancelled: bool = False  # the user declined the confirmation
    interrupted: bool = False  # Ctrl-C or SIGTERM
    window_opens_at: datetime | None = None  # outside the sending window: when it next opens (UTC)
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)  # a few recent failure texts
    counts: dict[str, int] = field(default_factory=dict)  # the campaign's deliveries per state afterwards
    elsewhere: int = 0  # not done, but held by other senders that are still running

    @property
    def left(self) -> int:
        """Deliveries neither sent nor skipped."""
        return sum(
            n for state, n in self.counts.items() if state not in (DeliveryState.SENT, DeliveryState.SKIPPED)
        )

    @property
    def complete(self) -> bool:
        """Every delivery of the campaign is sent or skipped (or in the hands of another live sender)."""
        return self.left <= self.elsewhere

    @property
    def exit_code(self) -> int:
        if self.dry_run:  # a dry run did its job when it wrote every letter it was asked to
            return 0 if self.held == 0 else 1
        return 0 if self.complete else 1

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def note(self, text: str) -> None:
        """Keep a failure text for the summary (the ten most recent)."""
        self.errors.append(text)
        del self.errors[:-10]


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, state: DeliveryState) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, state: DeliveryState) -> None:
        pass

    def stop(self) -> None:
        pass
