"""Group commit of delivery state transitions, on a database thread of its own.

Each connection needs two things from the database per letter: its previous letter's outcome recorded,
and the next letter moved to ``sending`` before any of it goes on the wire. Doing that in one transaction
per letter on the event loop would make the database the bottleneck. Instead every connection hands its
transitions to the ``StateWriter``; one thread commits whatever has accumulated in one short transaction
(results first, then the ``sending`` marks) and wakes the waiting connections. A connection waits only for
its own ``sending`` mark, and since transactions commit in order, its previous outcome is committed by
then too: every transition is committed before that connection starts its next letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, update

from outreach.models import utcnow
from outreach.sending.claim import CLAIMABLE, DELIVERY, SENDING, D, release_claims, renew_lease


@dataclass(frozen=True)
class Transition:
    """The outcome of one attempt, to be written to one delivery."""

    delivery_id: int
    state: str
    code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    keep_claim: bool = False  # deferred within this run: this worker retries it shortly


class WriterFailedError(Exception):
    """The database refused a state update; the run must stop (rows stay ``sending`` → ``unknown``)."""


class StateWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        campaign_id: int,
        worker: str,
        lease: timedelta,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._campaign_id = campaign_id
        self._worker = worker
        self._lease = lease
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-writer")
        self._transitions: list[Transition] = []
        self._sending: list[tuple[int, asyncio.Future[bool]]] = []
        self._flushes: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._renew_due = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outreach-writer")

    def record(self, transition: Transition) -> None:
        """Queue an outcome; it is committed no later than this worker's next ``mark_sending``."""
        self._check()
        self._transitions.append(transition)
        self._wake.set()

    async def mark_sending(self, delivery_id: int) -> bool:
        """Move a claimed delivery to ``sending`` and wait for the commit. False when this worker no
        longer holds the claim (its lease ran out and another worker took the row back)."""
        self._check()
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._sending.append((delivery_id, future))
        self._wake.set()
        return await future

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        self._check()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append(future)
        self._wake.set()
        await future

    def renew(self) -> None:
        """Extend this worker's leases with the next commit."""
        self._renew_due = True
        self._wake.set()

    async def release(self, ids: list[int] | None = None) -> int:
        """Give back claimed rows not handed over (after everything queued is committed)."""
        await self.flush()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._release, ids)

    async def close(self) -> None:
        """Commit what is queued and stop the thread."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def _check(self) -> None:
        if self.error is not None:
            raise WriterFailedError(str(self.error)) from self.error

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self._transitions or self._sending or self._flushes or self._renew_due):
                if self._closing:
                    return
                continue
            transitions, self._transitions = self._transitions, []
            sending, self._sending = self._sending, []
            flushes, self._flushes = self._flushes, []
            renew, self._renew_due = self._renew_due, False
            try:
                marked = await loop.run_in_executor(
                    self._executor, self._apply, transitions, [i for i, _ in sending], renew
                )
            except BaseException as exc:
                self.error = exc
                failure = WriterFailedError(f"cannot record delivery states: {exc}")
                for _, future in sending:
                    if not future.done():
                        future.set_exception(failure)
                for flushed in flushes:
                    if not flushed.done():
                        flushed.set_exception(failure)
                for _queued_id, future in self._sending:
                    future.set_exception(failure)
                self._sending = []
                for flushed in self._flushes:
                    flushed.set_exception(failure)
                self._flushes = []
                return
            self.commits += 1
            for delivery_id, future in sending:
                if not future.done():
                    future.set_result(delivery_id in marked)
            for flushed in flushes:
                if not flushed.done():
                    flushed.set_result(None)

    def _apply(self, transitions: list[Transition], sending: list[int], renew: bool) -> set[int]:
        now = self._clock()
        lease_until = now + self._lease
        marked: set[int] = set()
        with self._engine.begin() as conn:
            if transitions:
                conn.execute(
                    update(DELIVERY)
                    .where(D.id == bindparam("b_id"), D.claimed_by == self._worker)
                    .values(
                        state=bindparam("b_state"),
                        last_code=bindparam("b_code"),
                        last_error=bindparam("b_error"),
                        next_attempt_at=bindparam("b_next"),
                        sent_at=bindparam("b_sent"),
                        claimed_by=bindparam("b_claimed"),
                        lease_until=bindparam("b_lease"),
                        updated_at=now,
                    ),
                    [
                        {
                            "b_id": t.delivery_id,
                            "b_state": t.state,
                            "b_code": t.code,
                            "b_error": t.error,
                            "b_next": t.next_attempt_at,
                            "b_sent": t.sent_at,
                            "b_claimed": self._worker if t.keep_claim else None,
                            "b_lease": lease_until if t.keep_claim else None,
                        }
                        for t in transitions
                    ],
                )
            if sending:
                rows = conn.execute(
                    update(DELIVERY)
                    .where(D.id.in_(sending), D.claimed_by == self._worker, D.state.in_(CLAIMABLE))
                    .values(state=SENDING, attempts=D.attempts + 1, lease_until=lease_until, updated_at=now)
                    .returning(D.id)
                )
                marked = {row[0] for row in rows}
            if renew:
                renew_lease(conn, campaign_id=self._campaign_id, worker=self._worker, until=lease_until)
        return marked

    def _release(self, ids: list[int] | None) -> int:
        with self._engine.begin() as conn:
            return release_claims(conn, campaign_id=self._campaign_id, worker=self._worker, ids=ids)
