"""`outreach demo`: a whole campaign end to end on the embedded defaults, with no servers installed.

It runs the same commands a campaign manager would type, against a fresh SQLite database in a demo folder
and an SMTP sink that it starts on 127.0.0.1 (aiosmtpd) and that writes every message it receives into
``<dir>/sink/`` as an .eml file, so the result can be opened and inspected.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

DEMO_CAMPAIGN = "2026"
# Two raadsleden of data/sample-contacts.csv (fictional, on a reserved example domain).
DEMO_REPLY = "anouk.jansen@utrecht.example.nl"
DEMO_OPTOUT = "thijs.vandam@utrecht.example.nl"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SinkHandler:
    """Accepts every message and files it as ``NNNNN.eml`` with the envelope in X-Sink-* headers."""

    folder: Path
    received: int = 0
    recipients: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        self.recipients.extend(envelope.rcpt_tos)
        head = f"X-Sink-Mail-From: {envelope.mail_from}\r\nX-Sink-Rcpt-To: {', '.join(envelope.rcpt_tos)}\r\n"
        (self.folder / f"{self.received:05d}.eml").write_bytes(head.encode() + envelope.original_content)
        return "250 2.0.0 Ok: queued by the outreach demo sink"


@contextmanager
def smtp_sink(folder: Path, host: str = "127.0.0.1") -> Iterator[tuple[SinkHandler, int]]:
    """A local SMTP server for the demo; stopped when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    handler = SinkHandler(folder)
    port = free_port(host)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def run_demo(
    folder: Path,
    repo: Path,
    invoke: Callable[[Sequence[str]], int],
    say: Callable[[str], None],
) -> int:
    """Run the demo steps with ``invoke`` (the CLI itself); returns the first non-zero exit code, or 0."""
    folder.mkdir(parents=True, exist_ok=True)
    database = f"sqlite:///{folder / 'outreach.db'}"
    for stale in ("outreach.db", "outreach.db-wal", "outreach.db-shm"):
        (folder / stale).unlink(missing_ok=True)
    base = ["--database", database, "--templates", str(repo / "templates" / "letters")]
    with smtp_sink(folder / "sink") as (handler, port):
        steps: list[tuple[str, list[str]]] = [
            ("Create the registry and load the 342 municipalities", ["init"]),
            (
                "Import a council list as staff get it from Dutch Excel (cp1252, ';')",
                [
                    "contacts",
                    "import",
                    str(repo / "data" / "sample-contacts.csv"),
                    "--source",
                    "demo: sample council list",
                    "--rejects",
                    str(folder / "sample-contacts.rejects.csv"),
                ],
            ),
            ("The registry, sorted by municipality and surname", ["contacts", "list", "--role", "wethouder"]),
            ("The campaigns in templates/letters", ["campaign", "list"]),
            (
                "Render every letter before anything is sent",
                ["check", "--campaign", DEMO_CAMPAIGN],
            ),
            ("What one recipient will get", ["preview", "--campaign", DEMO_CAMPAIGN, "--limit", "1"]),
            (
                "Every letter as .eml and .html, with an index to open in a browser",
                ["preview", "--campaign", DEMO_CAMPAIGN, "--out", str(folder / "preview")],
            ),
            (
                "A reviewer approves the campaign",
                ["approve", "--campaign", DEMO_CAMPAIGN, "--by", "demo reviewer"],
            ),
            (
                f"Send, to the demo's SMTP sink on 127.0.0.1:{port}",
                # The demo runs at any hour; a real campaign waits for its window (campaign.toml).
                ["send", "--campaign", DEMO_CAMPAIGN, "--yes", "--ignore-window"],
            ),
            (
                "Sending again sends nothing twice",
                ["send", "--campaign", DEMO_CAMPAIGN, "--yes", "--ignore-window"],
            ),
            ("Where the campaign stands", ["status", "--campaign", DEMO_CAMPAIGN]),
            (
                "A raadslid answers: staff record the reply by hand (inbox sync does it from IMAP)",
                [
                    *("track", "reply", "--contact", DEMO_REPLY, "--campaign", DEMO_CAMPAIGN),
                    *("--text", "Wil graag in gesprek over wijkteams; stelt schriftelijke vragen."),
                ],
            ),
            (
                "Another asks to receive no more letters: suppressed at once",
                ["track", "optout", "--contact", DEMO_OPTOUT, "--campaign", DEMO_CAMPAIGN],
            ),
            ("The campaign report per party", ["report", "--campaign", DEMO_CAMPAIGN, "--by", "party"]),
        ]
        # The sink has no TLS: the demo's own process talks plain SMTP to 127.0.0.1, nothing else does.
        env = {
            "OUTREACH_SMTP_HOST": "127.0.0.1",
            "OUTREACH_SMTP_PORT": str(port),
            "OUTREACH_SMTP_TLS": "none",
        }
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            for title, args in steps:
                say(f"\n== {title}\n$ outreach {shlex.join(args)}")
                code = invoke([*base, *args])
                if code != 0:
                    say(f"\nThe demo stopped: that command exited with {code}.")
                    return code
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        say(
            f"\nThe sink received {handler.received} messages for {len(handler.recipients)} addresses;"
            f" they are in {folder / 'sink'}. Previews: {folder / 'preview' / 'index.html'}."
        )
    return 0
