"""One sender at work: its tasks, signals and shared state, and how it settles when it stops.

A ``Worker`` runs, on one event loop, the producer (``outreach.sending.producer``: claim and compose
ahead), ``--concurrency`` connection slots (``outreach.sending.slot``), the state writer
(``outreach.sending.writer``: group commits) and the lease renewal. The slots share the scheduler
(``throttle.DomainScheduler``: global rate, each recipient domain's and MX group's limits and feedback)
and the SMTP server's own destination state: when the server fails as a whole or says it is busy, fewer
slots work and they pause; when it is plainly down, the run stops with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from outreach.config import Settings
from outreach.errors import OutreachError, SmtpError
from outreach.letters.campaign import CampaignConfig
from outreach.models import DeliveryState, utcnow
from outreach.sending.claim import mark_sending_unknown, new_worker_id, requeue_not_handed_over
from outreach.sending.classify import Classification
from outreach.sending.destination import Destination, DestinationLimits, Signal
from outreach.sending.errors import StopRun, WriterFailedError
from outreach.sending.failures import database_failure
from outreach.sending.jobs import Job, LetterSource
from outreach.sending.mx import MxGroups, MxResolver
from outreach.sending.outcome import Outcomes
from outreach.sending.producer import Producer
from outreach.sending.slot import ConnectionSlot
from outreach.sending.summary import Progress, SendOptions, SendSummary
from outreach.sending.throttle import DomainScheduler, monotonic
from outreach.sending.writer import StateWriter

log = logging.getLogger(__name__)

#: What a database that goes away, locks up or refuses writes raises during a send.
DATABASE_FAILURES = (SQLAlchemyError, WriterFailedError)


class Worker:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        campaign: CampaignConfig,
        campaign_id: int,
        options: SendOptions,
        letters: LetterSource,
        progress: Progress,
        summary: SendSummary,
        mx_resolver: MxResolver | None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.campaign = campaign
        self.campaign_id = campaign_id
        self.options = options
        self.letters = letters
        self.progress = progress
        self.summary = summary
        self.id = new_worker_id()
        summary.worker = self.id
        self.retry = options.retry_policy
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
            group_rate=sending.group_rate,
            group_connections=sending.group_connections,
            pause_initial=options.destination_pause,
            pause_max=options.destination_pause_max,
        )
        self.mx = MxGroups(mx_resolver if sending.mx_groups else None)
        # The SMTP server we connect to, as a destination: its window is the number of slots at work.
        self.relay = Destination(
            f"{settings.smtp_host}:{settings.smtp_port_effective}",
            DestinationLimits(
                connections=options.concurrency,
                pause_initial=options.backoff_initial,
                pause_max=max(options.backoff_max, options.backoff_initial),
                down_after=options.connect_attempts,
                # A server that took a letter per connection since its last fault is flaky, not busy:
                # one dropped connection or 421 among many does not cost a connection.
                stray_after=options.concurrency,
            ),
        )
        self.clock = monotonic
        self.stopping = False
        self.producer = Producer(self)
        self.slots = [ConnectionSlot(self, n) for n in range(options.concurrency)]
        self.notify: Callable[[str], None] = log.warning
        self.in_flight: set[int] = set()  # deliveries marked ``sending`` whose outcome is not known yet
        self.connecting: set[asyncio.Task[Any]] = set()  # slots opening a connection (no letter marked)
        # Marked ``sending`` but stopped before the body was written: they go back to the queue as they
        # were (delivery id -> state before this try), not to ``unknown``.
        self.not_handed_over: dict[int, DeliveryState] = {}
        self._hard_stop: asyncio.TimerHandle | None = None
        self._live_slots = 0
        self.delivering = 0  # slots in the middle of a letter
        self._relay_open_failed = False  # the SMTP server's latest failure was at opening a connection
        self._last_open_error = ""
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Created on the loop (``run``).
        self.writer: StateWriter
        self.outcomes: Outcomes
        self.changed: asyncio.Event
        self.want_more: asyncio.Event
        self._stop_event: asyncio.Event

    # --------------------------------------------------------------------------------- lifecycle

    def stop(self, reason: str | None = None) -> None:
        if not self.stopping:
            self.stopping = True
            if reason:
                log.info("stopping: %s", reason)
        self._stop_event.set()
        self.changed.set()
        self.want_more.set()

    def fail(self, error: OutreachError) -> None:
        """Stop the run; ``run_send`` raises ``error`` once everything is settled."""
        if self.fatal is None:
            self.fatal = error
        self.stop(error.message)

    def _on_signal(self) -> None:
        self._signals += 1
        self.summary.interrupted = True
        if self._signals == 1:
            in_flight = len(self.in_flight)
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
            self._cancel_connecting()
            self._hard_stop = asyncio.get_running_loop().call_later(grace, self._stop_now)
        else:
            self._stop_now()

    def _cancel_connecting(self) -> None:
        """Cancel the slots still opening a connection (no letter of theirs is marked ``sending``), and
        again shortly: on Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives as its inner
        step completes (gh-86296), which left a slot waiting out the greeting's timeout."""
        if not self.connecting:
            return
        for task in list(self.connecting):
            task.cancel()
        asyncio.get_running_loop().call_later(0.2, self._cancel_connecting)

    def _stop_now(self) -> None:
        """A second Ctrl-C, or the first one's wait ran out: letters whose body was written become
        ``unknown``, the others go back to the queue (``_settle``)."""
        for task in self._tasks:
            task.cancel()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        self.changed = asyncio.Event()
        self.want_more = asyncio.Event()
        self.want_more.set()
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, self._on_signal)
        self.writer = StateWriter(
            self.engine,
            campaign_id=self.campaign_id,
            worker=self.id,
            lease=self.options.lease,
            retry_unknown=self.options.retry_unknown,
            message_domain=self.campaign.message_domain,
        )
        self.outcomes = Outcomes(self.writer, self.summary, self.progress)
        self.writer.start()
        self.progress.start(self.summary.due)
        producer = loop.create_task(self.producer.run(), name="outreach-producer")
        renewer = loop.create_task(self._renew(), name="outreach-lease")
        self._tasks = [
            loop.create_task(slot.run(), name=f"outreach-smtp-{slot.number}") for slot in self.slots
        ]
        self._live_slots = len(self._tasks)
        try:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, StopRun):
                    self.fatal = self.fatal or result.error
                elif isinstance(result, DATABASE_FAILURES):
                    self.fatal = self.fatal or database_failure(result)
                elif isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                    raise result
            self.stop()
            await producer
            renewer.cancel()
            if self.fatal is None and self.relay.down:
                self.fatal = self._down_error()
            elif self._last_open_error:  # some connections could not be opened, the run went on
                self.summary.note(f"cannot open a connection: {self._last_open_error}")
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

    def _down_error(self) -> SmtpError:
        relay = self.relay
        if self._relay_open_failed:
            return SmtpError(
                f"cannot open a connection: {relay.last_error}",
                hint="check OUTREACH_SMTP_HOST and OUTREACH_SMTP_PORT, or try again later",
            )
        # Connections open, but letters get no answer: those tries counted against the server, not the
        # letters, which wait for the next run as they were.
        return SmtpError(
            f"{relay.key}: the SMTP server stopped answering ({relay.failures} tries in a row failed, "
            f"the last: {relay.last_error})",
            hint="try again later; no letter was marked failed for it",
        )

    def slot_ended(self) -> None:
        self._live_slots -= 1
        if self._live_slots == 0:
            self.stop()

    async def _settle(self) -> None:
        """Return unsent claims to the pool; anything still ``sending`` (hard stop) becomes ``unknown``."""
        # First: a claim the composer is making now must be committed before the claims are given back.
        await self.producer.close()
        writer = self.writer
        try:
            if writer.error is None:
                await writer.flush()
                await asyncio.to_thread(requeue_not_handed_over, self.engine, self.id, self.not_handed_over)
                self.summary.unknown += await asyncio.to_thread(
                    mark_sending_unknown, self.engine, self.campaign_id, self.id
                )
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

    async def _renew(self) -> None:
        interval = max(1.0, self.options.lease.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            self.writer.renew()

    # ------------------------------------------------------------------------------- scheduling

    def take(self) -> tuple[Job | None, float]:
        """``DomainScheduler.take`` now; below the low-water mark the producer is asked for more."""
        job, wait = self.scheduler.take(self.clock())
        if self.producer.wants_more():
            self.want_more.set()
        return job, wait

    async def next_job(self, slot: ConnectionSlot) -> Job | None:
        """The next letter for ``slot``, waiting as long as the scheduler says; None when the run is over
        for this slot. A slot beyond the SMTP server's current window, or while the server is paused,
        closes its connection and waits."""
        relay = self.relay
        while not self.stopping:
            self._defer_given_up()
            now = self.clock()
            # Fewer connections: only ``window`` slots deliver at a time, the others close and wait.
            parked = relay.window is not None and self.delivering >= relay.window
            if parked or relay.paused_until > now:
                if parked and slot.connection.is_open:
                    await slot.connection.close()
                if self.producer.done and len(self.scheduler) == 0:
                    return None
                await self._wait(1.0 if parked else relay.paused_until - now)
                continue
            job, wait = self.take()
            if job is not None:
                return job
            if self.producer.done and len(self.scheduler) == 0:
                return None
            await self._wait(None if wait == float("inf") else wait)
        return None

    async def _wait(self, timeout: float | None) -> None:
        self.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout=timeout)

    def _defer_given_up(self) -> None:
        """Letters of destinations that paused to their maximum wait for a later run."""
        given_up = self.scheduler.given_up()
        if not given_up:
            return
        later = utcnow() + timedelta(seconds=self.options.destination_pause_max)
        for job in given_up:
            destination, group = self.scheduler.destinations(job.domain)
            error = (group if group is not None and group.gave_up else destination).last_error
            self.outcomes.record(
                job.row.id,
                DeliveryState.DEFERRED,
                error=f"the destination keeps asking us to slow down: {error}",
                recipient=job.recipients[0],
                next_attempt_at=later,
            )

    # --------------------------------------------------------------------------------- feedback

    def succeeded(self, job: Job) -> None:
        now = self.clock()
        window = self.relay.window
        self.relay.success(now)
        self.scheduler.feedback(job.domain, now)
        if self.relay.window != window:
            self.changed.set()  # a parked slot may work again

    def signal(self, job: Job, outcome: Classification) -> None:
        """A transient failure that speaks of a destination: the SMTP server or the letter's recipients."""
        assert outcome.signal is not None
        now = self.clock()
        if outcome.relay:
            self._relay_open_failed = False
            self._relay_signal(outcome.signal, now, outcome.text)
        else:
            self.scheduler.feedback(job.domain, now, outcome.signal, outcome.text)

    def relay_failed(self, text: str) -> None:
        """A connection could not be opened."""
        self._relay_open_failed = True
        self._last_open_error = text
        self._relay_signal(Signal.FAILURE, self.clock(), text)

    def _relay_signal(self, kind: Signal, now: float, text: str) -> None:
        self.relay.signal(kind, now, text)
        if self.relay.down:
            self.stop(f"the SMTP server is down: {text}")
        self.changed.set()
