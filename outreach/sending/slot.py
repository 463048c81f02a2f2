"""One connection slot: an SMTP connection that takes letters from the scheduler and sends them.

A try that fails transiently never holds the connection: the letter goes back to the scheduler with a
not-before time (``RetryPolicy``), and the connection takes the next letter. What a failure says about a
destination (throttling, the server as a whole failing) goes to that destination's feedback
(``outreach.sending.destination``) and does not count against the letter.

With PIPELINING the slot also takes the letter it sends next before the current one is done, so that
its envelope travels behind the current body (``SmtpConnection.send``'s ``then``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from outreach.errors import SmtpError
from outreach.models import DeliveryState, utcnow
from outreach.sending.classify import Classification, Verdict, classify_smtp_error
from outreach.sending.errors import StopRun, WriterFailedError
from outreach.sending.jobs import Job
from outreach.sending.retry import RetryAction
from outreach.sending.smtp import (
    ConnectFailedError,
    ConnectionLostError,
    SmtpConnection,
    SmtpReplyError,
)

if TYPE_CHECKING:
    from outreach.sending.worker import Worker

log = logging.getLogger(__name__)


class ConnectionSlot:
    def __init__(self, worker: Worker, number: int) -> None:
        self.worker = worker
        self.number = number
        self.connection = SmtpConnection(worker.settings, local_hostname=worker.campaign.message_domain)
        self.following: Job | None = None  # the letter sent next, whose envelope may be with the server

    async def run(self) -> None:
        worker = self.worker
        connection = self.connection
        scheduler = worker.scheduler
        try:
            while True:
                job, self.following = self.following, None
                if job is not None and worker.stopping:
                    # Taken to follow the last letter, but the run is stopping: it stays unsent (its
                    # claim is given back when the run settles).
                    scheduler.done(job.domain, worker.clock())
                    job = None
                if job is None:
                    job = await worker.next_job(self)
                if job is None:
                    return
                worker.delivering += 1
                try:
                    await self.deliver(job)
                finally:
                    worker.delivering -= 1
                    scheduler.done(job.domain, worker.clock())
                    worker.changed.set()
                if connection.sent >= worker.max_per_connection:
                    await connection.close()
        except (StopRun, WriterFailedError):
            worker.stop()
            raise
        finally:
            left, self.following = self.following, None
            if left is not None:
                if not worker.stopping:  # this connection ended early: another one takes the letter
                    scheduler.add(left.domain, left, group=left.group)
                scheduler.done(left.domain, worker.clock())
                worker.changed.set()
            await connection.close()
            worker.slot_ended()

    async def deliver(self, job: Job) -> None:
        """One try of ``job`` on this connection, and what follows from its outcome."""
        worker = self.worker
        connection = self.connection
        if not connection.is_open:
            task = asyncio.current_task()
            assert task is not None
            worker.connecting.add(task)  # a Ctrl-C cancels it at once: no letter of its is marked
            try:
                await connection.open()
            except ConnectFailedError as exc:
                # The server as a whole failed, not this letter: it goes back untried.
                worker.relay_failed(exc.text)
                worker.scheduler.add(job.domain, job, group=job.group)
                return
            except SmtpError as exc:
                raise StopRun(exc) from None
            finally:
                worker.connecting.discard(task)
        try:
            marked = await worker.writer.mark_sending(job.row.id)
        except asyncio.CancelledError:
            worker.not_handed_over[job.row.id] = job.row.state  # the mark may still commit
            raise
        if not marked:
            log.warning("delivery %s: claim lost to another worker; not sending", job.row.id)
            if connection.next_envelope_for(job.row.id):
                connection.abort()  # the server awaits this letter's body; it must not get it
            return
        job.attempted = True
        job.tries += 1
        follow = self.follow()
        then = None if follow is None else follow.letter()
        worker.in_flight.add(job.row.id)
        try:
            result = await connection.send(job.letter(), then=then)
        except asyncio.CancelledError:
            if not connection.handed_over:
                worker.not_handed_over[job.row.id] = job.row.state
            raise
        except (SmtpReplyError, ConnectionLostError) as exc:
            outcome = classify_smtp_error(exc)
        else:
            note = None
            if result.refused:
                note = "; ".join(f"copy to {a} refused: {c} {t}" for a, (c, t) in result.refused.items())
            worker.outcomes.sent(job, result.code, note)
            worker.succeeded(job)
            return
        finally:
            worker.in_flight.discard(job.row.id)
        if outcome.verdict is Verdict.TRANSIENT:
            self.transient(job, outcome)
        elif outcome.verdict is Verdict.PERMANENT:
            worker.outcomes.record(
                job.row.id,
                DeliveryState.FAILED,
                code=outcome.code,
                error=outcome.text,
                recipient=job.recipients[0],
            )
            worker.succeeded(job)  # the receiver answered: it works, it just refuses this letter
        elif outcome.verdict is Verdict.UNKNOWN:
            worker.outcomes.record(
                job.row.id,
                DeliveryState.UNKNOWN,
                code=outcome.code,
                error=outcome.text,
                recipient=job.recipients[0],
            )
        else:
            # STOP: the server refuses our session or sender; this letter was not taken. Put it back as
            # it was, its try not counted.
            worker.outcomes.record(
                job.row.id,
                job.row.state,
                code=outcome.code,
                error=outcome.text,
                keep_claim=True,
                uncount=True,
                final=False,
            )
            raise StopRun(
                SmtpError(
                    f"{connection.where}: the server refuses to send for us: {outcome.code} {outcome.text}",
                    hint="check the campaign's from address and the SMTP account",
                )
            )

    def transient(self, job: Job, outcome: Classification) -> None:
        """A transient failure: slow the destination it speaks of, then retry the letter later in this
        run, defer it to a later run, or give it up (``RetryPolicy``)."""
        worker = self.worker
        counted = outcome.signal is None
        if counted:
            job.counted += 1
        else:
            worker.signal(job, outcome)
        decision = worker.retry.after_failure(
            tries_before_run=job.row.attempts,
            tries_this_run=job.tries,
            counted_this_run=job.counted,
            now=utcnow(),
            stopping=worker.stopping,
            server_failed=outcome.relay,
        )
        code, text, recipient = outcome.code, outcome.text, job.recipients[0]
        if decision.action is RetryAction.AGAIN:
            # Committed as deferred (a crash leaves it due, not ``sending``), claim kept: this run retries.
            worker.outcomes.record(
                job.row.id,
                DeliveryState.DEFERRED,
                code=code,
                error=text,
                next_attempt_at=utcnow(),
                keep_claim=True,
                uncount=not counted,
                final=False,
            )
            worker.scheduler.add(job.domain, job, group=job.group, not_before=worker.clock() + decision.delay)
        elif decision.action is RetryAction.LATER:
            worker.outcomes.record(
                job.row.id,
                DeliveryState.DEFERRED,
                code=code,
                error=text,
                recipient=recipient,
                next_attempt_at=decision.next_attempt_at,
                uncount=not counted,
            )
        else:
            worker.outcomes.record(
                job.row.id,
                DeliveryState.FAILED,
                code=code,
                error=f"gave up after {decision.total} attempts: {text}",
                recipient=recipient,
            )

    def follow(self) -> Job | None:
        """The letter this connection sends after the current one, taken now so that its envelope can
        go out behind the current body. Only when a job may go at once, the connection has room for it,
        and enough letters are waiting that no idle connection goes short."""
        worker = self.worker
        job = self.following
        if job is None:
            if (
                worker.stopping
                or not self.connection.pipelining
                or self.connection.sent + 1 >= worker.max_per_connection
                or worker.scheduler.ready <= worker.options.concurrency
            ):
                return None
            job, _ = worker.take()
            if job is None:
                return None
            self.following = job
        return job if len(job.recipients) == 1 else None
