"""Claiming deliveries with a lease, and giving back what a dead worker left behind.

Several ``outreach send`` processes may work one campaign (docs/sending.md). A worker claims a batch of
due deliveries in one short transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two
workers never block on or take the same rows; on SQLite the same statement runs inside ``BEGIN
IMMEDIATE`` (outreach.db), which serialises claims between processes. A claim is ``claimed_by`` (the
worker id) plus ``lease_until``; the worker renews the lease while it runs. Only the holder of a claim may
move a delivery to ``sending`` (the update checks ``claimed_by``), so a worker that stalled past its
lease and lost its rows to another can never send them a second time.

When a worker dies, its claimed-but-unsent rows return to the pool once the lease runs out, or at once
when the worker ran on this machine and its process is gone; rows it had in ``sending`` become
``unknown``: the letter may or may not have reached the server. A worker that stops settles its own
rows the same way (``requeue_not_handed_over``, ``mark_sending_unknown``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Table,
    Update,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from outreach.letters.ids import message_id, new_token
from outreach.models import Campaign, Contact, Delivery, DeliveryState, utcnow

DELIVERY: Table = Delivery.__table__  # type: ignore[attr-defined]
D = DELIVERY.c
CAMPAIGN_TABLE: Table = Campaign.__table__  # type: ignore[attr-defined]
CONTACT_TABLE: Table = Contact.__table__  # type: ignore[attr-defined]

#: States a claim may hold: a row moves to ``sending`` only from one of these.
CLAIMABLE = (DeliveryState.PENDING, DeliveryState.DEFERRED, DeliveryState.UNKNOWN)


def new_worker_id() -> str:
    """``host/pid/random``: readable in ``outreach status``, and lets a worker on the same host tell
    whether the process behind a claim is still alive."""
    return f"{socket.gethostname()}/{os.getpid()}/{new_token()[:6]}"


def worker_alive(worker: str) -> bool | None:
    """True/False when ``worker`` ran on this host and its process does or does not exist; None when
    it ran elsewhere (then only the lease tells)."""
    host, _, rest = worker.partition("/")
    pid_text = rest.partition("/")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


@dataclass(frozen=True)
class ClaimedRow:
    id: int
    contact_id: int | None
    state: DeliveryState  # the state before this run touches it: pending, deferred or unknown
    attempts: int
    token: str
    message_id: str


def due_condition(now: datetime, *, retry_unknown: bool) -> object:
    # ``state IN (...)`` rather than an OR of states: with the OR, SQLite read every delivery of the
    # campaign through the (campaign_id, contact_id) index for each claim, sent ones included (100,000
    # letters: O(n) per claim, quadratic over the run); with IN it reads only the due states through
    # ix_delivery_due.
    states = CLAIMABLE if retry_unknown else (DeliveryState.PENDING, DeliveryState.DEFERRED)
    return and_(D.state.in_(states), or_(D.state != DeliveryState.DEFERRED, D.next_attempt_at <= now))


def claim(
    conn: Connection,
    *,
    campaign_id: int,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    retry_unknown: bool,
    message_domain: str,
    after: int = 0,
) -> list[ClaimedRow]:
    """Claim up to ``limit`` due deliveries for ``worker`` in the caller's transaction, oldest first;
    gives each its token.

    One set-based ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``, then the
    tokens of rows claimed for the first time in one driver-level ``executemany``. The token (and the
    Message-ID built from it) is created on first claim and kept ever after, so a retry of a deferred or
    unknown letter carries the same Message-ID and replies always match.
    """
    returned = conn.execute(
        claim_statement(
            campaign_id=campaign_id,
            worker=worker,
            now=now,
            lease=lease,
            limit=limit,
            retry_unknown=retry_unknown,
            after=after,
            sqlite=conn.dialect.name == "sqlite",
        )
    ).all()
    claimed, tokens = with_tokens(returned, message_domain)
    if tokens:
        conn.exec_driver_sql(token_sql(conn.dialect), tokens)
    return claimed


def claim_statement(
    *,
    campaign_id: int,
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    retry_unknown: bool,
    after: int = 0,
    sqlite: bool = False,
) -> Update:
    """``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING`` the claimed rows with an
    id above ``after``.

    A sender passes the last id it claimed, so each claim walks the primary key from there and stops
    after ``limit`` due rows, whatever the size of the campaign; when nothing is left above it, it
    starts again from 0 once (the state writer's ``Committer.claim``), which finds deferred letters that
    came due and claims other senders gave back. On SQLite, ``campaign_id + 0`` keeps the planner off the
    campaign's indexes, which would make every claim read all of the campaign's due rows and sort them
    (100,000 letters: O(n) per claim, quadratic over the run). PostgreSQL is left to its planner: without the
    index on ``(campaign_id, state)`` it combined a bitmap of every id above ``after`` with a scan of
    the whole state index, which was worse.
    """
    # Every claim sets lease_until and every release clears it, so "no lease or an expired one" is free.
    free = or_(D.lease_until.is_(None), D.lease_until < now)
    picked = (
        select(D.id)
        .where(
            D.id > after,
            ((D.campaign_id + 0) if sqlite else D.campaign_id) == campaign_id,
            due_condition(now, retry_unknown=retry_unknown),  # type: ignore[arg-type]
            free,
        )
        .order_by(D.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return (
        update(DELIVERY)
        .where(D.id.in_(picked.scalar_subquery()))
        .values(claimed_by=worker, lease_until=now + lease)
        .returning(D.id, D.contact_id, D.state, D.attempts, D.token, D.message_id)
    )


def with_tokens(
    returned: Sequence[Any], message_domain: str
) -> tuple[list[ClaimedRow], list[tuple[str, str, int]]]:
    """The claimed rows (oldest first), each with its token; and ``(token, message_id, id)`` of those
    claimed for the first time, for ``token_sql``."""
    claimed: list[ClaimedRow] = []
    tokens: list[tuple[str, str, int]] = []
    for row_id, contact_id, state, attempts, token, mid in sorted(returned, key=lambda r: int(r[0])):
        if token is None or mid is None:
            token = token or new_token()
            mid = mid or message_id(token, message_domain)
            tokens.append((token, mid, row_id))
        claimed.append(ClaimedRow(row_id, contact_id, DeliveryState(state), attempts, token, mid))
    return claimed, tokens


def token_sql(dialect: Dialect) -> str:
    m = placeholder(dialect)
    return f"UPDATE {DELIVERY.name} SET token = {m}, message_id = {m} WHERE id = {m}"


def placeholder(dialect: Dialect) -> str:
    """The driver's positional parameter marker, for the few hot statements sent as plain SQL."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def release_claims(
    conn: Connection, *, campaign_id: int, worker: str, ids: Sequence[int] | None = None
) -> int:
    """Give back claimed rows that were not handed to the server; returns how many."""
    return conn.execute(release_statement(campaign_id=campaign_id, worker=worker, ids=ids)).rowcount


