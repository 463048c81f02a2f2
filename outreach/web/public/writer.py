"""One thread records the one-click opt-outs, many in one transaction (a group commit).

Fifty mail clients unsubscribing at once would otherwise be fifty transactions, each taking SQLite's
write lock in turn beside a running send (and sleeping in SQLite's busy handler while they wait: the
long tail of the first measurement, docs/performance.md *Web*). A batch is what arrives within LINGER
of its first request (or while the previous batch commits); a lone request waits LINGER, 5 ms.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, PoolProxiedConnection, event

from outreach.db import make_engine
from outreach.models import utcnow
from outreach.sending.writer import WalCheckpointer
from outreach.sqlite_driver import SQLITE_BUSY_TIMEOUT_MS, conversions, sqlite_transaction, while_locked
from outreach.web.public import store
from outreach.web.public.sqlite_batch import DriverStatements

log = logging.getLogger(__name__)
MAX_BATCH = 200
# A batch waits this long for company after its first request: at most ~200 write transactions a second
# however many requests come, so a running send's commits find the write lock free between them instead
# of sleeping in SQLite's busy handler (which backs off 1, 2, 5, 10... ms).
LINGER = 0.005
# How long a batch waits for the write lock (a running send's commits) before its requests get the 500
# page: every other connection's busy timeout.
LOCK_PATIENCE = SQLITE_BUSY_TIMEOUT_MS / 1000

Outcome = tuple[store.Letter, store.OptOutResult] | None


@dataclass(frozen=True)
class _Request:
    token: str
    scope: store.Scope
    one_click: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]


class OptOutWriter:
    def __init__(self, engine: Engine) -> None:
        self.engine = self._shared = engine
        self._checkpointer: WalCheckpointer | None = None
        path = engine.url.database
        if engine.dialect.name == "sqlite" and path not in (None, "", ":memory:"):
            # As the sender does: the writer's commits never checkpoint the WAL themselves (a commit
            # that did stalled a whole batch by ~100 ms); a thread of its own checkpoints PASSIVE. Its
            # connection does not wait in SQLite's busy handler either: the writer asks for the write
            # lock itself (outreach.sqlite_driver.while_locked), every half millisecond.
            self.engine = make_engine(str(engine.url))
            event.listen(self.engine, "connect", _writer_pragmas)
            self._checkpointer = WalCheckpointer(str(path))
        self._driver = _DriverWriter(self.engine) if engine.dialect.name == "sqlite" else None
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="opt-out-writer", daemon=True)
        self._thread.start()
        if self._checkpointer is not None:
            self._checkpointer.start()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(30)
            self._thread = None
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self.engine is not self._shared:
            self.engine.dispose()  # our own (SQLite); the shared engine belongs to the app

    async def record(self, token: str, scope: store.Scope, *, one_click: bool) -> Outcome:
        assert self._thread is not None, "start() the writer with the app (its lifespan)"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._queue.put(_Request(token, scope, one_click, loop, future))
        return await future

    def _run(self) -> None:
        try:
            self._batches()
        finally:
            if self._driver is not None:
                self._driver.close()

    def _batches(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            time.sleep(LINGER)
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Request]) -> None:
        now = utcnow()
        requests = [store.OptOutRequest(r.token, r.scope, r.one_click) for r in batch]
        try:
            if self._driver is not None:
                outcomes = self._driver.write(requests, now)
            else:
                with self.engine.begin() as conn:
                    outcomes = store.opt_out_many(store.CoreStatements(conn), requests, now=now)
        except Exception as exc:  # the database failed: every request of the batch gets the 500 page
            log.error("recording %d opt-out(s) failed: %s", len(batch), type(exc).__name__)
            _wake(batch, [exc] * len(batch))
            return
        _wake(batch, outcomes)


class _DriverWriter:
    """The batches on SQLite by the driver's own SQL (sqlite_batch): one connection of the engine's pool
    for the writer thread's lifetime, taken and given back on that thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.convert = conversions(engine.dialect)
        self._conn: PoolProxiedConnection | None = None

    def write(self, requests: list[store.OptOutRequest], now: datetime) -> list[Outcome]:
        if self._conn is None:
            self._conn = self.engine.raw_connection()
        driver: sqlite3.Connection = self._conn.driver_connection  # type: ignore[assignment]

        def transaction() -> list[Outcome]:
            with sqlite_transaction(driver):
                return store.opt_out_many(DriverStatements(driver, self.convert), requests, now=now)

        try:
            return while_locked(transaction, patience=LOCK_PATIENCE)
        except Exception:
            self._conn.invalidate()  # perhaps unusable: the next batch takes a fresh connection
            self._conn = None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _writer_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")
    dbapi_conn.execute("PRAGMA busy_timeout=0")


def _wake(batch: list[_Request], results: Sequence[Outcome | Exception]) -> None:
    """Hand each request its result on its event loop: one wake-up of each loop per batch, not per
    request (each call_soon_threadsafe writes to the loop's self-pipe)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome | Exception]]] = {}
    for request, result in zip(batch, results, strict=True):
        by_loop.setdefault(request.loop, []).append((request.future, result))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Outcome], Outcome | Exception]]) -> None:
    for future, result in settled:
        if future.done():  # the client went away; what it asked for is recorded anyway
            continue
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
