"""Ctrl-C during `outreach send` against servers that stall (issue 11: items 20 and 21).

Real `outreach send` processes and real signals; the assertions are on the database and on what the
server received. The one line the first Ctrl-C prints on stderr is part of the contract."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP
from sqlalchemy import Engine, text

from tests.fixtures_sending import CampaignFactory, add_raadsleden
from tests.smtpd import Fault, Handler, SmtpServer, free_port


class StallingHandler(Handler):
    """Takes EHLO, then never answers MAIL FROM: no letter's body is ever written."""

    def __init__(self) -> None:
        super().__init__()
        self.mails = 0

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        with self.lock:
            self.mails += 1
        await asyncio.sleep(3600)
        return "250 OK"  # pragma: no cover - never reached


@pytest.fixture
def stalling_server() -> Iterator[tuple[StallingHandler, int]]:
    handler = StallingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    yield handler, port
    # Its handlers sleep for an hour; the loop thread is a daemon, stopping it waits for nothing.
    threading.Thread(target=controller.stop, daemon=True).start()


def start_sender(db_url: str, port: int, *extra: str, timeout: float = 20) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        OUTREACH_DATABASE_URL=db_url,
        OUTREACH_SMTP_HOST="127.0.0.1",
        OUTREACH_SMTP_PORT=str(port),
        OUTREACH_SMTP_TLS="none",
        OUTREACH_SMTP_TIMEOUT=str(timeout),
    )
    command = [sys.executable, "-m", "outreach", "send", "--campaign", "testbrief", "--yes", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_stderr_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line on the process's stderr, within ``timeout`` seconds."""
    assert process.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    line = b""
    deadline = time.monotonic() + timeout
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(left):
            raise AssertionError(f"nothing on stderr within {timeout} s (so far: {line!r})")
        chunk = os.read(process.stderr.fileno(), 1)
        if not chunk:
            break
        line += chunk
    return line.decode()


def states(engine: Engine) -> dict[str, tuple[str, int]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.email_normalized, d.state, d.attempts FROM delivery d "
                "JOIN contact c ON c.id = d.contact_id"
            )
        ).all()
    return {str(a): (str(s), int(n)) for a, s, n in rows}


STOPPING = re.compile(
    r"^Stopping: waiting for (\d+) letters? in flight \(at most (\d+) s\); Ctrl-C again to stop now\n$"
)


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_a_second_ctrl_c_puts_letters_whose_body_was_never_written_back_in_the_queue(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    stalling_server: tuple[StallingHandler, int],
    pipelining: bool,
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 8)
    handler, port = stalling_server
    handler.pipelining = pipelining
    process = start_sender(db_url, port, "--concurrency", "4")
    wait_for(lambda: handler.mails >= 4, "four connections waiting for their MAIL FROM reply")
    process.send_signal(signal.SIGINT)
    acknowledged = STOPPING.match(read_stderr_line(process, timeout=3))
    assert acknowledged is not None and acknowledged.groups() == ("4", "20")
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=15)
    assert process.returncode == 1
    assert {a: states(engine)[a] for a in addresses} == {a: ("pending", 0) for a in addresses}
    assert not handler.messages
    out = stdout.decode()
    assert "unknown 0" in out  # the summary line ...
    assert "Campaign testbrief: pending 8." in out  # ... and the campaign line agree


def test_a_second_ctrl_c_marks_unknown_exactly_the_letters_the_server_has(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 6)
    server = smtpd()
    held = addresses[:3]  # the server keeps these bodies and never answers
    server.handler.faults = {a: Fault("hang-after-body") for a in held}
    process = start_sender(db_url, server.port, "--concurrency", "6")
    wait_for(lambda: len(server.handler.messages) >= 6, "every body to reach the server")
    wait_for(lambda: sum(s == "sent" for s, _ in states(engine).values()) == 3, "three letters sent")
    process.send_signal(signal.SIGINT)
    acknowledged = STOPPING.match(read_stderr_line(process, timeout=3))
    assert acknowledged is not None and acknowledged.group(1) == "3"
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=15)
    final = states(engine)
    assert {a: final[a][0] for a in held} == {a: "unknown" for a in held}
    assert {final[a][0] for a in addresses[3:]} == {"sent"}
    out = stdout.decode()
    assert re.search(r"^Sent 3, deferred 0, failed 0, unknown 3, skipped 0 in ", out, re.M), out
    assert "Campaign testbrief: sent 3, unknown 3." in out


def test_the_first_ctrl_c_is_acknowledged_at_once_and_the_wait_is_bounded(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    stalling_server: tuple[StallingHandler, int],
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 4)
    handler, port = stalling_server
    process = start_sender(db_url, port, "--concurrency", "2", timeout=4)
    wait_for(lambda: handler.mails >= 2, "two connections waiting for their MAIL FROM reply")
    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    acknowledged = STOPPING.match(read_stderr_line(process, timeout=1.5))
    assert acknowledged is not None and acknowledged.groups() == ("2", "4")
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - signalled < 4 + 6  # the bound, and the time to settle and exit
    assert process.returncode == 1
    assert "Resume with: outreach send --campaign testbrief" in stderr.decode()
    final = states(engine)
    # Nothing was handed over: the letters wait for the next run, none is 'unknown' or left 'sending'.
    assert {final[a][0] for a in addresses} <= {"pending", "deferred"}
    assert not handler.messages


def test_ctrl_c_with_nothing_in_flight_stops_at_once(
    engine: Engine, db_url: str, make_campaign: CampaignFactory
) -> None:
    import socket

    make_campaign()
    addresses = add_raadsleden(engine, 3)
    listener = socket.socket()  # accepts connections and never greets: every slot is still connecting
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(30)
    accepted: list[socket.socket] = []
    try:
        process = start_sender(db_url, listener.getsockname()[1], "--concurrency", "2", timeout=30)
        while len(accepted) < 2:  # both slots are waiting for a greeting
            accepted.append(listener.accept()[0])
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert read_stderr_line(process, timeout=2) == "Stopping: no letter in flight.\n"
        process.communicate(timeout=15)
        assert time.monotonic() - signalled < 8
    finally:
        for conn in accepted:
            conn.close()
        listener.close()
    assert {s for s, _ in states(engine).values()} == {"pending"}
    assert len(addresses) == 3