def release_statement(*, campaign_id: int, worker: str, ids: Sequence[int] | None = None) -> Update:
    """``UPDATE`` that gives back ``worker``'s claimed rows (those of ``ids`` only, when given)."""
    query = update(DELIVERY).where(
        D.campaign_id == campaign_id, D.claimed_by == worker, D.state.in_(CLAIMABLE)
    )
    if ids is not None:
        query = query.where(D.id.in_(list(ids)))
    return query.values(claimed_by=None, lease_until=None)


@dataclass(frozen=True)
class Recovery:
    workers: tuple[str, ...]  # dead workers whose rows were recovered
    unknown: int  # rows that were in ``sending`` and are now ``unknown``
    released: int  # claimed rows that went back to the pool


def recover_abandoned(
    engine: Engine, *, campaign_id: int, now: datetime, exclude: str | None = None
) -> Recovery:
    """Settle the rows of workers that are gone: ``sending`` → ``unknown``, other claims released.

    A worker is gone when all its leases ran out, or when it ran on this host and its process no longer
    exists (so a rerun after ``kill -9`` on a laptop need not wait for the lease).
    """
    with engine.begin() as conn:
        holders = conn.execute(
            select(D.claimed_by, func.max(D.lease_until))
            .where(
                D.campaign_id == campaign_id,
                D.claimed_by.is_not(None),
                D.state.in_((DeliveryState.PENDING, DeliveryState.DEFERRED, DeliveryState.SENDING)),
            )
            .group_by(D.claimed_by)
        ).all()
        gone: list[str] = []
        for worker, lease_until in holders:
            if worker == exclude:
                continue
            alive = worker_alive(worker)
            if alive is False or (alive is None and (lease_until is None or lease_until < now)):
                gone.append(worker)
        if not gone:
            return Recovery((), 0, 0)
        unknown = conn.execute(
            update(DELIVERY)
            .where(D.campaign_id == campaign_id, D.claimed_by.in_(gone), D.state == DeliveryState.SENDING)
            .values(
                state=DeliveryState.UNKNOWN,
                lease_until=None,
                last_error="the sender stopped while handing this letter over; the server may have it",
                updated_at=now,
            )
        ).rowcount
        released = conn.execute(
            update(DELIVERY)
            .where(
                D.campaign_id == campaign_id,
                D.claimed_by.in_(gone),
                D.state.in_((DeliveryState.PENDING, DeliveryState.DEFERRED)),
            )
            .values(claimed_by=None, lease_until=None)
        ).rowcount
    return Recovery(tuple(gone), unknown, released)


def requeue_not_handed_over(engine: Engine, worker: str, states: Mapping[int, DeliveryState]) -> None:
    """Letters a stopping ``worker`` had marked ``sending`` but whose body was never written go back as
    they were (``states``: delivery id -> its state before the try): the server cannot have them, and
    the try did not count."""
    if not states:
        return
    statement = (
        update(DELIVERY)
        .where(D.id == bindparam("b_id"), D.claimed_by == worker, D.state == DeliveryState.SENDING)
        .values(
            state=bindparam("b_state"),
            attempts=case((D.attempts > 0, D.attempts - 1), else_=0),
            claimed_by=None,
            lease_until=None,
            updated_at=utcnow(),
        )
    )
    with engine.begin() as conn:
        conn.execute(statement, [{"b_id": i, "b_state": state} for i, state in states.items()])


def mark_sending_unknown(engine: Engine, campaign_id: int, worker: str) -> int:
    """What ``worker`` still has in ``sending`` when it stopped hard was handed over, or may have been:
    ``unknown``. Returns how many."""
    with engine.begin() as conn:
        result = conn.execute(
            update(DELIVERY)
            .where(D.campaign_id == campaign_id, D.claimed_by == worker, D.state == DeliveryState.SENDING)
            .values(
                state=DeliveryState.UNKNOWN,
                lease_until=None,
                last_error="stopped while handing this letter over; the server may have it",
                updated_at=utcnow(),
            )
        )
        return int(result.rowcount)
