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
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from outreach.models import utcnow
from outreach.sending.claim import (
    CLAIMABLE,
    DELIVERY,
    SENDING,
    ClaimedRow,
    claim,
    claim_statement,
    placeholder,
    release_claims,
    token_sql,
    with_tokens,
)
from outreach.sending.errors import WriterFailedError as WriterFailedError


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
    # The try failed for the destination as a whole (down, throttling us): it does not count towards the
    # letter's maximum, so the ``attempts`` its ``sending`` mark added is taken back.
    uncount: bool = False


_T = TypeVar("_T")

#: How long a SQLite transaction moved off the event loop waits for another writer (as outreach.db).
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: SQLite's default ``wal_autocheckpoint``.
SQLITE_AUTOCHECKPOINT_PAGES = 1000
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds the write lock."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


class _Statements:
    """The writer's two hot statements as plain SQL for the driver, built once per dialect.

    Compiling a Core ``update()`` and binding its parameters row by row cost SQLAlchemy about as much
    CPU per letter as composing it (bench/send_bench.py); the driver's own ``executemany`` of a fixed
    string costs a few microseconds a row. The column names come from the ``delivery`` table.
    """

    def __init__(self, engine: Engine) -> None:
        dialect = engine.dialect
        self._mark = placeholder(dialect)
        processor = DELIVERY.c.sent_at.type.dialect_impl(dialect).bind_processor(dialect)
        # SQLite keeps datetimes as text in SQLAlchemy's format; exec_driver_sql bypasses the type, so
        # values are converted the way SQLAlchemy would (PostgreSQL: no conversion).
        self._datetime: Any = processor
        m = self._mark
        self.transition = (
            f"UPDATE {DELIVERY.name} SET state = {m}, last_code = {m}, last_error = {m}, "
            f"next_attempt_at = {m}, sent_at = {m}, claimed_by = {m}, lease_until = {m}, updated_at = {m}, "
            f"attempts = attempts - {m} WHERE id = {m} AND claimed_by = {m}"
        )
        self.mark_sending = lru_cache(maxsize=64)(self._mark_sending)
        states = ", ".join(f"'{state}'" for state in (*CLAIMABLE, SENDING))
        self.renew = (
            f"UPDATE {DELIVERY.name} SET lease_until = {m} "
            f"WHERE campaign_id = {m} AND claimed_by = {m} AND state IN ({states})"
        )

    def group_commit_pg(self) -> str:
        """PostgreSQL: a whole group commit (outcomes and ``sending`` marks) as one statement.

        In autocommit a single statement is its own transaction: one round trip and one WAL flush per
        group instead of BEGIN, a pipelined ``executemany``, the marks and COMMIT (four round trips; the
        connections wait for each). The outcomes arrive as arrays, so the SQL text is the same for any
        group size and psycopg prepares it once. Both updates see the same snapshot: a delivery must not
        be in both lists (the caller falls back to two statements then).
        """
        claimable = ", ".join(f"'{state}'" for state in CLAIMABLE)
        d = DELIVERY.name
        return (
            "WITH v AS (SELECT * FROM unnest(%(ids)s::integer[], %(states)s::varchar[], "
            "%(codes)s::integer[], %(errors)s::varchar[], %(next)s::timestamp[], %(sent)s::timestamp[], "
            "%(keep)s::boolean[], %(uncount)s::integer[]) "
            "AS v(id, state, code, error, next_attempt_at, sent_at, keep, uncount)), "
            f"outcome AS (UPDATE {d} SET state = v.state, last_code = v.code, last_error = v.error, "
            "next_attempt_at = v.next_attempt_at, sent_at = v.sent_at, attempts = attempts - v.uncount, "
            "claimed_by = CASE WHEN v.keep THEN %(worker)s END, "
            "lease_until = CASE WHEN v.keep THEN %(lease)s::timestamp END, updated_at = %(now)s "
            f"FROM v WHERE {d}.id = v.id AND {d}.claimed_by = %(worker)s), "
            f"marked AS (UPDATE {d} SET state = '{SENDING}', attempts = attempts + 1, "
            "lease_until = %(lease)s, updated_at = %(now)s "
            f"WHERE claimed_by = %(worker)s AND state IN ({claimable}) AND id = ANY(%(sending)s::integer[]) "
            "RETURNING id) "
            "SELECT id FROM marked"
        )

    def timestamp(self, value: datetime | None) -> Any:
        if value is None or self._datetime is None:
            return value
        return self._datetime(value)

    def _mark_sending(self, count: int) -> str:
        m = self._mark
        claimable = ", ".join(f"'{state}'" for state in CLAIMABLE)
        return (
            f"UPDATE {DELIVERY.name} SET state = '{SENDING}', attempts = attempts + 1, "
            f"lease_until = {m}, updated_at = {m} "
            f"WHERE claimed_by = {m} AND state IN ({claimable}) AND id IN ({', '.join([m] * count)}) "
            "RETURNING id"
        )


