"""The next letter's envelope travels behind the current body (RFC 2920 3.1; SmtpConnection.send ``then``).

One connection sends many letters here, so almost every letter is such a successor: its MAIL, RCPT and
DATA reach the server before the previous letter's outcome is known, and faults on either side of that
boundary must still end in the right state with every letter received at most once.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Engine

from outreach.sending.run import run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import Fault, SmtpServer
from tests.test_send_faults import options, states


def test_faults_around_a_pipelined_successor_end_in_the_right_states(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 40)
    server = smtpd(pipelining=True)
    body_refused, cut_after_body, greylisted_once, unknown_user, cut_at_rcpt = (
        addresses[5],
        addresses[10],
        addresses[15],
        addresses[20],
        addresses[25],
    )
    server.handler.faults = {
        body_refused: Fault("data", "554 5.7.1 rejected as spam"),
        cut_after_body: Fault("disconnect-after-body", times=1),
        greylisted_once: Fault("rcpt", "451 4.7.1 greylisted", times=1),
        unknown_user: Fault("rcpt", "550 5.1.1 no such user"),
        cut_at_rcpt: Fault("disconnect-at-rcpt", times=1),
    }
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options(concurrency=1))
    rows = states(engine)
    received = Counter(r for m in server.handler.messages for r in m.rcpt_tos)

    assert max(received.values()) == 1
    assert rows[body_refused].state == "failed" and rows[body_refused].last_code == 554
    assert rows[cut_after_body].state == "unknown" and received[cut_after_body] == 1
    # Its successor's envelope was lost with the connection: sent once, on the next connection.
    assert rows[addresses[11]].state == "sent" and received[addresses[11]] == 1
    assert rows[greylisted_once].state == "sent" and rows[greylisted_once].attempts == 2
    assert rows[unknown_user].state == "failed" and rows[unknown_user].last_code == 550
    assert rows[cut_at_rcpt].state == "sent" and received[cut_at_rcpt] == 1
    assert rows[addresses[24]].state == "sent" and received[addresses[24]] == 1
    others = set(addresses) - {body_refused, cut_after_body, unknown_user}
    assert {rows[a].state for a in others} == {"sent"}
    assert {a for a, n in received.items() if n} == others | {cut_after_body}
    assert (summary.sent, summary.failed, summary.unknown) == (37, 2, 1)
    # The refused body's successor went on the same connection (its envelope travelled behind that
    # body); each cut cost a fresh one.
    assert rows[addresses[6]].state == "sent" and received[addresses[6]] == 1
    assert server.handler.sessions == 3


class _RecordingServer:
    """A minimal ESMTP server with PIPELINING that keeps every chunk it reads, to see what travelled in
    one write. Runs its own event loop on a thread, on 127.0.0.1."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.bodies: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()
        self._loop.run_until_complete(server.wait_closed())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 recorder ESMTP\r\n")
        buffer = b""
        in_data = False
        body = b""
        while chunk := await reader.read(65536):
            self.chunks.append(chunk)
            buffer += chunk
            while True:
                if in_data:
                    end = buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    body, buffer, in_data = body + buffer[: end + 2], buffer[end + 5 :], False
                    self.bodies.append(body)
                    writer.write(b"250 2.0.0 queued\r\n")
                    continue
                end = buffer.find(b"\r\n")
                if end < 0:
                    break
                line, buffer = buffer[:end], buffer[end + 2 :]
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-recorder\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    in_data, body = True, b""
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()

    def __enter__(self) -> _RecordingServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def recording_server() -> Iterator[_RecordingServer]:
    with _RecordingServer() as server:
        yield server


def test_the_next_envelope_goes_out_with_the_body(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, recording_server: _RecordingServer
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 20)
    summary = run_send(engine, smtp_settings(db_url, recording_server.port), campaign, options(concurrency=1))
    assert summary.sent == 20
    assert len(recording_server.bodies) == 20
    # The body's end and the next letter's MAIL FROM in one read: one write per letter.
    joined = [c for c in recording_server.chunks if b"\r\n.\r\nMAIL FROM:<" in c]
    assert len(joined) >= 10
    # The last letters go one by one (no successor waiting beyond the connections), then QUIT.
    assert recording_server.chunks[-1] == b"QUIT\r\n"
    assert sorted(rcpt for rcpt in addresses) == sorted(
        {a for a in addresses if any(a.encode() in b for b in recording_server.chunks)}
    )
