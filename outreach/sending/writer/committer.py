"""What the state writer's batching core (``core.StateWriter``) asks of a database: a ``Committer``.

One committer per backend, each with all of its SQL in its own module: ``sqlite.SqliteCommitter`` (the
commits on the event loop, ``BEGIN IMMEDIATE``, the WAL checkpointer) and ``postgres.PostgresCommitter``
(psycopg's async connection, a whole group commit as one statement). The core queues, batches and wakes
the waiting connections; it never sees SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from outreach.models import DeliveryState
from outreach.sending.claim import ClaimedRow


@dataclass(frozen=True)
class Transition:
    """The outcome of one attempt, to be written to one delivery."""

    delivery_id: int
    state: DeliveryState
    code: int | None = None
    error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None
    keep_claim: bool = False  # deferred within this run: this worker retries it shortly
    # The try failed for the destination as a whole (down, throttling us): it does not count towards the
    # letter's maximum, so the ``attempts`` its ``sending`` mark added is taken back.
    uncount: bool = False

    def parameters(
        self, worker: str, lease_until: Any, now: Any, stamp: Callable[[datetime | None], Any] = lambda v: v
    ) -> tuple[Any, ...]:
        """The values of both backends' transition UPDATE, in its order (SET state, last_code, last_error,
        next_attempt_at, sent_at, claimed_by, lease_until, updated_at, attempts - uncount; WHERE id,
        claimed_by). ``stamp`` converts a time for a driver that wants another form."""
        return (
            self.state,
            self.code,
            self.error,
            stamp(self.next_attempt_at),
            stamp(self.sent_at),
            worker if self.keep_claim else None,
            lease_until if self.keep_claim else None,
            now,
            1 if self.uncount else 0,
            self.delivery_id,
            worker,
        )


@dataclass(frozen=True)
class Scope:
    """Whose rows a committer writes: one worker's claims on one campaign."""

    campaign_id: int
    worker: str
    lease: timedelta
    retry_unknown: bool
    message_domain: str
    clock: Callable[[], datetime]


class Committer(Protocol):
    """One backend's transactions for the state writer. Each method is one transaction (``commit``:
    one group commit); an exception means nothing of it was committed."""

    def start(self) -> None:
        """Start what runs beside the commits (SQLite: the WAL checkpointer)."""
        ...

    async def commit(
        self, transitions: Sequence[Transition], sending: Sequence[int], renew: bool
    ) -> set[int]:
        """The outcomes, the ``sending`` marks of ``sending`` (only rows this worker still holds) and,
        with ``renew``, this worker's leases extended; returns the ids actually marked."""
        ...

    async def claim(self, limit: int, now: datetime, after: int) -> list[ClaimedRow]:
        """Up to ``limit`` due rows with an id above ``after`` (``claim.claim_statement``), or, when
        none is left above it, from the start once; oldest first, each with its token."""
        ...

    async def release(self, ids: Sequence[int] | None) -> int:
        """Give back this worker's claimed rows not handed over (those of ``ids``); how many."""
        ...

    async def close(self) -> None:
        """Close the connection and stop what ``start`` started."""
        ...
