"""The producer: claims batches of due deliveries and composes their letters ahead of the connections.

It keeps the scheduler's buffer of ready letters above a low-water mark, so that no connection waits for
a letter: claiming is a database write and goes through the state writer; composing runs on a thread or
in the composer process (``outreach.sending.composer``). It stops when nothing is due, at ``--limit``,
when the sending window closes, or when the run stops.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from outreach.errors import OutreachError
from outreach.models import DeliveryState, utcnow
from outreach.sending.claim import ClaimedRow, recover_abandoned
from outreach.sending.composer import ComposerProcess
from outreach.sending.errors import WriterFailedError
from outreach.sending.failures import database_failure
from outreach.sending.jobs import Job
from outreach.sending.plan import RENDER_FAILED

if TYPE_CHECKING:
    from outreach.sending.worker import Worker

log = logging.getLogger(__name__)

#: The buffer never holds more than this many batches: letters of paused destinations wait in it.
_MAX_BATCHES_HELD = 25


class Producer:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self.composer: ComposerProcess | None = None
        self.claimed = 0
        self.done = False

    def start_composer(self) -> None:
        """Claim and compose in a second process. It starts in the background; until it is ready, the
        producer composes on a thread as without it."""
        worker = self._worker
        url = worker.engine.url.render_as_string(hide_password=False)
        try:
            self.composer = ComposerProcess(url, worker.campaign)
        except OSError as exc:  # fork or spawn refused (out of memory, process limit): compose here
            log.warning("composing in this process: cannot start a composer process: %s", exc)

    def low_water(self) -> int:
        # With a composer process the next batch is composed while the connections empty the buffer,
        # so the buffer must last longer than composing one batch takes.
        options = self._worker.options
        batches = 2 if self.composer is not None else 1
        return max(options.batch_size * batches, options.concurrency * 4)

    def wants_more(self) -> bool:
        scheduler = self._worker.scheduler
        return scheduler.ready < self.low_water() and len(scheduler) < self._worker.options.batch_size * (
            _MAX_BATCHES_HELD
        )

    async def run(self) -> None:
        """Claim and compose ahead of the connections until nothing is due or the run stops."""
        worker = self._worker
        options = worker.options
        limit = options.limit if options.limit is not None else math.inf
        window = None if options.ignore_window else worker.campaign.sending.window
        try:
            while not worker.stopping and self.claimed < limit:
                if not self.wants_more():
                    worker.want_more.clear()
                    await worker.want_more.wait()
                    continue
                now = utcnow()
                if window is not None and not window.is_open(now):
                    worker.summary.window_opens_at = window.next_open(now)
                    worker.stop("the sending window closed")
                    break
                size = int(min(options.batch_size, limit - self.claimed))
                rows, jobs, unsendable = await self._claim_and_compose(size, now)
                if not rows:
                    # Before calling it a day: rows of a worker that died meanwhile (on PostgreSQL, in
                    # another process) come back to the pool now rather than at the next run.
                    recovery = await asyncio.to_thread(
                        recover_abandoned,
                        worker.engine,
                        campaign_id=worker.campaign_id,
                        now=utcnow(),
                        exclude=worker.id,
                    )
                    if recovery.released:
                        continue
                    break
                self.claimed += len(rows)
                for row, reason in unsendable:
                    # A letter the template cannot render for this contact is held, not skipped: it is
                    # a problem to show, and planning tries it again once the campaign or contact changed.
                    state = DeliveryState.HELD if reason.startswith(RENDER_FAILED) else DeliveryState.SKIPPED
                    worker.outcomes.record(row.id, state, error=reason, note=state == DeliveryState.HELD)
                if worker.mx.enabled:
                    await asyncio.to_thread(worker.mx.resolve, [job.domain for job in jobs])
                for job in jobs:
                    job.group = worker.mx.group(job.domain) if worker.mx.enabled else None
                    worker.scheduler.add(job.domain, job, group=job.group)
                worker.changed.set()
        except OutreachError as exc:
            # A template that cannot be rendered for a recipient: stop before sending anything broken.
            worker.fail(exc)
        except (SQLAlchemyError, WriterFailedError) as exc:  # a claim or the recovery of dead senders' rows
            worker.fail(database_failure(exc))
        finally:
            self.done = True
            worker.changed.set()

    async def _claim_and_compose(
        self, size: int, now: datetime
    ) -> tuple[list[ClaimedRow], list[Job], list[tuple[ClaimedRow, str]]]:
        worker = self._worker
        rows = await worker.writer.claim(size, now)
        if not rows:
            return [], [], []
        composer = self.composer
        # Automatic: compose here until the composer process has started. Forced: wait for it.
        use_composer = composer is not None and (composer.ready or worker.options.compose_process is True)
        compose = composer.compose if composer is not None and use_composer else worker.letters.compose
        jobs, unsendable = await asyncio.to_thread(compose, rows, now)
        return rows, jobs, unsendable

    async def close(self) -> None:
        if self.composer is not None:
            await asyncio.to_thread(self.composer.close)
