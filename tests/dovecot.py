"""A real Dovecot IMAP server on 127.0.0.1 for the tracking tests, with a throwaway configuration.

Everything lives under one temporary folder: configuration, runtime sockets, logs, a self-signed
certificate for 127.0.0.1 (generated with openssl), a plain-text passwd-file and the maildirs. The server
listens on two free loopback ports: IMAP (plain, with STARTTLS) and IMAPS (TLS from the first byte).

Run as an ordinary user, every Dovecot process runs as that user. Run as root (CI containers), Dovecot
refuses to run its login processes or mail access as root, so the login process runs as ``dovenull``
chrooted into Dovecot's own login directory, and mail access runs as ``nobody`` chrooted into the maildir
root: chroot happens before the privileges are dropped, so the private temporary folders above stay
private.

Messages are delivered with IMAP APPEND, as a mail client that files a message would.
"""

from __future__ import annotations

import email
import grp
import os
import pwd
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

from imapclient import IMAPClient

from outreach.config import Settings, TlsMode

HOST = "127.0.0.1"
START_TIMEOUT = 15.0


class DovecotUnavailable(RuntimeError):
    """Dovecot (or openssl for its certificate) is not installed here."""


def find_dovecot() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)), None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Mailbox:
    """One IMAP account on the test server."""

    server: DovecotServer
    username: str
    password: str = field(repr=False)

    def settings(
        self, *, tls: TlsMode = "tls", ca_file: bool = True, folders: tuple[str, ...] = ("INBOX",)
    ) -> Settings:
        port = self.server.imaps_port if tls == "tls" else self.server.imap_port
        return Settings(
            imap_host=HOST,
            imap_port=port,
            imap_username=self.username,
            imap_password=self.password,
            imap_tls=tls,
            imap_ca_file=self.server.ca_file if ca_file else None,
            imap_folders=folders,
        )

    def environment(self) -> dict[str, str]:
        """OUTREACH_IMAP_* variables for running the CLI against this mailbox."""
        return {
            "OUTREACH_IMAP_HOST": HOST,
            "OUTREACH_IMAP_PORT": str(self.server.imaps_port),
            "OUTREACH_IMAP_USERNAME": self.username,
            "OUTREACH_IMAP_PASSWORD": self.password,
            "OUTREACH_IMAP_TLS": "tls",
            "OUTREACH_IMAP_CA_FILE": str(self.server.ca_file),
        }

    def client(self) -> IMAPClient:
        context = ssl.create_default_context(cafile=str(self.server.ca_file))
        client = IMAPClient(HOST, port=self.server.imaps_port, ssl=True, ssl_context=context, timeout=30)
        client.login(self.username, self.password)
        return client

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """File one message, as a mail client does: IMAP APPEND with CRLF line ends."""
        data = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        written = email.message_from_bytes(data).get("Date")
        # The arrival time (INTERNALDATE) of a filed message is the time it was written.
        arrived = parsedate_to_datetime(str(written)) if written else None
        client = self.client()
        try:
            if folder != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            client.append(folder, data, msg_time=arrived)
        finally:
            client.logout()

    def recreate_folder(self, folder: str) -> None:
        """Delete and create a folder again: it comes back empty with a new UIDVALIDITY."""
        client = self.client()
        try:
            client.delete_folder(folder)
            client.create_folder(folder)
        finally:
            client.logout()


class DovecotServer:
    """One server with one account (``mailbox``); start() and stop() bracket its life."""

    def __init__(self, root: Path, username: str = "brieven") -> None:
        binary = find_dovecot()
        if binary is None:
            raise DovecotUnavailable(
                "the dovecot binary is not installed (Debian: apt-get install dovecot-imapd)"
            )
        if shutil.which("openssl") is None:
            raise DovecotUnavailable("openssl is not installed: no certificate for the test IMAP server")
        self.binary = binary
        self.root = root
        self.ca_file = root / "cert.pem"
        self.key_file = root / "key.pem"
        self.users_file = root / "users"
        self.mail_root = root / "mail"
        self.log_file = root / "dovecot.log"
        self.config_file = root / "dovecot.conf"
        self.username = username
        self.imap_port = 0
        self.imaps_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._as_root = os.geteuid() == 0

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._certificate()
        self.users_file.write_text("")
        self.mail_root.mkdir(exist_ok=True)
        if self._as_root:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.mail_root, nobody.pw_uid, nobody.pw_gid)
        self.mailbox = self._add_mailbox(self.username)
        last_log = ""
        for _attempt in range(3):  # a free port can be taken between probing and binding it
            self.imap_port, self.imaps_port = _free_port(), _free_port()
            self.config_file.write_text(self._config())
            self.log_file.write_text("")
            with self.log_file.open("ab") as log:  # the child keeps its own descriptor
                self._process = subprocess.Popen(
                    [self.binary, "-F", "-c", str(self.config_file)],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            if self._wait_ready():
                return
            self.stop()
            last_log = self.log_file.read_text(errors="replace")
        raise RuntimeError(f"dovecot did not start; its log:\n{last_log}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                return False
            try:
                with socket.create_connection((HOST, self.imaps_port), timeout=1):
                    pass
                with socket.create_connection((HOST, self.imap_port), timeout=1):
                    return True
            except OSError:
                time.sleep(0.05)
        return False

    # --- accounts ------------------------------------------------------------------------------------

    def _add_mailbox(self, username: str) -> Mailbox:
        # Written before the server starts: Dovecot re-reads a changed passwd-file at most once a second.
        password = secrets.token_urlsafe(12)
        if self._as_root:
            home = self.mail_root / username
            home.mkdir()
            nobody = pwd.getpwnam("nobody")
            os.chown(home, nobody.pw_uid, nobody.pw_gid)
        with self.users_file.open("a") as fh:
            fh.write(f"{username}:{{PLAIN}}{password}::::\n")
        return Mailbox(server=self, username=username, password=password)

    # --- configuration -------------------------------------------------------------------------------

    def _certificate(self) -> None:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-keyout", str(self.key_file), "-out", str(self.ca_file),
                "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=IP:{HOST}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    def _config(self) -> str:
        root = self.root
        if self._as_root:
            login_user = "dovenull" if _user_exists("dovenull") else "nobody"
            nobody = pwd.getpwnam("nobody")
            user_fields = f"uid={nobody.pw_uid} gid={nobody.pw_gid} home=/%u"
            accounts = (
                "default_internal_user = root\n"
                f"default_login_user = {login_user}\n"
                f"mail_chroot = {self.mail_root}\n"
                f"valid_chroot_dirs = {self.mail_root}\n"
            )
        else:
            me = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            user_fields = f"uid={os.getuid()} gid={os.getgid()} home={self.mail_root}/%u"
            accounts = (
                f"default_internal_user = {me}\n"
                f"default_login_user = {me}\n"
                f"default_internal_group = {group}\n"
                f"first_valid_uid = {os.getuid()}\n"
                # An ordinary user cannot chroot.
                "service anvil {\n  chroot =\n}\n"
            )
        return f"""\
# Throwaway configuration of the outreach test suite; nothing here is meant for production.
instance_name = outreach-test-{self.imaps_port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {self.log_file}
protocols = imap
listen = {HOST}
ssl = yes
ssl_cert = <{self.ca_file}
ssl_key = <{self.key_file}
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
{accounts}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_file}
  default_fields = {user_fields}
}}
service imap-login {{
{"" if self._as_root else "  chroot ="}
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
"""


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
