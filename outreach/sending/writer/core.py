"""The state writer's batching core: the queue, the group commit, waking every waiter.

Each connection needs two things from the database per letter: its previous letter's outcome recorded,
and the next letter moved to ``sending`` before any of it goes on the wire. Doing that in one transaction
per letter would make the database the bottleneck. Instead every connection hands its transitions to the
``StateWriter``, which commits whatever has accumulated in one short transaction (results first, then the
``sending`` marks) and wakes the waiting connections. A connection waits only for its own ``sending``
mark, and since transactions commit in order, its previous outcome is committed by then too: every
transition is committed before that connection starts its next letter.

The transactions themselves are the backend's ``Committer`` (``committer.py``; ``sqlite.py``,
``postgres.py``). When one fails, every waiter gets ``WriterFailedError`` and so does every later call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from outreach.models import utcnow
from outreach.sending.claim import ClaimedRow
from outreach.sending.errors import WriterFailedError
from outreach.sending.writer.committer import Committer, Scope, Transition
from outreach.sending.writer.postgres import PostgresCommitter
from outreach.sending.writer.sqlite import SqliteCommitter


def committer_for(engine: Engine, scope: Scope) -> Committer:
    if engine.dialect.name == "sqlite":
        return SqliteCommitter(engine, scope)
    return PostgresCommitter(engine, scope)


class StateWriter:
    def __init__(
        self,
        engine: Engine,
        *,
        campaign_id: int,
        worker: str,
        lease: timedelta,
        retry_unknown: bool = False,
        message_domain: str = "",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.committer = committer_for(
            engine, Scope(campaign_id, worker, lease, retry_unknown, message_domain, clock)
        )
        self._transitions: list[Transition] = []
        self._sending: list[tuple[int, asyncio.Future[bool]]] = []
        self._flushes: list[asyncio.Future[None]] = []
        self._claims: list[tuple[int, datetime, asyncio.Future[list[ClaimedRow]]]] = []
        self._claim_after = 0  # the last id claimed: the next claim walks on from there
        self._wake = asyncio.Event()
        self._renew_due = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.commits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="outreach-writer")
        self.committer.start()

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

    async def claim(self, limit: int, now: datetime) -> list[ClaimedRow]:
        """Claim up to ``limit`` due deliveries for this worker (``claim.claim``), in a transaction of
        its own right after the next group commit. Claims go through the writer's connection because
        on SQLite a second connection would wait for the write lock, and SQLite's busy handler waits in
        sleeps of milliseconds while the connections wait for their ``sending`` marks."""
        self._check()
        future: asyncio.Future[list[ClaimedRow]] = asyncio.get_running_loop().create_future()
        self._claims.append((limit, now, future))
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
        return await self.committer.release(ids)

    async def close(self) -> None:
        """Commit what is queued, then close the connection."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.committer.close()

    def _check(self) -> None:
        if self.error is not None:
            raise WriterFailedError(str(self.error)) from self.error

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not (self._transitions or self._sending or self._flushes or self._renew_due or self._claims):
                if self._closing:
                    return
                continue
            transitions, self._transitions = self._transitions, []
            sending, self._sending = self._sending, []
            flushes, self._flushes = self._flushes, []
            renew, self._renew_due = self._renew_due, False
            claims, self._claims = self._claims, []
            try:
                if transitions or sending or flushes or renew:
                    marked = await self._commit(transitions, [i for i, _ in sending], renew)
                    for delivery_id, future in sending:
                        if not future.done():
                            future.set_result(delivery_id in marked)
                    for flushed in flushes:
                        if not flushed.done():
                            flushed.set_result(None)
                # Claims after the marks are answered: the connections need not wait for a claim.
                for limit, now, claim_future in claims:
                    rows = await self.committer.claim(limit, now, self._claim_after)
                    if rows:
                        self._claim_after = rows[-1].id
                    if not claim_future.done():
                        claim_future.set_result(rows)
            except BaseException as exc:
                self.error = exc
                failure = WriterFailedError(f"cannot record delivery states: {exc}")
                waiting: list[asyncio.Future[Any]] = [
                    *(future for _, future in [*sending, *self._sending]),
                    *flushes,
                    *self._flushes,
                    *(future for *_, future in [*claims, *self._claims]),
                ]
                self._sending, self._flushes, self._claims = [], [], []
                for future in waiting:
                    if not future.done():
                        future.set_exception(failure)
                return

    async def _commit(self, transitions: list[Transition], sending: list[int], renew: bool) -> set[int]:
        """One group commit: the outcomes, then the ``sending`` marks; the ids actually marked."""
        marked = await self.committer.commit(transitions, sending, renew)
        self.commits += 1
        return marked
