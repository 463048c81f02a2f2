"""The state writer's SQLite committer: group commits on the event loop, and the WAL checkpointer.

A group commit is a few dozen microseconds of CPU. On a thread, every step of it gives up and takes back
the GIL, and taking it back while the event loop runs costs up to the switch interval each time: about
3 ms per group commit, for all connections waiting on it (bench: ~4 letters per commit, ~1,000 letters/s
at most). On the loop the commit costs just its CPU. So that the loop never waits for another process's
write lock, the writer's connection does not wait (busy timeout 0): when the database is locked, that
one transaction goes to the writer's thread, which waits as usual (``_execute``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine

from outreach.models import DeliveryState
from outreach.sending.claim import CLAIMABLE, DELIVERY, ClaimedRow, claim, release_claims
from outreach.sending.writer.committer import Scope, Transition
from outreach.sqlite_driver import SQLITE_BUSY_TIMEOUT_MS, conversions, sqlite_busy, sqlite_transaction

_T = TypeVar("_T")

#: SQLite's default ``wal_autocheckpoint``.
SQLITE_AUTOCHECKPOINT_PAGES = 1000

# The two hot statements as plain SQL for the driver's own ``executemany``: compiling a Core ``update()``
# and binding its parameters row by row cost SQLAlchemy about as much CPU per letter as composing it.
_CLAIMABLE = ", ".join(f"'{state}'" for state in CLAIMABLE)
_TRANSITION = (
    f"UPDATE {DELIVERY.name} SET state = ?, last_code = ?, last_error = ?, next_attempt_at = ?, "
    "sent_at = ?, claimed_by = ?, lease_until = ?, updated_at = ?, attempts = attempts - ? "
    "WHERE id = ? AND claimed_by = ?"
)
_RENEW = (
    f"UPDATE {DELIVERY.name} SET lease_until = ? "
    f"WHERE campaign_id = ? AND claimed_by = ? AND state IN ({_CLAIMABLE}, '{DeliveryState.SENDING}')"
)


@lru_cache(maxsize=64)
def _mark_sending(count: int) -> str:
    return (
        f"UPDATE {DELIVERY.name} SET state = '{DeliveryState.SENDING}', attempts = attempts + 1, "
        "lease_until = ?, updated_at = ? "
        f"WHERE claimed_by = ? AND state IN ({_CLAIMABLE}) AND id IN ({', '.join(['?'] * count)}) "
        "RETURNING id"
    )


class WalCheckpointer:
    """Checkpoints the write-ahead log on a thread of its own while the writer commits.

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


