"""One persistent SMTP connection: aiosmtplib opens it, a small pipelining protocol carries the letters.

aiosmtplib does everything that is easy to get wrong: the greeting, EHLO, STARTTLS or implicit TLS with
certificate checks, and AUTH. Once the session is ready, the transport is handed to ``ReplyReader``
(``protocol``), and each letter goes through one method per phase of the transaction: the envelope
(MAIL FROM, RCPT TO and, with PIPELINING (RFC 2920), DATA in one write), DATA, and the body (with the
next letter's envelope behind it). aiosmtplib's own ``sendmail`` waits for each reply in turn and cannot
read pipelined replies (docs/performance.md has the figures). Servers without PIPELINING get the same
commands one at a time.

Knowing exactly when the body was handed over is the point of owning the transaction: a connection
that dies before the body was written leaves a letter that certainly was not delivered (``deferred``);
one that dies after it leaves a letter the server may have (``unknown``, never resent automatically).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib

from outreach.config import Settings
from outreach.errors import SmtpError
from outreach.sending.errors import ConnectFailedError, ConnectionLostError, SmtpReplyError
from outreach.sending.smtp.protocol import ReplyReader
from outreach.sending.smtp.reply import (
    BAD_SEQUENCE,
    CLOSING,
    OK,
    RECIPIENT_OK,
    START_MAIL_INPUT,
    TLS_NOT_AVAILABLE,
    SmtpReply,
)

_DOT_AT_LINE_START = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Letter:
    """One letter as the connection sends it: whose it is, the envelope and the bytes."""

    key: object  # whose letter (the caller's delivery id)
    sender: str
    recipients: Sequence[str]  # the addressee first, then copies
    body: bytes


@dataclass(frozen=True)
class SendResult:
    code: int
    text: str
    refused: dict[str, tuple[int, str]]  # copies (cc) the server refused while accepting the letter


@dataclass(frozen=True)
class _Envelope:
    key: object  # whose letter (the caller's delivery id)
    commands: list[bytes]  # MAIL FROM and RCPT TO lines
    pipeline_data: bool  # DATA goes out with them
    body: bytes  # dot-stuffed, ends with CRLF


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
        self._protocol: ReplyReader | None = None
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
            if exc.code == CLOSING or (400 <= exc.code < 500 and exc.code != TLS_NOT_AVAILABLE):
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
        protocol = ReplyReader(asyncio.get_running_loop())
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

        ``then`` is the letter this connection sends next: with PIPELINING its MAIL, RCPT and DATA go
        out in the same write as this letter's body (RFC 2920 3.1: message content may be the first
        "command" of a group), so each letter costs one write and one wait for replies instead of two.
        Only its envelope goes out: its body waits for its own ``send`` (with the same ``key``), after
        the caller has recorded it as ``sending``. A caller that decides not to send it must ``abort``
        the connection (the server awaits that body: RFC 2920 leaves no clean way back from a pipelined
        354).

        Raises ``SmtpReplyError`` when the server refuses the addressee or the letter (with the phase),
        ``ConnectionLostError`` when the connection breaks (``body_sent`` says on which side of the body).
        """
        if self._transport is None or self._protocol is None or not self.is_open:
            raise ConnectionLostError("not connected", body_sent=False)
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
        self.handed_over = False
        try:
            replies = await self._send_envelope(envelope, already_sent=ahead is not None)
            if ahead is not None and replies[0].code == BAD_SEQUENCE:
                # The server had not closed the previous transaction (aiosmtpd keeps it after a failed
                # handler): this letter was never taken; it goes again on a fresh connection.
                self.abort()
                raise ConnectionLostError(
                    f"the server was still in the previous transaction: {replies[0].code} {replies[0].text}",
                    body_sent=False,
                )
            refused = await self._accept_envelope(envelope, letter.recipients, replies)
            await self._open_data(envelope, replies)
            reply = await self._send_body(envelope, follow)
        except asyncio.CancelledError:
            self.abort()  # a stop in mid-transaction: no QUIT (it could be message text); no more waiting
            raise
        except TimeoutError as exc:
            self.abort()
            raise ConnectionLostError(str(exc), body_sent=self.handed_over, timeout=True) from None
        except (ConnectionError, OSError) as exc:
            self.abort()
            raise ConnectionLostError(str(exc) or "connection lost", body_sent=self.handed_over) from None
        except SmtpReplyError as exc:
            if exc.code == CLOSING:
                self.abort()  # RFC 5321 3.8: the server is closing the channel
            raise
        self.sent += 1
        return SendResult(reply.code, reply.text, refused)

    async def _send_envelope(self, envelope: _Envelope, *, already_sent: bool) -> list[SmtpReply]:
        """MAIL FROM and RCPT TO (and a pipelined DATA): their replies. Sent behind the previous body
        when ``already_sent``; in one write with PIPELINING; else one command at a time, stopping at a
        refused MAIL FROM."""
        transport, protocol = self._transport, self._protocol
        assert transport is not None and protocol is not None
        timeout = self._settings.smtp_timeout
        commands = envelope.commands
        if already_sent:
            return await protocol.read(len(commands) + 1, timeout)
        if self.pipelining:
            transport.write(b"".join(commands) + (b"DATA\r\n" if envelope.pipeline_data else b""))
            return await protocol.read(len(commands) + envelope.pipeline_data, timeout)
        replies: list[SmtpReply] = []
        for command in commands:
            transport.write(command)
            replies.append(await protocol.read_one(timeout))
            if replies[0].code != OK:
                break
        return replies

    async def _accept_envelope(
        self, envelope: _Envelope, recipients: Sequence[str], replies: list[SmtpReply]
    ) -> dict[str, tuple[int, str]]:
        """The MAIL FROM and RCPT TO replies: raises for a refused sender or addressee; returns the
        refused copies."""
        data_open = envelope.pipeline_data and replies[-1].code == START_MAIL_INPUT
        mail = replies[0]
        if mail.code != OK:
            await self._end_failed_transaction(data_open)
            raise SmtpReplyError(mail.code, mail.text, "mail")
        refused: dict[str, tuple[int, str]] = {}
        for address, (code, text) in zip(recipients, replies[1 : 1 + len(recipients)], strict=False):
            if code not in RECIPIENT_OK:
                refused[address] = (code, text)
        if recipients[0] in refused:
            code, text = refused[recipients[0]]
            await self._end_failed_transaction(data_open)
            raise SmtpReplyError(code, text, "rcpt", recipients[0])
        return refused

    async def _open_data(self, envelope: _Envelope, replies: list[SmtpReply]) -> None:
        """DATA (unless it was pipelined with the envelope) must be answered 354."""
        if envelope.pipeline_data:
            reply = replies[-1]
        else:
            assert self._transport is not None and self._protocol is not None
            self._transport.write(b"DATA\r\n")
            reply = await self._protocol.read_one(self._settings.smtp_timeout)
        if reply.code != START_MAIL_INPUT:
            if reply.code != CLOSING:
                await self._reset()
            raise SmtpReplyError(reply.code, reply.text, "data")

    async def _send_body(self, envelope: _Envelope, follow: _Envelope | None) -> SmtpReply:
        """The body and the end-of-data dot, with the next letter's envelope behind them when given;
        the server's verdict on the letter."""
        transport, protocol = self._transport, self._protocol
        assert transport is not None and protocol is not None
        if follow is not None:
            transport.write(envelope.body + b".\r\n" + b"".join(follow.commands) + b"DATA\r\n")
            self._next = follow
        else:
            transport.write(envelope.body + b".\r\n")
        self.handed_over = True
        reply = await protocol.read_one(self._settings.smtp_timeout)
        if reply.code != OK:
            # With the next envelope behind this body, no RSET: the end of data closes the transaction,
            # refused or not (RFC 5321 4.1.1.4), and the replies that follow are the next letter's own.
            if self._next is None and reply.code != CLOSING:
                # The transaction is over, but a server whose handler failed may keep the envelope
                # (aiosmtpd does, answering the next MAIL with 503): RSET.
                await self._reset()
            raise SmtpReplyError(reply.code, reply.text, "body")
        return reply

    async def _end_failed_transaction(self, data_open: bool) -> None:
        if data_open:
            # RFC 2920 3.1: DATA after a refused MAIL/RCPT must fail; a server that opened the body
            # anyway would take our next commands as text, so this connection is done.
            self.abort()
        else:
            # The pipelined DATA was refused too (503/554), but the envelope may still be open (aiosmtpd
            # keeps it): RSET so the next MAIL FROM starts clean (RFC 5321 4.1.1.5).
            await self._reset()

    async def _reset(self) -> None:
        assert self._transport is not None and self._protocol is not None
        self._transport.write(b"RSET\r\n")
        await self._protocol.read_one(self._settings.smtp_timeout)

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
