"""The send loop: plan, claim, compose ahead, send over a pool of persistent connections, record.

Three kinds of work run side by side so that none waits for the others (issue 4):

- a **producer** claims batches of due deliveries and composes their letters on a thread, keeping a
  buffer of ready letters ahead of the connections;
- **connections** (``--concurrency``) take letters through the ``DomainScheduler`` (global rate,
  per-domain rate and cap) and send them, retrying transient failures with tenacity;
- the **StateWriter** commits the state transitions of all connections in small group transactions.

Every letter is moved to ``sending`` (committed) before its body goes out, and its outcome is committed
before that connection starts the next letter: a crash at any point leaves each delivery either
untouched (resent by the next run), ``sending`` (becomes ``unknown``: never resent automatically), or
with its true outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_any,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from outreach.config import Settings
from outreach.errors import OutreachError, SmtpError, UsageError
from outreach.models import utcnow
from outreach.sending.claim import (
    DEFERRED,
    FAILED,
    HELD,
    PENDING,
    SENDING,
    SENT,
    SKIPPED,
    UNKNOWN,
    ClaimedRow,
    D,
    Recovery,
    due_condition,
    new_worker_id,
    recover_abandoned,
)
from outreach.sending.classify import Classification, Verdict, classify_smtp_error
from outreach.sending.composer import ComposerProcess
from outreach.sending.failures import database_failure
from outreach.sending.jobs import Job, LetterSource
from outreach.sending.plan import RENDER_FAILED, PlanResult, plan_deliveries
from outreach.sending.smtp import ConnectFailedError, ConnectionLostError, SmtpConnection, SmtpReplyError
from outreach.sending.throttle import DomainScheduler, monotonic
from outreach.sending.writer import StateWriter, Transition, WriterFailedError

log = logging.getLogger(__name__)


#: What a database that goes away, locks up or refuses writes raises during a send.
DATABASE_FAILURES = (SQLAlchemyError, WriterFailedError)

#: From this many due letters on, letters are composed in a process of their own (its start-up, about a
#: second of CPU on the other core, then pays for itself).
COMPOSER_PROCESS_MIN = 1_000


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
    connect_attempts: int = 3  # tries to open a connection before that connection slot gives up
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
        return sum(n for state, n in self.counts.items() if state not in (SENT, SKIPPED))

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


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, state: str) -> None: ...
    def stop(self) -> None: ...


class _NoProgress:
    def start(self, total: int) -> None:
        pass

    def advance(self, state: str) -> None:
        pass

    def stop(self) -> None:
        pass


class _Transient(Exception):
    def __init__(self, classification: Classification) -> None:
        super().__init__(classification.text)
        self.classification = classification


class _Stop(Exception):
    """Stop the whole run (auth, TLS, sender refused, database)."""

    def __init__(self, error: OutreachError) -> None:
        super().__init__(error.message)
        self.error = error


def run_send(
    engine: Engine,
    settings: Settings,
    campaign: Any,
    options: SendOptions,
    *,
    confirm: Callable[[int], bool] | None = None,
    progress: Progress | None = None,
    letters: LetterSource | None = None,
    audience: Any = None,
    notify: Callable[[str], None] | None = None,
) -> SendSummary:
    """Send (or, with ``dry_run``, write out) the campaign's due letters. The core of ``outreach send``.

    ``campaign`` is a ``CampaignConfig``. Checks the approval, plans, settles what dead workers left,
    asks ``confirm(due)`` when given, then sends. ``notify(line)`` tells the user at once what a Ctrl-C
    does (default: the log). Raises ``OutreachError`` for problems that stop the
    run before or while sending (not approved, authentication, TLS, the database); a summary otherwise.
    """
    try:
        return _run_send(engine, settings, campaign, options, confirm, progress, letters, audience, notify)
    except DATABASE_FAILURES as exc:  # one line for the user, whichever step met it
        raise database_failure(exc) from exc


def _run_send(
    engine: Engine,
    settings: Settings,
    campaign: Any,
    options: SendOptions,
    confirm: Callable[[int], bool] | None,
    progress: Progress | None,
    letters: LetterSource | None,
    audience: Any,
    notify: Callable[[str], None] | None,
) -> SendSummary:
    from outreach.letters.approval import require_approval

    require_approval(engine, campaign)
    own_letters = letters is None
    if letters is None:
        from outreach.sending.letters import CampaignLetters

        letters = CampaignLetters(engine, campaign)
    summary = SendSummary(campaign=campaign.slug, dry_run=options.dry_run)
    started = time.perf_counter()
    summary.plan = plan_deliveries(engine, campaign, audience=audience, retry_unknown=options.retry_unknown)
    campaign_id = summary.plan.campaign_id
    now = utcnow()
    if not options.dry_run:
        summary.recovery = recover_abandoned(engine, campaign_id=campaign_id, now=now)
    summary.due = count_due(engine, campaign_id, now, retry_unknown=options.retry_unknown)
    if options.limit is not None:
        summary.due = min(summary.due, options.limit)
    if summary.due and own_letters:
        # PDF letters ([letter]) are laid out now, in one process per core, so sending never waits on one.
        from outreach.letters.pdf_letters import prepare_for_sending

        prepare_for_sending(engine, campaign, campaign_id, now=now, limit=options.limit)
    window = None if options.ignore_window else campaign.sending.window
    if summary.due and window is not None and not window.is_open(now) and not options.dry_run:
        summary.window_opens_at = window.next_open(now)
    elif summary.due and confirm is not None and not confirm(summary.due):
        summary.cancelled = True
    elif summary.due and options.dry_run:
        summary.outbox = options.outbox or Path("outbox") / campaign.slug
        _dry_run(engine, campaign, campaign_id, options, letters, summary)
    elif summary.due:
        sender = _Sender(engine, settings, campaign, campaign_id, options, letters, progress or _NoProgress())
        sender.notify = notify or log.warning
        sender.summary = summary
        summary.worker = sender.worker
        # What start-up created (modules, SQLAlchemy's and Jinja's caches, templates) lives as long as the
        # run: the collector's full passes need not walk it again (GC time per 10,000 letters 0.17-0.26 s
        # -> 0.11-0.14 s). Frozen before the composer is forked, so that the child never collects (and
        # finalises) an object it inherited, such as one of this process's database connections.
        gc.freeze()
        # The producer composes letters on a thread; with the default 5 ms switch interval the event
        # loop waits that long for the GIL each time it wants to answer a server. 1 ms keeps the
        # connections fed (measured in bench/send_bench.py).
        switch_interval = sys.getswitchinterval()
        try:
            if _use_composer_process(engine, options, summary.due, own_letters):
                sender.start_composer()
            sys.setswitchinterval(min(switch_interval, 0.001))
            asyncio.run(sender.run())
        finally:
            # No database work here: a second failure (the database is gone) would hide the first.
            gc.unfreeze()
            sys.setswitchinterval(switch_interval)
        if sender.fatal is not None:
            raise sender.fatal
    summary.elapsed = time.perf_counter() - started
    summary.counts, summary.elsewhere = delivery_counts(engine, campaign_id, worker=summary.worker)
    return summary


def _use_composer_process(engine: Engine, options: SendOptions, due: int, own_letters: bool) -> bool:
    # An injected LetterSource runs in this process; an in-memory SQLite database is invisible to another.
    database = engine.url.database
    if not own_letters or (engine.dialect.name == "sqlite" and database in (None, "", ":memory:")):
        return False
    if options.compose_process is not None:
        return options.compose_process
    return due >= COMPOSER_PROCESS_MIN


def count_due(engine: Engine, campaign_id: int, now: datetime, *, retry_unknown: bool) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(
            D.campaign_id == campaign_id,
            due_condition(now, retry_unknown=retry_unknown),  # type: ignore[arg-type]
        )
        return int(conn.execute(query).scalar_one())


def delivery_counts(engine: Engine, campaign_id: int, *, worker: str = "") -> tuple[dict[str, int], int]:
    """Deliveries per state, and how many of those not yet done other live workers hold right now
    (several senders on one campaign: the first to finish must not report the others' work as left).
    One statement, so both numbers come from the same snapshot while other senders keep writing."""
    now = utcnow()
    held = case(
        (
            and_(
                D.state.in_((PENDING, DEFERRED, SENDING, UNKNOWN)),
                D.claimed_by.is_not(None),
                D.claimed_by != worker,
                D.lease_until >= now,
            ),
            1,
        ),
        else_=0,
    )
    counts: dict[str, int] = {}
    elsewhere = 0
    with engine.connect() as conn:
        rows = conn.execute(
            select(D.state, held, func.count()).where(D.campaign_id == campaign_id).group_by(D.state, held)
        ).all()
    for state, is_held, n in rows:
        counts[str(state)] = counts.get(str(state), 0) + int(n)
        if is_held:
            elsewhere += int(n)
    return counts, elsewhere


def _dry_run(
    engine: Engine,
    campaign: Any,
    campaign_id: int,
    options: SendOptions,
    letters: LetterSource,
    summary: SendSummary,
) -> None:
    """Compose every due letter and write it as .eml; no claim, no state change, no SMTP."""
    from outreach.letters.ids import message_id, new_token

    assert summary.outbox is not None
    summary.outbox.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    remaining = summary.due
    last_id = 0
    while remaining > 0:
        with engine.connect() as conn:
            rows = conn.execute(
                select(D.id, D.contact_id, D.state, D.attempts, D.token, D.message_id)
                .where(
                    D.campaign_id == campaign_id,
                    D.id > last_id,
                    due_condition(now, retry_unknown=options.retry_unknown),  # type: ignore[arg-type]
                )
                .order_by(D.id)
                .limit(min(remaining, options.batch_size))
            ).all()
        if not rows:
            break
        last_id = rows[-1].id
        claimed = []
        for row in rows:
            # A letter never claimed has no token yet; the dry run shows a throwaway one.
            token = row.token or new_token()
            mid = row.message_id or message_id(token, campaign.message_domain)
            claimed.append(ClaimedRow(row.id, row.contact_id, row.state, row.attempts, token, mid))
        jobs, unsendable = letters.compose(claimed, now)
        for job in jobs:
            letters.write_eml(job, summary.outbox)
        summary.written += len(jobs)
        for _, reason in unsendable:
            if reason.startswith(RENDER_FAILED):
                summary.held += 1
                summary.errors.append(reason)
            else:
                summary.skipped += 1
        del summary.errors[:-10]
        remaining -= len(rows)


class _Sender:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        campaign: Any,
        campaign_id: int,
        options: SendOptions,
        letters: LetterSource,
        progress: Progress,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.campaign = campaign
        self.campaign_id = campaign_id
        self.options = options
        self.letters = letters
        self.progress = progress
        self.worker = new_worker_id()
        self.summary = SendSummary(campaign=campaign.slug)
        self.fatal: OutreachError | None = None
        sending = campaign.sending
        self.max_per_connection = max(1, int(sending.max_per_connection or 100))
        rate = options.rate if options.rate is not None else sending.rate
        self.scheduler: DomainScheduler[Job] = DomainScheduler(
            rate=rate,
            domain_rate=sending.domain_rate,
            domain_connections=sending.domain_connections or None,
            # Let a fast rate keep every connection busy: GCRA allows this many back to back.
            burst=max(1, min(options.concurrency, int(rate or 1))),
        )
        self.clock = monotonic
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._want_more: asyncio.Event | None = None
        self._producer_done = False
        self._claimed = 0
        self._live_connections = 0
        self._connect_errors: list[str] = []
        self._gave_up = 0
        self._last_gave_up = False  # the last connection slot to end had given up opening a connection
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.composer: ComposerProcess | None = None
        # Per connection: the letter it sends next, whose envelope may already be with the server.
        self._following: dict[SmtpConnection, Job] = {}
        self.notify: Callable[[str], None] = log.warning
        self._in_flight: set[int] = set()  # deliveries marked ``sending`` whose outcome is not known yet
        self._connecting: set[asyncio.Task[Any]] = set()  # slots opening a connection (no letter marked)
        # Marked ``sending`` but stopped before the body was written: they go back to the queue as they
        # were (delivery id -> state before this try), not to ``unknown``.
        self._not_handed_over: dict[int, str] = {}
        self._hard_stop: asyncio.TimerHandle | None = None

    def start_composer(self) -> None:
        """Claim and compose in a second process. It starts in the background; until it is ready, the
        producer composes on a thread as without it."""
        url = self.engine.url.render_as_string(hide_password=False)
        try:
            self.composer = ComposerProcess(url, self.campaign)
        except OSError as exc:  # fork or spawn refused (out of memory, process limit): compose here
            log.warning("composing in this process: cannot start a composer process: %s", exc)

    # --------------------------------------------------------------------------------- lifecycle

    def stop(self, reason: str | None = None) -> None:
        if not self._stopping:
            self._stopping = True
            if reason:
                log.info("stopping: %s", reason)
        assert self._stop_event is not None and self._changed is not None and self._want_more is not None
        self._stop_event.set()
        self._changed.set()
        self._want_more.set()

    def _on_signal(self) -> None:
        self._signals += 1
        self.summary.interrupted = True
        if self._signals == 1:
            in_flight = len(self._in_flight)
            # Each letter in flight waits for at most one more reply's timeout; then the stop is hard.
            grace = max(1, math.ceil(self.settings.smtp_timeout))
            if in_flight:
                letters = "letter" if in_flight == 1 else "letters"
                self.notify(
                    f"Stopping: waiting for {in_flight} {letters} in flight (at most {grace} s); "
                    f"Ctrl-C again to stop now"
                )
            else:
                self.notify("Stopping: no letter in flight.")
            self.stop("interrupted")
            for task in list(self._connecting):
                task.cancel()  # no letter of theirs is marked ``sending``: nothing to wait for
            self._hard_stop = asyncio.get_running_loop().call_later(grace, self._stop_now)
        else:
            self._stop_now()

    def _stop_now(self) -> None:
        """A second Ctrl-C, or the first one's wait ran out: letters whose body was written become
        ``unknown``, the others go back to the queue (``_settle``)."""
        for task in self._tasks:
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._want_more = asyncio.Event()
        self._want_more.set()
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal)
        writer = self.writer = StateWriter(
            self.engine,
            campaign_id=self.campaign_id,
            worker=self.worker,
            lease=self.options.lease,
            retry_unknown=self.options.retry_unknown,
            message_domain=self.campaign.message_domain,
        )
        writer.start()
        self.progress.start(self.summary.due)
        producer = loop.create_task(self._produce(), name="outreach-producer")
        renewer = loop.create_task(self._renew(), name="outreach-lease")
        self._tasks = [
            loop.create_task(self._connection(n), name=f"outreach-smtp-{n}")
            for n in range(self.options.concurrency)
        ]
        self._live_connections = len(self._tasks)
        try:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, _Stop):
                    self.fatal = self.fatal or result.error
                elif isinstance(result, DATABASE_FAILURES):
                    self.fatal = self.fatal or database_failure(result)
                elif isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    raise result
            self.stop()
            await producer
            renewer.cancel()
            # Slots with nothing to do end early (a --limit below --concurrency): what matters is whether
            # the letters left were held by slots that could not connect.
            if self.fatal is None and self._last_gave_up and self._connect_errors:
                self.fatal = SmtpError(
                    f"cannot open a connection: {self._connect_errors[-1]}",
                    hint="check OUTREACH_SMTP_HOST and OUTREACH_SMTP_PORT, or try again later",
                )
            elif self._gave_up and self._connect_errors:
                self.summary.errors.append(f"cannot open a connection: {self._connect_errors[-1]}")
        finally:
            if self._hard_stop is not None:
                self._hard_stop.cancel()
            for task in (producer, renewer):
                task.cancel()
            self.progress.stop()
            try:
                await self._settle()
            finally:
                if in_main:
                    for signum in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(signum)

    async def _settle(self) -> None:
        """Return unsent claims to the pool; anything still ``sending`` (hard stop) becomes ``unknown``."""
        if self.composer is not None:
            # First: a claim the composer is making now must be committed before the claims are given back.
            await asyncio.to_thread(self.composer.close)
        writer = self.writer
        try:
            if writer.error is None:
                await writer.flush()
                await asyncio.to_thread(self._requeue_not_handed_over)
                self.summary.unknown += await asyncio.to_thread(self._mark_own_sending_unknown)
                await writer.release(None)
        except DATABASE_FAILURES as exc:
            # Rows left ``sending`` or claimed are settled by the next run (recover_abandoned).
            if self.fatal is None:
                self.fatal = database_failure(exc)
        finally:
            try:
                await writer.close()
            except DATABASE_FAILURES as exc:
                if self.fatal is None:
                    self.fatal = database_failure(exc)

    def _requeue_not_handed_over(self) -> None:
        """Letters stopped before their body was written go back as they were: the server cannot have
        them, and the try did not count."""
        if not self._not_handed_over:
            return
        from sqlalchemy import bindparam, update

        from outreach.sending.claim import DELIVERY

        statement = (
            update(DELIVERY)
            .where(D.id == bindparam("b_id"), D.claimed_by == self.worker, D.state == SENDING)
            .values(
                state=bindparam("b_state"),
                attempts=case((D.attempts > 0, D.attempts - 1), else_=0),
                claimed_by=None,
                lease_until=None,
                updated_at=utcnow(),
            )
        )
        rows = [{"b_id": i, "b_state": state} for i, state in self._not_handed_over.items()]
        with self.engine.begin() as conn:
            conn.execute(statement, rows)

    def _mark_own_sending_unknown(self) -> int:
        """What is still ``sending`` was handed over (or may have been) when the run stopped hard."""
        from sqlalchemy import update

        from outreach.sending.claim import DELIVERY

        with self.engine.begin() as conn:
            result = conn.execute(
                update(DELIVERY)
                .where(D.campaign_id == self.campaign_id, D.claimed_by == self.worker, D.state == SENDING)
                .values(
                    state=UNKNOWN,
                    lease_until=None,
                    last_error="stopped while handing this letter over; the server may have it",
                    updated_at=utcnow(),
                )
            )
            return int(result.rowcount)

    async def _renew(self) -> None:
        interval = max(1.0, self.options.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            self.writer.renew()

    # ---------------------------------------------------------------------------------- producer

    async def _produce(self) -> None:
        """Claim and compose ahead of the connections until nothing is due or the run stops."""
        assert self._want_more is not None and self._changed is not None
        options = self.options
        limit = options.limit if options.limit is not None else math.inf
        low_water = self._low_water()
        window = None if options.ignore_window else self.campaign.sending.window
        try:
            while not self._stopping and self._claimed < limit:
                if len(self.scheduler) >= low_water:
                    self._want_more.clear()
                    await self._want_more.wait()
                    continue
                now = utcnow()
                if window is not None and not window.is_open(now):
                    self.summary.window_opens_at = window.next_open(now)
                    self.stop("the sending window closed")
                    break
                size = int(min(options.batch_size, limit - self._claimed))
                rows, jobs, unsendable = await self._claim_and_compose(size, now)
                if not rows:
                    # Before calling it a day: rows of a worker that died meanwhile (on PostgreSQL, in
                    # another process) come back to the pool now rather than at the next run.
                    recovery = await asyncio.to_thread(
                        recover_abandoned,
                        self.engine,
                        campaign_id=self.campaign_id,
                        now=utcnow(),
                        exclude=self.worker,
                    )
                    if recovery.released:
                        continue
                    break
                self._claimed += len(rows)
                for row, reason in unsendable:
                    # A letter the template cannot render for this contact is held, not skipped: it is
                    # a problem to show, and planning tries it again once the campaign or contact changed.
                    state = HELD if reason.startswith(RENDER_FAILED) else SKIPPED
                    self.writer.record(Transition(row.id, state, error=reason))
                    if state == HELD:
                        self.summary.held += 1
                        self._note_text(reason)  # names the recipient, template and line
                    else:
                        self.summary.skipped += 1
                    self.progress.advance(state)
                for job in jobs:
                    self.scheduler.add(job.domain, job)
                self._changed.set()
        except OutreachError as exc:
            # A template that cannot be rendered for a recipient: stop before sending anything broken.
            if self.fatal is None:
                self.fatal = exc
            self.stop(exc.message)
        except DATABASE_FAILURES as exc:  # a claim or the recovery of dead senders' rows
            if self.fatal is None:
                self.fatal = database_failure(exc)
            self.stop(self.fatal.message)
        finally:
            self._producer_done = True
            self._changed.set()

    def _low_water(self) -> int:
        # With a composer process the next batch is composed while the connections empty the buffer,
        # so the buffer must last longer than composing one batch takes.
        batches = 2 if self.composer is not None else 1
        return max(self.options.batch_size * batches, self.options.concurrency * 4)

    async def _claim_and_compose(
        self, size: int, now: datetime
    ) -> tuple[list[ClaimedRow], list[Job], list[tuple[ClaimedRow, str]]]:
        rows = await self.writer.claim(size, now)
        if not rows:
            return [], [], []
        composer = self.composer
        # Automatic: compose here until the composer process has started. Forced: wait for it.
        use_composer = composer is not None and (composer.ready or self.options.compose_process is True)
        compose = composer.compose if composer is not None and use_composer else self.letters.compose
        jobs, unsendable = await asyncio.to_thread(compose, rows, now)
        return rows, jobs, unsendable

    # -------------------------------------------------------------------------------- connections

    def _take(self) -> tuple[Job | None, float]:
        """``DomainScheduler.take`` now; below the low-water mark the producer is asked for more."""
        assert self._want_more is not None
        job, wait = self.scheduler.take(self.clock())
        if len(self.scheduler) < self._low_water():
            self._want_more.set()
        return job, wait

    async def _next_job(self) -> Job | None:
        assert self._changed is not None
        while not self._stopping:
            job, wait = self._take()
            if job is not None:
                return job
            if self._producer_done and len(self.scheduler) == 0:
                return None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=None if math.isinf(wait) else wait)
        return None

    async def _connection(self, number: int) -> None:
        assert self._changed is not None
        connection = SmtpConnection(self.settings, local_hostname=self.campaign.message_domain)
        gave_up = False
        try:
            while True:
                job = self._following.pop(connection, None)
                if job is not None and self._stopping:
                    # Taken to follow the last letter, but the run is stopping: it stays unsent (its
                    # claim is given back when the run settles).
                    self.scheduler.done(job.domain, self.clock())
                    job = None
                if job is None:
                    job = await self._next_job()
                if job is None:
                    return
                try:
                    await self._deliver(connection, job)
                finally:
                    self.scheduler.done(job.domain, self.clock())
                    self._changed.set()
                if connection.sent >= self.max_per_connection:
                    await connection.close()
        except _ConnectGaveUpError:
            self._gave_up += 1
            gave_up = True
            return
        except (_Stop, WriterFailedError):
            self.stop()
            raise
        finally:
            self._live_connections -= 1
            left = self._following.pop(connection, None)
            if left is not None:
                if not self._stopping:  # this connection gave up: another one takes the letter
                    self.scheduler.add(left.domain, left)
                self.scheduler.done(left.domain, self.clock())
                self._changed.set()
            await connection.close()
            if self._live_connections == 0:
                self._last_gave_up = gave_up
                self.stop()

    def _follow(self, connection: SmtpConnection) -> Job | None:
        """The letter this connection sends after the current one, taken now so that its envelope can
        go out behind the current body (``SmtpConnection.send``). Only when a job may go at once, the
        connection has room for it, and enough letters are waiting that no idle connection goes short."""
        job = self._following.get(connection)
        if job is None:
            if (
                self._stopping
                or not connection.pipelining
                or connection.sent + 1 >= self.max_per_connection
                or len(self.scheduler) <= self.options.concurrency
            ):
                return None
            job, _ = self._take()
            if job is None:
                return None
            self._following[connection] = job
        return job if len(job.recipients) == 1 else None

    async def _interruptible_sleep(self, seconds: float) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _deliver(self, connection: SmtpConnection, job: Job) -> None:
        # Most letters go through on the first try: building tenacity's retry machinery for each of
        # them cost about a quarter of the event loop's time per letter (py-spy), so it is built only
        # when a try failed. Replaying that failure as tenacity's first attempt keeps the schedule and
        # the stop conditions exactly as if tenacity had run it.
        try:
            await self._attempt(connection, job)
            return
        except _Transient as exc:
            first_failure: _Transient | None = exc
        options = self.options
        retrying = AsyncRetrying(
            stop=stop_any(stop_after_attempt(options.attempts_per_run), _StopWhen(lambda: self._stopping)),
            wait=wait_exponential_jitter(
                multiplier=options.backoff_initial, jitter=options.backoff_initial, max=options.backoff_max
            ),
            retry=retry_if_exception_type(_Transient),
            sleep=self._interruptible_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if first_failure is not None:
                        failure, first_failure = first_failure, None
                        raise failure
                    await self._attempt(connection, job)
        except _Transient as exc:
            if job.attempted:
                self._finish_deferred(job, exc.classification)
            if not connection.is_open and self._connect_failed_streak(connection):
                raise _ConnectGaveUpError from None

    def _connect_failed_streak(self, connection: SmtpConnection) -> bool:
        return connection.connect_failures >= self.options.connect_attempts

    async def _attempt(self, connection: SmtpConnection, job: Job) -> None:
        if job.attempted and self._stopping:
            raise _Transient(Classification(Verdict.TRANSIENT, None, "stopped before the next try"))
        if not connection.is_open:
            task = asyncio.current_task()
            assert task is not None
            self._connecting.add(task)
            try:
                await connection.open()
            except ConnectFailedError as exc:
                self._connect_errors.append(exc.text)
                del self._connect_errors[:-5]
                raise _Transient(classify_smtp_error(exc)) from None
            except SmtpError as exc:
                raise _Stop(exc) from None
            finally:
                self._connecting.discard(task)
        try:
            marked = await self.writer.mark_sending(job.row.id)
        except asyncio.CancelledError:
            self._not_handed_over[job.row.id] = job.row.state  # the mark may still commit
            raise
        if not marked:
            log.warning("delivery %s: claim lost to another worker; not sending", job.row.id)
            if connection.next_envelope_for(job.row.id):
                connection.abort()  # the server awaits this letter's body; it must not get it
            return
        job.attempted = True
        job.tries += 1
        follow = self._follow(connection)
        then = None if follow is None else (follow.row.id, follow.sender, follow.recipients, follow.body)
        self._in_flight.add(job.row.id)
        try:
            result = await connection.send(job.sender, job.recipients, job.body, key=job.row.id, then=then)
        except asyncio.CancelledError:
            if not connection.handed_over:
                self._not_handed_over[job.row.id] = job.row.state
            raise
        except (SmtpReplyError, ConnectionLostError) as exc:
            outcome = classify_smtp_error(exc)
        else:
            note = None
            if result.refused:
                note = "; ".join(f"copy to {a} refused: {c} {t}" for a, (c, t) in result.refused.items())
            self.writer.record(Transition(job.row.id, SENT, code=result.code, error=note, sent_at=utcnow()))
            self.summary.sent += 1
            self.progress.advance(SENT)
            return
        finally:
            self._in_flight.discard(job.row.id)
        if outcome.verdict is Verdict.TRANSIENT:
            self.writer.record(
                Transition(
                    job.row.id,
                    DEFERRED,
                    code=outcome.code,
                    error=outcome.text,
                    next_attempt_at=utcnow(),
                    keep_claim=True,
                )
            )
            raise _Transient(outcome)
        if outcome.verdict is Verdict.PERMANENT:
            self.writer.record(Transition(job.row.id, FAILED, code=outcome.code, error=outcome.text))
            self.summary.failed += 1
            self._note_error(job, outcome)
            self.progress.advance(FAILED)
            return
        if outcome.verdict is Verdict.UNKNOWN:
            self.writer.record(Transition(job.row.id, UNKNOWN, code=outcome.code, error=outcome.text))
            self.summary.unknown += 1
            self._note_error(job, outcome)
            self.progress.advance(UNKNOWN)
            return
        # STOP: the server refuses our session or sender; this letter was not taken. Put it back as it was.
        self.writer.record(
            Transition(job.row.id, job.row.state, code=outcome.code, error=outcome.text, keep_claim=True)
        )
        raise _Stop(
            SmtpError(
                f"{connection.where}: the server refuses to send for us: {outcome.code} {outcome.text}",
                hint="check the campaign's from address and the SMTP account",
            )
        )

    def _finish_deferred(self, job: Job, classification: Classification) -> None:
        total = job.row.attempts + job.tries
        if total >= self.options.max_attempts:
            text = f"gave up after {total} attempts: {classification.text}"
            self.writer.record(Transition(job.row.id, FAILED, code=classification.code, error=text))
            self.summary.failed += 1
            self._note_error(job, classification)
            self.progress.advance(FAILED)
            return
        rounds = max(0, total // self.options.attempts_per_run - 1)
        delay = min(self.options.retry_after * (2**rounds), self.options.retry_after_max)
        delay *= random.uniform(0.9, 1.1)  # spread retries of a greylisting domain over time
        self.writer.record(
            Transition(
                job.row.id,
                DEFERRED,
                code=classification.code,
                error=classification.text,
                next_attempt_at=utcnow() + delay,
            )
        )
        self.summary.deferred += 1
        self._note_error(job, classification)
        self.progress.advance(DEFERRED)

    def _note_error(self, job: Job, classification: Classification) -> None:
        code = f"{classification.code} " if classification.code else ""
        self._note_text(f"{job.recipients[0]}: {code}{classification.text}")

    def _note_text(self, text: str) -> None:
        self.summary.errors.append(text)
        del self.summary.errors[:-10]


class _StopWhen(stop_base):
    """Stop retrying once the run is stopping (Ctrl-C, window closed): the letter waits for next run."""

    def __init__(self, flag: Callable[[], bool]) -> None:
        self._flag = flag

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._flag()


class _ConnectGaveUpError(Exception):
    """This connection slot could not open a connection after its tries; it stops."""
