"""One persistent SMTP connection: aiosmtplib opens it, a small pipelining protocol carries the letters.

aiosmtplib does everything that is easy to get wrong: the greeting, EHLO, STARTTLS or implicit TLS with
certificate checks, and AUTH. Once the session is ready, the transport is handed to
``_TransactionProtocol``, which sends MAIL FROM, RCPT TO and DATA in one write when the server offers
PIPELINING (RFC 2920) and reads the replies in order. aiosmtplib's own ``sendmail`` waits for each
reply in turn (four round trips per letter) and cannot read pipelined replies; on loopback that caps it
near 2,700 letters/s, the pipelined path reaches about three times that (docs/performance.md), and at a
10 ms round trip it halves the time per letter. Servers without PIPELINING get the same commands one
at a time.

Knowing exactly when the body was handed over is the point of owning the transaction: a connection
that dies before the body was written leaves a letter that certainly was not delivered (``deferred``);
one that dies after it leaves a letter the server may have (``unknown``, never resent automatically).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from outreach.config import Settings
from outreach.errors import SmtpError

_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


class SmtpReplyError(Exception):
    """The server answered a command with a 4xx/5xx reply."""

    def __init__(self, code: int, text: str, phase: str, recipient: str | None = None) -> None:
        super().__init__(f"{code} {text}")
        self.code = code
        self.text = text
        self.phase = phase  # "connect", "mail", "rcpt", "data", "body"
        self.recipient = recipient


class ConnectionLostError(Exception):
    """The connection closed or timed out. ``body_sent`` tells whether the server may have the letter."""

    def __init__(self, text: str, *, body_sent: bool, timeout: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.body_sent = body_sent
        self.timeout = timeout


class ConnectFailedError(Exception):
    """A connection could not be opened for a reason that may pass (refused, timeout, 4xx greeting)."""

    def __init__(self, text: str, code: int | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


@dataclass(frozen=True)
class SendResult:
    code: int
    text: str
    refused: dict[str, tuple[int, str]]  # copies (cc) the server refused while accepting the letter


@dataclass(frozen=True)
class Letter:
    """One letter as the connection sends it: whose it is, the envelope and the bytes."""

    key: object  # whose letter (the caller's delivery id)
    sender: str
    recipients: Sequence[str]  # the addressee first, then copies
    body: bytes


@dataclass(frozen=True)
class _Envelope:
    key: object  # whose letter (the caller's delivery id)
    commands: list[bytes]  # MAIL FROM and RCPT TO lines
    pipeline_data: bool  # DATA goes out with them
    body: bytes  # dot-stuffed, ends with CRLF


class _TransactionProtocol(asyncio.Protocol):
    """Reads SMTP replies (multi-line aware) into a queue; ``read(n)`` waits for n complete replies."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray()
        self._lines: list[str] = []
        self.replies: deque[tuple[int, str]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self.lost: str | None = None
        # The reply timeout: a deadline per read, and at most one timer per connection that checks it
        # when it fires (and re-arms for a later deadline). A timer per read, created and cancelled
        # twice per letter, was ~6 % of the event loop's time (cProfile, 10,000 letters).
        self._deadline = 0.0
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        # Whole lines are split off the chunk at once: with the next envelope behind each body, a read
        # holds four replies ("250 queued", "250 OK", "250 OK", "354 go ahead"), and a loop of find()
        # and slices over a bytearray cost ~30 µs per read (cProfile).
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
                replies.append((code, "\n".join(lines)))
                lines.clear()
            else:
                replies.append((code, text))
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

    async def read(self, count: int, timeout: float) -> list[tuple[int, str]]:
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

    def _check_deadline(self) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return  # nothing is waiting; the next read arms the timer again
        if self._loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError(f"no reply within {self._timeout:g} s"))
        else:  # armed for an earlier read that was answered in time: wait for this one's deadline
            self._timer = self._loop.call_at(self._deadline, self._check_deadline)


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Certificate and host name checks always on; a CA file only adds trust (for test servers)."""
    cafile = str(settings.smtp_ca_file) if settings.smtp_ca_file else None
    return ssl.create_default_context(cafile=cafile)


class SmtpConnection:
    """A persistent connection that sends letters one after another until closed."""

    def __init__(self, settings: Settings, *, local_hostname: str | None = None) -> None:
        self._settings = settings
        self._local_hostname = local_hostname
        self._transport: asyncio.Transport | None = None
        self._protocol: _TransactionProtocol | None = None
        self.pipelining = False
        self._size = False
        self._smtputf8 = False
        self.sent = 0  # letters accepted on this connection
        self.connect_failures = 0  # consecutive failed opens
        self._next: _Envelope | None = None  # an envelope sent behind the last body, replies unread
        # Whether the current (or last) letter's body was written: after a cancelled ``send`` it tells a
        # letter the server may have from one it certainly has not.
        self.handed_over = False

    @property
    def where(self) -> str:
        return f"{self._settings.smtp_host}:{self._settings.smtp_port_effective}"

    @property
    def is_open(self) -> bool:
        return (
            self._transport is not None
            and self._protocol is not None
            and self._protocol.lost is None
            and not self._transport.is_closing()
        )

    async def open(self) -> None:
        """Connect, secure, authenticate. Raises ``SmtpError`` (stop the run) or ``ConnectFailedError``."""
        settings = self._settings
        mode = settings.smtp_tls
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port_effective,
            local_hostname=self._local_hostname,
            timeout=settings.smtp_timeout,
            use_tls=mode == "tls",
            start_tls=mode == "starttls",
            tls_context=tls_context(settings) if mode != "none" else None,
        )
        where = self.where
        self.connect_failures += 1
        try:
            await client.connect()
            if settings.smtp_username:
                await client.login(settings.smtp_username, settings.smtp_password or "")
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise SmtpError(
                f"{where}: authentication failed for user {settings.smtp_username!r}: "
                f"{exc.code} {exc.message}",
                hint="check OUTREACH_SMTP_USERNAME and OUTREACH_SMTP_PASSWORD",
            ) from None
        except aiosmtplib.SMTPConnectResponseError as exc:
            client.close()
            if 400 <= exc.code < 500:
                raise ConnectFailedError(f"{where}: {exc.code} {exc.message}", exc.code) from None
            raise SmtpError(f"{where}: the server refuses the session: {exc.code} {exc.message}") from None
        except (
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            aiosmtplib.SMTPServerDisconnected,
        ) as exc:
            client.close()
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLError) or isinstance(exc.__cause__, ssl.SSLError):
                raise _tls_error(where, cause) from None
            raise ConnectFailedError(f"{where}: {exc}") from None
        except ssl.SSLError as exc:
            client.close()
            raise _tls_error(where, exc) from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            if exc.code == 421 or (400 <= exc.code < 500 and exc.code != 454):
                raise ConnectFailedError(f"{where}: {exc.code} {exc.message}", exc.code) from None
            raise SmtpError(f"{where}: {exc.code} {exc.message}") from None
        except aiosmtplib.SMTPException as exc:
            # STARTTLS or AUTH not offered: a configuration mismatch, never worth a retry.
            client.close()
            raise SmtpError(
                f"{where}: {exc}", hint="check OUTREACH_SMTP_TLS (starttls, tls, none) and the port"
            ) from None
        except OSError as exc:
            client.close()
            raise ConnectFailedError(f"{where}: {exc}") from None
        self._next = None
        self.pipelining = client.supports_extension("pipelining")
        self._size = client.supports_extension("size")
        self._smtputf8 = client.supports_extension("smtputf8")
        transport = client.transport
        assert isinstance(transport, asyncio.Transport)
        protocol = _TransactionProtocol(asyncio.get_running_loop())
        transport.set_protocol(protocol)
        self._transport = transport
        self._protocol = protocol
        self.sent = 0
        self.connect_failures = 0

    def _encode_address(self, address: str) -> tuple[bytes, bool]:
        try:
            return address.encode("ascii"), False
        except UnicodeEncodeError:
            return address.encode("utf-8"), True

    def _envelope(self, letter: Letter) -> _Envelope:
        """The commands of one transaction and its body, ready to write (dot-stuffed, CRLF-terminated)."""
        recipients, body = letter.recipients, letter.body
        sender_bytes, utf8 = self._encode_address(letter.sender)
        rcpt_bytes: list[bytes] = []
        for address in recipients:
            encoded, needs_utf8 = self._encode_address(address)
            rcpt_bytes.append(encoded)
            utf8 = utf8 or needs_utf8
        if utf8 and not self._smtputf8:
            raise SmtpReplyError(
                553, "the address needs SMTPUTF8, which this server does not offer", "rcpt", recipients[0]
            )
        if body[:1] == b"." or b"\n." in body:
            body = _DOT_AT_LINE_START.sub(b"..", body)
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        mail = b"MAIL FROM:<" + sender_bytes + b">"
        if self._size:
            mail += b" SIZE=%d" % len(body)
        if utf8:
            mail += b" SMTPUTF8"
        commands = [mail + b"\r\n"] + [b"RCPT TO:<" + r + b">\r\n" for r in rcpt_bytes]
        # With copies, DATA waits for the RCPT replies: a refused addressee must end the transaction
        # with RSET, and after a pipelined 354 the only way out would be an empty message to the copy.
        pipeline_data = self.pipelining and len(recipients) == 1
        return _Envelope(letter.key, commands, pipeline_data, body)

    def next_envelope_for(self, key: object) -> bool:
        """Whether the envelope of the letter ``key`` already went out behind the previous body."""
        return self._next is not None and self._next.key == key

    async def send(self, letter: Letter, *, then: Letter | None = None) -> SendResult:
        """Send one letter; ``recipients[0]`` is the addressee, the rest are copies.

        ``then`` is the letter this connection sends next: with
        PIPELINING its MAIL, RCPT and DATA go out in the same write as this letter's body (RFC 2920 3.1:
        message content may be the first "command" of a group), so each letter costs one write and one
        wait for replies instead of two. Only its envelope goes out: its body waits for its own ``send``
        (with the same ``key``), after the caller has recorded it as ``sending``. A caller that decides
        not to send it must ``abort`` the connection (the server awaits that body: RFC 2920 leaves no
        clean way back from a pipelined 354).

        Raises ``SmtpReplyError`` when the server refuses the addressee or the letter,
        ``ConnectionLostError`` when the connection breaks (``body_sent`` says on which side of the body).
        """
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None or not self.is_open:
            raise ConnectionLostError("not connected", body_sent=False)
        timeout = self._settings.smtp_timeout
        recipients = letter.recipients
        ahead, self._next = self._next, None
        if ahead is not None and ahead.key != letter.key:
            self.abort()  # the server expects another letter's body
            raise ConnectionLostError("the connection was prepared for another letter", body_sent=False)
        envelope = ahead if ahead is not None else self._envelope(letter)
        follow: _Envelope | None = None
        if then is not None and self.pipelining and len(then.recipients) == 1:
            try:
                follow = self._envelope(then)
            except SmtpReplyError:
                follow = None  # its own send reports it
        commands, pipeline_data = envelope.commands, envelope.pipeline_data
        body_sent = self.handed_over = False
        try:
            if ahead is not None:
                replies = await protocol.read(len(commands) + 1, timeout)
            elif self.pipelining:
                transport.write(b"".join(commands) + (b"DATA\r\n" if pipeline_data else b""))
                replies = await protocol.read(len(commands) + pipeline_data, timeout)
            else:
                replies = []
                for command in commands:
                    transport.write(command)
                    replies.extend(await protocol.read(1, timeout))
                    if replies[0][0] != 250:
                        break
            code, text = replies[0]
            if code != 250:
                await self._end_failed_transaction(pipeline_data and replies[-1][0] == 354, timeout)
                raise SmtpReplyError(code, text, "mail")
            refused: dict[str, tuple[int, str]] = {}
            for address, (code, text) in zip(recipients, replies[1 : 1 + len(recipients)], strict=False):
                if code not in (250, 251):
                    refused[address] = (code, text)
            if recipients[0] in refused:
                code, text = refused[recipients[0]]
                await self._end_failed_transaction(pipeline_data and replies[-1][0] == 354, timeout)
                raise SmtpReplyError(code, text, "rcpt", recipients[0])
            if pipeline_data:
                code, text = replies[-1]
            else:
                transport.write(b"DATA\r\n")
                ((code, text),) = await protocol.read(1, timeout)
            if code != 354:
                if code != 421:
                    await self._reset(timeout)
                raise SmtpReplyError(code, text, "data")
            if follow is not None:
                transport.write(envelope.body + b".\r\n" + b"".join(follow.commands) + b"DATA\r\n")
                self._next = follow
            else:
                transport.write(envelope.body + b".\r\n")
            body_sent = self.handed_over = True
            ((code, text),) = await protocol.read(1, timeout)
            if code != 250:
                if self._next is not None:
                    # The next envelope is already with the server, behind a refused body: rather than
                    # untangle its replies, start that letter afresh on a new connection.
                    self.abort()
                elif code != 421:
                    # The transaction is over (RFC 5321 4.1.1.4), but a server whose handler failed may
                    # keep the envelope (aiosmtpd does, answering the next MAIL with 503): RSET.
                    await self._reset(timeout)
                raise SmtpReplyError(code, text, "body")
        except asyncio.CancelledError:
            self.abort()  # a stop in mid-transaction: no QUIT (it could be message text); no more waiting
            raise
        except TimeoutError as exc:
            self.abort()
            raise ConnectionLostError(str(exc), body_sent=body_sent, timeout=True) from None
        except (ConnectionError, OSError) as exc:
            self.abort()
            raise ConnectionLostError(str(exc) or "connection lost", body_sent=body_sent) from None
        except SmtpReplyError as exc:
            if exc.code == 421:
                # RFC 5321 3.8: 421 means the server is closing the channel.
                self.abort()
            raise
        self.sent += 1
        return SendResult(code, text, refused)

    async def _end_failed_transaction(self, data_open: bool, timeout: float) -> None:
        if data_open:
            # RFC 2920 3.1: DATA after a refused MAIL/RCPT must fail; a server that opened the body
            # anyway would take our next commands as text, so this connection is done.
            self.abort()
        else:
            # The pipelined DATA was refused too (503/554), but the envelope may still be open (aiosmtpd
            # keeps it): RSET so the next MAIL FROM starts clean (RFC 5321 4.1.1.5).
            await self._reset(timeout)

    async def _reset(self, timeout: float) -> None:
        assert self._transport is not None and self._protocol is not None
        self._transport.write(b"RSET\r\n")
        await self._protocol.read(1, timeout)

    async def close(self) -> None:
        """QUIT politely; never raises."""
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            return
        if self.is_open and self._next is None:  # after a pipelined DATA, QUIT would be message text
            try:
                transport.write(b"QUIT\r\n")
                await protocol.read(1, min(5.0, self._settings.smtp_timeout))
            except (TimeoutError, ConnectionError, OSError):
                pass
        self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._transport = None
        self._protocol = None
        self._next = None


def _tls_error(where: str, exc: BaseException | None) -> SmtpError:
    reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
    return SmtpError(
        f"{where}: TLS failed: {reason}",
        hint="check OUTREACH_SMTP_TLS and the server's certificate (OUTREACH_SMTP_CA_FILE for a private CA)",
    )
