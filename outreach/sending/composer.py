"""Composing letters in a process of its own, so that the second core does that work.

Composing a letter (templates, MIME, quoted-printable) costs more CPU than sending it and recording its
state together. On a thread it shares the GIL with the event loop that serves the SMTP connections, and
each batch it composes stalls them. ``ComposerProcess`` runs ``CampaignLetters.compose`` in a child
process instead: the parent claims a batch (claiming is a database write, and it stays with the parent's
state writer), sends the claimed rows, and the child reads the recipients with a read-only query of its
own, composes (and DKIM-signs) the letters and sends back the bytes and the rows to skip. The child never
writes to the database.

The child is **forked** when the parent has no other thread, as in ``outreach send`` (the composer starts
before the event loop, the state writer and the progress bar). It has the modules and the compiled
templates at once; spawned, it spent about a second importing them again while the parent composed the
first letters itself, sharing its GIL with the connections (10,000 letters, four interleaved pairs: whole
process 3.19-4.49 s spawned, 2.89-3.31 s forked, and 0.5 s less CPU). It never touches what it inherits
from the parent's database: it opens its own engine from the URL, the caller has frozen the collector
(``gc.freeze``, so no inherited object is collected and finalised in the child), and it ends with
``os._exit``. With other threads running (a program that embeds ``run_send``, a test's SMTP server thread)
forking could copy a lock one of them holds, so the child is spawned (a fresh interpreter) instead. Either
way it exits when the parent closes the pipe, or dies (the pipe reads end-of-file).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from outreach.errors import DatabaseError, OutreachError
from outreach.sending.claim import ClaimedRow
from outreach.sending.jobs import Job, LetterSource

if TYPE_CHECKING:
    from outreach.letters.campaign import CampaignConfig

log = logging.getLogger(__name__)


class ComposerProcessError(OutreachError):
    """The composing process stopped or failed unexpectedly."""


def start_method() -> str:
    """``fork`` while this is the process's only thread (and the platform forks), else ``spawn``."""
    if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return "spawn"


class ComposerProcess:
    """The parent's handle on the child. ``request`` and ``receive`` are blocking (call them on a thread)."""

    def __init__(self, database_url: str, campaign: CampaignConfig) -> None:
        fork = start_method() == "fork"
        context = multiprocessing.get_context("fork") if fork else multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe(duplex=True)
        self._process = context.Process(
            target=_child_main,
            # The parent's end goes along so that a forked child can close its copy: it would never read
            # end-of-file otherwise.
            args=(child_conn, self._conn, database_url, campaign),
            name="outreach-composer",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        self._ready = False
        self.failed: OutreachError | None = None
        # Held while a request is out: closing the pipe under a thread blocked in recv() would not wake it.
        self._busy = threading.Lock()

    @property
    def ready(self) -> bool:
        """The child has started and compiled the templates (never blocks). False for good when it
        could not start: the caller then composes in its own process, as for a small run."""
        if not self._ready and self.failed is None and self._conn.poll():
            try:
                self._ready = self._take() == "ready"
            except OutreachError as exc:
                # E.g. a program that calls run_send() from a script without an ``if __name__ ==
                # "__main__"`` guard: spawn cannot start the child there.
                self.failed = exc
                log.warning("composing in this process: %s", exc.message)
        return self._ready

    def compose(
        self, rows: Sequence[ClaimedRow], now: datetime
    ) -> tuple[list[Job], list[tuple[ClaimedRow, str]]]:
        """Blocking: the letters of ``rows``, as ``LetterSource.compose``."""
        with self._busy:
            if self.failed is not None:
                raise self.failed
            if not self._ready:
                self._ready = self._take() == "ready"
            try:
                self._conn.send((list(rows), now))
            except OSError as exc:
                raise self._died(exc) from None
            result = self._take()
        jobs, unsendable = result
        return jobs, unsendable

    def _take(self) -> Any:
        try:
            message = self._conn.recv()
        except (EOFError, OSError) as exc:
            raise self._died(exc) from None
        if isinstance(message, _Failure):
            raise message.rebuild()
        return message

    def _died(self, exc: BaseException) -> ComposerProcessError:
        self._process.join(1)
        code = self._process.exitcode
        return ComposerProcessError(f"the letter-composing process stopped (exit code {code}): {exc}")

    def close(self, timeout: float = 10.0) -> None:
        """Let the child finish what it is doing (a claim in progress commits) and exit."""
        # A batch being composed is waited for (it takes milliseconds); its rows stay claimed by the
        # parent, which gives back whatever it did not send.
        with self._busy:
            self._conn.close()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout)


@dataclass(frozen=True)
class _Failure:
    kind: type[OutreachError] | None
    message: str
    hint: str | None

    def rebuild(self) -> OutreachError:
        if self.kind is None:
            return ComposerProcessError(self.message)
        error = self.kind.__new__(self.kind)
        OutreachError.__init__(error, self.message, hint=self.hint)
        return error


def _child_main(
    conn: Connection, parent_end: Connection, database_url: str, campaign: CampaignConfig
) -> None:
    parent_end.close()
    # Ctrl-C reaches the whole process group; the parent decides how to stop and then closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from outreach.db import make_engine
        from outreach.sending.letters import CampaignLetters

        engine = make_engine(database_url)
        letters = CampaignLetters(engine, campaign)
    except BaseException as exc:  # reported to the parent, which stops the run
        _send_failure(conn, exc)
        return
    try:
        _serve(conn, letters)
    finally:
        engine.dispose()
        conn.close()
    # The child only read the database and wrote to the pipe; both are closed. The interpreter's teardown
    # of its modules took ~0.4 s, which the parent waited for (``close``) at the end of every run; and a
    # forked child must not run the parent's atexit handlers or finalise what it inherited.
    sys.stderr.flush()
    os._exit(0)


def _serve(conn: Connection, letters: LetterSource) -> None:
    try:
        conn.send("ready")
        while True:
            try:
                rows, now = conn.recv()
            except EOFError:
                return
            try:
                result = letters.compose(rows, now)
            except BaseException as exc:  # reported to the parent, which stops the run
                _send_failure(conn, exc)
                continue
            conn.send(result)
    except OSError:
        return  # the parent is gone or closed the pipe


def _send_failure(conn: Connection, exc: BaseException) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    if isinstance(exc, OutreachError):
        failure = _Failure(type(exc), exc.message, exc.hint)
    elif isinstance(exc, SQLAlchemyError):
        from outreach.sending.failures import reason

        failure = _Failure(DatabaseError, f"cannot read the recipients: {reason(exc)}", None)
    else:
        text = "".join(traceback.format_exception(exc)).rstrip()
        failure = _Failure(None, f"the letter-composing process failed:\n{text}", None)
    with contextlib.suppress(OSError):
        conn.send(failure)