class SqliteCommitter:
    """``Committer`` for SQLite: one connection for the writer's lifetime, used on the event loop."""

    def __init__(self, engine: Engine, scope: Scope) -> None:
        self._engine = engine
        self._scope = scope
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-writer")
        self._conn: Connection | None = None
        # The driver's own statements bypass the column types: times go as SQLAlchemy would store them.
        self._stamp = conversions(engine.dialect).stamp
        database = engine.url.database
        self.checkpointer: WalCheckpointer | None = None
        if database not in (None, "", ":memory:") and not database.startswith("file:"):
            self.checkpointer = WalCheckpointer(database)

    def start(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()

    async def commit(
        self, transitions: Sequence[Transition], sending: Sequence[int], renew: bool
    ) -> set[int]:
        return await self._execute(self._apply, transitions, sending, renew)

    async def claim(self, limit: int, now: datetime, after: int) -> list[ClaimedRow]:
        return await self._execute(self._claim, limit, now, after)

    async def release(self, ids: Sequence[int] | None) -> int:
        return await self._execute(self._release, ids)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_connection)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------------------ transactions

    def _apply(self, transitions: Sequence[Transition], sending: Sequence[int], renew: bool) -> set[int]:
        scope = self._scope
        now = scope.clock()
        stamp = self._stamp
        now_value, lease_value = stamp(now), stamp(now + scope.lease)
        worker = scope.worker
        marked: set[int] = set()
        conn = self._connection()
        try:
            with sqlite_transaction(conn.connection.driver_connection):  # type: ignore[arg-type]
                # The DB-API cursor itself: even exec_driver_sql cost SQLAlchemy more per group commit
                # than the database's own work (py-spy).
                cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                try:
                    if transitions:
                        cursor.executemany(
                            _TRANSITION,
                            [t.parameters(worker, lease_value, now_value, stamp) for t in transitions],
                        )
                    if sending:
                        cursor.execute(
                            _mark_sending(len(sending)), (lease_value, now_value, worker, *sending)
                        )
                        marked = {row[0] for row in cursor.fetchall()}
                    if renew:
                        cursor.execute(_RENEW, (lease_value, scope.campaign_id, worker))
                finally:
                    cursor.close()
        except BaseException as exc:
            self._drop_connection(conn, exc)
            raise
        return marked

    def _claim(self, limit: int, now: datetime, after: int) -> list[ClaimedRow]:
        scope = self._scope
        conn = self._connection()
        try:
            with conn.begin():
                for start in dict.fromkeys((after, 0)):
                    rows = claim(
                        conn,
                        campaign_id=scope.campaign_id,
                        worker=scope.worker,
                        now=now,
                        lease=scope.lease,
                        limit=limit,
                        retry_unknown=scope.retry_unknown,
                        message_domain=scope.message_domain,
                        after=start,
                    )
                    if rows:
                        break
                return rows
        except BaseException as exc:
            self._drop_connection(conn, exc)
            raise

    def _release(self, ids: Sequence[int] | None) -> int:
        conn = self._connection()
        with conn.begin():
            return release_claims(
                conn, campaign_id=self._scope.campaign_id, worker=self._scope.worker, ids=ids
            )

    # ---------------------------------------------------------------------------- the connection

    async def _execute(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn`` (a transaction) right here on the event loop; on the writer's thread, waiting for the
        lock, when another connection holds it (see the module's docstring)."""
        try:
            return fn(*args)
        except Exception as exc:
            if not sqlite_busy(exc):
                raise
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._patiently, fn, *args)

    def _patiently(self, fn: Callable[..., _T], *args: Any) -> _T:
        conn = self._connection()
        _set_busy_timeout(conn, SQLITE_BUSY_TIMEOUT_MS)
        try:
            return fn(*args)
        finally:
            if self._conn is conn:
                _set_busy_timeout(conn, 0)

    def _connection(self) -> Connection:
        # One connection for the writer's lifetime: a checkout per group commit cost more than the commit.
        if self._conn is None:
            self._conn = self._engine.connect()
            _set_busy_timeout(self._conn, 0)
            if self.checkpointer is not None:
                _set_autocheckpoint(self._conn, 0)
        return self._conn

    def _drop_connection(self, conn: Connection, exc: BaseException) -> None:
        if sqlite_busy(exc):
            return  # only another writer in the way; the connection is fine
        # The connection may be unusable; the next transaction takes a fresh one.
        self._conn = None
        conn.invalidate()

    def _close_connection(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        if self._conn is not None:
            with contextlib.suppress(Exception):  # back to the pool as it came
                if self.checkpointer is not None:
                    _set_autocheckpoint(self._conn, SQLITE_AUTOCHECKPOINT_PAGES)
                # Else the pool's next user (the next send's recovery, planning) fails at once on a lock.
                _set_busy_timeout(self._conn, SQLITE_BUSY_TIMEOUT_MS)
            self._conn.close()
            self._conn = None


def _set_autocheckpoint(conn: Connection, pages: int) -> None:
    conn.connection.driver_connection.execute(f"PRAGMA wal_autocheckpoint = {int(pages)}")  # type: ignore[union-attr]


def _set_busy_timeout(conn: Connection, milliseconds: int) -> None:
    # On the DB-API connection itself: through SQLAlchemy the PRAGMA would open a transaction.
    conn.connection.driver_connection.execute(f"PRAGMA busy_timeout = {int(milliseconds)}")  # type: ignore[union-attr]
