"""Real SMTP servers on 127.0.0.1 for the sending tests, with faults injected per recipient address.

``SmtpServer`` wraps aiosmtpd (in its own thread, as aiosmtpd's Controller does) and records every
message it accepted. Faults are keyed by recipient address and may apply a limited number of times, so
"451 once, then accept" is expressible. Servers that misbehave before SMTP even starts (a 421 greeting,
no greeting at all) are plain sockets: ``refusing_server`` and ``silent_server``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass
class Fault:
    """What to do to a recipient: ``kind`` is one of

    - ``mail``: answer MAIL FROM with ``reply`` (keyed by the envelope sender, not a recipient);
    - ``hang-at-mail``: never answer MAIL FROM (keyed by the envelope sender);
    - ``rcpt``: answer RCPT TO with ``reply`` (e.g. "451 4.7.1 greylisted", "550 5.1.1 no such user");
    - ``data``: take the body, then answer with ``reply`` instead of 250;
    - ``handler-error``: the server's handler raises while taking the body (aiosmtpd answers 500 and
      keeps the envelope open, so a client that does not RSET gets "503 nested MAIL command" next);
    - ``disconnect-at-rcpt``: close the connection instead of answering RCPT TO (before DATA);
    - ``disconnect-after-body``: keep the message, close the connection instead of answering;
    - ``hang-after-body``: keep the message and never answer.
    """

    kind: str
    reply: str = ""
    times: int | None = None  # None: every time

    def use(self) -> bool:
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


@dataclass
class Handler:
    faults: dict[str, Fault] = field(default_factory=dict)
    messages: list[Received] = field(default_factory=list)
    pipelining: bool = False
    delay: float = 0.0  # seconds to think before answering each message (to catch a sender mid-run)
    sessions: int = 0
    rcpts: list[str] = field(default_factory=list)  # every RCPT TO the server accepted, bodies or not
    tried: list[str] = field(default_factory=list)  # every RCPT TO the server was asked, refused or not
    # Called (on the server's thread) after a message is stored, before its 250 goes back.
    after_message: Callable[[], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        with self.lock:
            self.sessions += 1
        if self.pipelining:
            # aiosmtpd reads commands line by line, so it serves pipelined clients correctly; it just
            # does not say so (RFC 2920).
            responses.insert(-1, "250-PIPELINING")
        return responses

    def _fault(self, address: str, *kinds: str) -> Fault | None:
        with self.lock:
            fault = self.faults.get(address)
            if fault is not None and fault.kind in kinds and fault.use():
                return fault
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        fault = self._fault(address, "mail", "hang-at-mail")
        if fault is not None and fault.kind == "hang-at-mail":
            await asyncio.sleep(10)
        if fault is not None:
            return fault.reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        with self.lock:
            self.tried.append(address)
        fault = self._fault(address, "rcpt", "disconnect-at-rcpt")
        if fault is not None and fault.kind == "rcpt":
            return fault.reply
        if fault is not None:
            assert server.transport is not None
            server.transport.close()
            return "421 4.4.2 closing (test: disconnect before DATA)"
        envelope.rcpt_tos.append(address)
        with self.lock:
            self.rcpts.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        fault = self._fault(
            envelope.rcpt_tos[0], "data", "handler-error", "disconnect-after-body", "hang-after-body"
        )
        if fault is not None and fault.kind == "data":
            return fault.reply
        if fault is not None and fault.kind == "handler-error":
            raise OSError("test: the server's disk is full")
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.messages.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), bytes(content)))
        if self.after_message is not None:
            self.after_message()
        if fault is not None and fault.kind == "disconnect-after-body":
            assert server.transport is not None
            server.transport.close()
        elif fault is not None:
            await asyncio.sleep(10)
        return "250 2.0.0 queued"

    def received_by(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]


class _Authenticator:
    def __init__(self, username: str, password: str) -> None:
        self.username = username.encode()
        self.password = password.encode()

    def __call__(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username
            and auth_data.password == self.password
        )
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    handler: Handler
    port: int
    ca_file: Path | None = None
    controller: Controller | None = None

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    *,
    pipelining: bool = False,
    tls: ssl.SSLContext | None = None,
    ca_file: Path | None = None,
    auth: tuple[str, str] | None = None,
) -> SmtpServer:
    """An aiosmtpd server on 127.0.0.1; with ``tls``, STARTTLS is offered and required."""
    handler = Handler(pipelining=pipelining)
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    if auth is not None:
        kwargs.update(
            authenticator=_Authenticator(*auth), auth_required=True, auth_require_tls=tls is not None
        )
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, ready_timeout=10, **kwargs)
    controller.start()
    return SmtpServer(handler=handler, port=port, ca_file=ca_file, controller=controller)


@contextmanager
def refusing_server(reply: bytes = b"421 4.3.2 too busy, try later\r\n") -> Iterator[int]:
    """Answers every connection with ``reply`` (a 421 greeting) and hangs up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@contextmanager
def silent_server() -> Iterator[int]:
    """Accepts TCP connections (the kernel completes the handshake) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