@contextlib.contextmanager
def _sqlite_transaction(raw: Any) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``) on a pysqlite connection in autocommit mode
    (outreach.db sets ``isolation_level = None`` and begins every transaction with BEGIN IMMEDIATE)."""
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        raw.rollback()
        raise
    raw.commit()


class WalCheckpointer:
    """SQLite: checkpoints the write-ahead log on a thread of its own while the writer commits.

    By default the connection whose commit pushes the WAL past 1,000 pages copies it back into the
    database file there and then, with an ``fsync``: every ~200 group commits the event loop stopped for
    that. The writer's connection therefore does not checkpoint (``wal_autocheckpoint=0``), and this
    thread runs a PASSIVE checkpoint every ``interval`` seconds on its own connection (and once more
    when it stops): it never blocks the writer or the readers, and the WAL stays small (it restarts
    from the top once a checkpoint has caught up). sqlite3 releases the GIL while it works. Measured:
    a group commit of four letters alone costs 128 µs of CPU instead of 182 (130 µs of wall time
    instead of 258); a whole run of 10,000 letters gains about 4 % (docs/performance.md).
    """

    def __init__(self, path: str, interval: float = 0.25) -> None:
        self._path = path
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outreach-checkpoint", daemon=True)
        self.checkpoints = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=0, isolation_level=None, check_same_thread=False)
        try:
            while True:
                stopping = self._stop.wait(self._interval)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                if stopping:
                    return
        finally:
            conn.close()


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
        self._engine = engine
        self._campaign_id = campaign_id
        self._worker = worker
        self._lease = lease
        self._retry_unknown = retry_unknown
        self._message_domain = message_domain
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-writer")
        self._statements = _Statements(engine)
        self._inline = engine.dialect.name == "sqlite"
        database = engine.url.database
        self._checkpointer: WalCheckpointer | None = None
        if self._inline and database not in (None, "", ":memory:") and not database.startswith("file:"):
            self._checkpointer = WalCheckpointer(database)
        # PostgreSQL through psycopg: the group commits run on the event loop with psycopg's async
        # connection. On a thread, each round trip to the server gives up the GIL and waits to get it
        # back from the busy event loop (measured: ~8 ms per group commit instead of ~1.5).
        self._async_pg = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._group_commit_pg = self._statements.group_commit_pg() if self._async_pg else ""
        self._aconn: Any = None  # psycopg.AsyncConnection
        self._conn: Connection | None = None
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
        if self._checkpointer is not None:
            self._checkpointer.start()

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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._release, ids)

    async def close(self) -> None:
        """Commit what is queued and stop the thread."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=True)
        if self._aconn is not None:
            await self._aconn.close()
            self._aconn = None

    def _close_connection(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._conn is not None:
            if self._checkpointer is not None:
                with contextlib.suppress(Exception):  # back to the pool as it came
                    self._set_autocheckpoint(self._conn, SQLITE_AUTOCHECKPOINT_PAGES)
            self._conn.close()
            self._conn = None

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
                    if self._async_pg:
                        rows = await self._claim_async(limit, now)
                    else:
                        rows = await self._execute(self._claim, limit, now)
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
        if self._async_pg:
            marked = await self._apply_async(transitions, sending, renew)
        else:
            marked = await self._execute(self._apply, transitions, sending, renew)
        self.commits += 1
        return marked

    def _transition_rows(self, transitions: list[Transition], lease_value: Any, now_value: Any) -> list[Any]:
        stamp, worker = self._statements.timestamp, self._worker
        return [
            (
                t.state,
                t.code,
                t.error,
                stamp(t.next_attempt_at),
                stamp(t.sent_at),
                worker if t.keep_claim else None,
                lease_value if t.keep_claim else None,
                now_value,
                1 if t.uncount else 0,
                t.delivery_id,
                worker,
            )
            for t in transitions
        ]

    async def _aconnection(self) -> Any:
        if self._aconn is None:
            import psycopg

            args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            kwargs.pop("context", None)  # SQLAlchemy's adapters map is for its own connections
            self._aconn = await psycopg.AsyncConnection.connect(*args, autocommit=True, **kwargs)
        return self._aconn

    async def _apply_async(self, transitions: list[Transition], sending: list[int], renew: bool) -> set[int]:
        now = self._clock()
        lease_until = now + self._lease
        statements = self._statements
        conn = await self._aconnection()
        try:
            if renew:
                await conn.execute(statements.renew, (lease_until, self._campaign_id, self._worker))
            if not transitions and not sending:
                return set()
            if {t.delivery_id for t in transitions}.isdisjoint(sending):
                cursor = await conn.execute(
                    self._group_commit_pg, self._group_parameters(transitions, sending, lease_until, now)
                )
                return {row[0] for row in await cursor.fetchall()}
            # A delivery's outcome and its next ``sending`` mark in one group (a retry without delay):
            # the outcome first, in one transaction with the marks.
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(
                    statements.transition, self._transition_rows(transitions, lease_until, now)
                )
                await cursor.execute(
                    statements.mark_sending(len(sending)), (lease_until, now, self._worker, *sending)
                )
                return {row[0] for row in await cursor.fetchall()}
        except BaseException:
            await self._drop_aconnection()
            raise

    def _group_parameters(
        self, transitions: list[Transition], sending: list[int], lease_until: datetime, now: datetime
    ) -> dict[str, Any]:
        return {
            "ids": [t.delivery_id for t in transitions],
            "states": [t.state for t in transitions],
            "codes": [t.code for t in transitions],
            "errors": [t.error for t in transitions],
            "next": [t.next_attempt_at for t in transitions],
            "sent": [t.sent_at for t in transitions],
            "keep": [t.keep_claim for t in transitions],
            "uncount": [1 if t.uncount else 0 for t in transitions],
            "worker": self._worker,
            "lease": lease_until,
            "now": now,
            "sending": sending,
        }

    async def _claim_async(self, limit: int, now: datetime) -> list[ClaimedRow]:
        conn = await self._aconnection()
        try:
            async with conn.transaction(), conn.cursor() as cursor:
                for after in dict.fromkeys((self._claim_after, 0)):
                    compiled = claim_statement(
                        campaign_id=self._campaign_id,
                        worker=self._worker,
                        now=now,
                        lease=self._lease,
                        limit=limit,
                        retry_unknown=self._retry_unknown,
                        after=after,
                        sqlite=False,
                    ).compile(dialect=self._engine.dialect, compile_kwargs={"render_postcompile": True})
                    await cursor.execute(str(compiled), compiled.params)
                    claimed, tokens = with_tokens(await cursor.fetchall(), self._message_domain)
                    if claimed:
                        break
                if tokens:
                    await cursor.executemany(token_sql(self._engine.dialect), tokens)
        except BaseException:
            await self._drop_aconnection()
            raise
        return self._claimed(claimed)

    async def _drop_aconnection(self) -> None:
        conn, self._aconn = self._aconn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def _apply(self, transitions: list[Transition], sending: list[int], renew: bool) -> set[int]:
        now = self._clock()
        lease_until = now + self._lease
        marked: set[int] = set()
        statements = self._statements
        stamp = statements.timestamp
        now_value, lease_value = stamp(now), stamp(lease_until)
        worker = self._worker
        conn = self._connection()
        try:
            with self._transaction(conn):
                # The DB-API cursor itself: even exec_driver_sql cost SQLAlchemy more per group commit
                # than the database's own work (py-spy).
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    if transitions:
                        cursor.executemany(
                            statements.transition, self._transition_rows(transitions, lease_value, now_value)
                        )
                    if sending:
                        cursor.execute(
                            statements.mark_sending(len(sending)), (lease_value, now_value, worker, *sending)
                        )
                        marked = {row[0] for row in cursor.fetchall()}
                    if renew:
                        cursor.execute(statements.renew, (lease_value, self._campaign_id, worker))
                finally:
                    cursor.close()
        except BaseException as exc:
            self._drop_connection(conn, exc)
            raise
        return marked

    def _transaction(self, conn: Connection) -> contextlib.AbstractContextManager[Any]:
        """The group commit's transaction. On SQLite it is ``BEGIN IMMEDIATE`` and ``COMMIT`` on the
        driver's connection: through SQLAlchemy (its begin event, an execution context for the BEGIN,
        the commit) they cost a tenth of the event loop's time per letter (py-spy, 100,000 letters),
        more than the two statements themselves. The SQLAlchemy connection is not used in between."""
        if self._inline:
            return _sqlite_transaction(conn.connection.driver_connection)
        return conn.begin()

    def _connection(self) -> Connection:
        # One connection for the writer's lifetime: a checkout (and, on PostgreSQL, its pre-ping) per
        # group commit cost more than the commit itself.
        if self._conn is None:
            self._conn = self._engine.connect()
            if self._inline:
                self._set_busy_timeout(self._conn, 0)
            if self._checkpointer is not None:
                self._set_autocheckpoint(self._conn, 0)
        return self._conn

    @staticmethod
    def _set_autocheckpoint(conn: Connection, pages: int) -> None:
        conn.connection.driver_connection.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")  # type: ignore[union-attr]

    @staticmethod
    def _set_busy_timeout(conn: Connection, milliseconds: int) -> None:
        # On the DB-API connection itself: through SQLAlchemy the PRAGMA would open a transaction.
        conn.connection.driver_connection.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")  # type: ignore[union-attr]

    async def _execute(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ``fn`` (a transaction on the writer's connection): on SQLite right here on the event
        loop, on PostgreSQL on the writer's thread.

        SQLite: a commit is a few dozen microseconds of CPU. On a thread, every step of it gives up and
        takes back the GIL, and taking it back while the event loop runs costs up to the switch interval
        each time: about 3 ms per group commit, for all connections waiting on it (bench: ~4 letters
        per commit, ~1,000 letters/s at most). On the loop the commit costs just its CPU. So that the
        loop never waits for another process's write lock, the connection does not wait (busy timeout
        0): when the database is locked, this one transaction goes to the thread, which waits as usual.
        """
        loop = asyncio.get_running_loop()
        if self._inline:
            try:
                return fn(*args)
            except Exception as exc:
                if not _is_busy(exc):
                    raise
            return await loop.run_in_executor(self._executor, self._patiently, fn, *args)
        return await loop.run_in_executor(self._executor, fn, *args)

    def _patiently(self, fn: Callable[..., _T], *args: Any) -> _T:
        conn = self._connection()
        self._set_busy_timeout(conn, SQLITE_BUSY_TIMEOUT_MS)
        try:
            return fn(*args)
        finally:
            if self._conn is conn:
                self._set_busy_timeout(conn, 0)

    def _claimed(self, rows: list[ClaimedRow]) -> list[ClaimedRow]:
        if rows:
            self._claim_after = rows[-1].id
        return rows

    def _claim(self, limit: int, now: datetime) -> list[ClaimedRow]:
        conn = self._connection()
        try:
            with conn.begin():
                for after in dict.fromkeys((self._claim_after, 0)):
                    rows = claim(
                        conn,
                        campaign_id=self._campaign_id,
                        worker=self._worker,
                        now=now,
                        lease=self._lease,
                        limit=limit,
                        retry_unknown=self._retry_unknown,
                        message_domain=self._message_domain,
                        after=after,
                    )
                    if rows:
                        break
                return self._claimed(rows)
        except BaseException as exc:
            self._drop_connection(conn, exc)
            raise

    def _drop_connection(self, conn: Connection, exc: BaseException) -> None:
        if _is_busy(exc):
            return  # only another writer in the way; the connection is fine
        # The connection may be unusable (server gone); the next batch takes a fresh one.
        self._conn = None
        conn.invalidate()

    def _release(self, ids: list[int] | None) -> int:
        conn = self._connection()
        with conn.begin():
            return release_claims(conn, campaign_id=self._campaign_id, worker=self._worker, ids=ids)
