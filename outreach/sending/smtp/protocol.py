"""Reading SMTP replies off the transport: multi-line aware, several per read, with one reply timer."""

from __future__ import annotations

import asyncio
from collections import deque

from outreach.sending.smtp.reply import SmtpReply


class ReplyReader(asyncio.Protocol):
    """Reads SMTP replies (multi-line aware) into a queue; ``read(n)`` waits for n complete replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._lines: list[str] = []
        self.replies: deque[SmtpReply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self.lost: str | None = None
        # The reply timeout: a deadline per read, and at most one timer per connection that checks it
        # when it fires (and re-arms for a later deadline); docs/performance.md has why.
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # Whole lines are split off the chunk at once: with the next envelope behind each body, a read
        # holds four replies ("250 queued", "250 OK", "250 OK", "354 go ahead").
        buffer = self._buffer
        if buffer:
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        last = data.rfind(b"\n")
        if last < 0:
            buffer += data
            return
        if last + 1 < len(data):
            buffer += data[last + 1 :]
        replies, lines = self.replies, self._lines
        for line in data[:last].split(b"\n"):
            try:
                code = int(line[:3])
            except ValueError:
                self._fail(f"malformed reply line {line[:80]!r}")
                return
            text = line[4:].decode("utf-8", "replace").strip()
            if line[3:4] == b"-":
                lines.append(text)
            elif lines:
                lines.append(text)
                replies.append(SmtpReply(code, "\n".join(lines)))
                lines.clear()
            else:
                replies.append(SmtpReply(code, text))
        waiter = self._waiter
        if waiter is not None and len(replies) >= self._wanted and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail("the server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else "the server closed the connection")

    def _fail(self, text: str) -> None:
        if self.lost is None:
            self.lost = text
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def read(self, count: int, timeout: float) -> list[SmtpReply]:
        if len(self.replies) < count and self.lost is None:
            self._wanted = count
            waiter = self._waiter = self._loop.create_future()
            deadline = self._deadline = self._loop.time() + timeout
            self._timeout = timeout
            timer = self._timer
            if timer is None or timer.when() > deadline:
                if timer is not None:
                    timer.cancel()
                self._timer = self._loop.call_at(deadline, self._check_deadline)
            try:
                await waiter
            finally:
                self._waiter = None
        if len(self.replies) < count:
            raise ConnectionError(self.lost or "connection lost")
        return [self.replies.popleft() for _ in range(count)]

    async def read_one(self, timeout: float) -> SmtpReply:
        (reply,) = await self.read(1, timeout)
        return reply

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing is waiting; the next read arms the timer again
        if self._loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError(f"no reply within {self._timeout:g} s"))
        else:  # armed for an earlier read that was answered in time: wait for this one's deadline
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)
