"""Benchmark of `outreach send` (issue 4): letters per second, CPU and peak RSS, against the peers.

Scenarios, each on a fresh copy of one prepared SQLite database:

- loopback: Postfix's ``smtp-sink`` on 127.0.0.1 as the server; C ``smtp-source`` (the ceiling),
  ``outreach send`` with all its bookkeeping, and mailmerge 2.3.0 (installed into its own venv under
  /tmp, never into the project) with the same letter;
- 10 ms round trip with STARTTLS and AUTH: an aiosmtpd sink with TLS behind an asyncio proxy that delays
  every chunk by 5 ms each way (smtp-sink has no TLS); and the same sink announcing PIPELINING, as real
  relays do (outreach only: mailmerge does not pipeline);
- memory: ``outreach send`` of 100,000 letters to smtp-sink (``--large``).

CPU and peak RSS are those of the sending process alone (``os.wait4``). Run::

    .venv/bin/python bench/send_bench.py [--count 10000] [--large] [--write]

``--write`` replaces the ``## Sending`` section of docs/performance.md with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MAILMERGE_VENV = Path("/tmp/outreach-bench-mailmerge")
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"

CAMPAIGN_TOML = """\
name = "Benchmark"
subject = "Jeugdzorg in {{ municipality.name }}"
text = "brief.txt.j2"
griffie_copy = "none"

[from]
name = "Het Vergeten Kind"
address = "brieven@hetvergetenkind.nl"
reply_to = "brieven@hetvergetenkind.nl"
message_domain = "hetvergetenkind.nl"

[audience]
roles = ["raadslid"]

[unsubscribe]
mailto = "afmelden@hetvergetenkind.nl"

[sending]
max_per_connection = 1000
"""

LETTER = """\
{{ aanhef }},

Wij schrijven u over de jeugdzorg in {{ municipality.name }}. Ieder jaar moeten in Nederland duizenden
kinderen hun ouderlijk huis verlaten. Vaak gaat daar een lange periode aan vooraf waarin het gezin wel
aan de bel trok, maar niet de steun kreeg die nodig was. Wij vragen u daarom na te vragen hoeveel
kinderen uit uw gemeente de afgelopen jaren uit huis zijn geplaatst, en bij hoeveel van hen eerst
gezinsondersteuning is geprobeerd.

Met vriendelijke groet,

Het Vergeten Kind
"""

MAILMERGE_TEMPLATE = """\
TO: {{email}}
SUBJECT: Jeugdzorg in {{gemeente}}
FROM: Het Vergeten Kind <brieven@hetvergetenkind.nl>
REPLY-TO: brieven@hetvergetenkind.nl

{{aanhef}},

Wij schrijven u over de jeugdzorg in {{gemeente}}. Ieder jaar moeten in Nederland duizenden
kinderen hun ouderlijk huis verlaten. Vaak gaat daar een lange periode aan vooraf waarin het gezin wel
aan de bel trok, maar niet de steun kreeg die nodig was. Wij vragen u daarom na te vragen hoeveel
kinderen uit uw gemeente de afgelopen jaren uit huis zijn geplaatst, en bij hoeveel van hen eerst
gezinsondersteuning is geprobeerd.

Met vriendelijke groet,

Het Vergeten Kind
"""


@dataclass
class Result:
    scenario: str
    tool: str
    messages: int
    wall: float  # seconds, the whole process
    cpu: float  # user + system seconds of the sending process
    rss_mb: float  # peak resident set of the sending process
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.wall if self.wall else 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def timed(
    cmd: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None, check: bool = True
) -> tuple[float, float, float, str]:
    """Run ``cmd``; wall seconds, CPU seconds and peak RSS (MB) of that process alone, and its stdout."""
    # GNU time measures its own child: ru_maxrss of a child forked straight from this (large) Python
    # process would include pages it inherited before exec.
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["/usr/bin/time", "-f", "@@time %M %U %S", *cmd],
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if stdin is not None and proc.stdin is not None:
        proc.stdin.write(stdin)
        proc.stdin.close()
    out_chunks: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if len(out_chunks) < 200:
            out_chunks.append(line)
    proc.wait()
    wall = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    if check and proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {stderr[-2000:]}")
    found = re.search(r"@@time (\d+) ([\d.]+) ([\d.]+)", stderr)
    assert found, stderr[-500:]
    rss_kb, user, system = int(found.group(1)), float(found.group(2)), float(found.group(3))
    return wall, user + system, rss_kb / 1024, "".join(out_chunks)


@contextmanager
def background(cmd: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port)
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


@contextmanager
def smtp_sink() -> Iterator[int]:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with background([SMTP_SINK, *user, f"127.0.0.1:{port}", "1000"], port):
        yield port


# ------------------------------------------------------------------------------------------- preparing


def bulk_contacts(url: str, templates: Path, count: int, *, big_domain: str = "", every: int = 0) -> None:
    """``count`` raadsleden over every municipality, inserted in bulk, and the campaign approved. With
    ``big_domain``, every ``every``-th contact has an address there (one large destination)."""

    from outreach.db import open_database
    from outreach.letters.approval import record_approval
    from outreach.letters.campaign_file import load_campaign
    from outreach.models import Contact, Municipality, utcnow
    from outreach.registry.keys import email_hash, email_key, office_key
    from outreach.registry.municipalities import load_municipalities

    engine = open_database(url)
    load_municipalities(engine)
    table: Any = Contact.__table__  # type: ignore[attr-defined]
    m: Any = Municipality.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:
        municipalities = [(row.id, row.cbs_code) for row in conn.execute(select(m.c.id, m.c.cbs_code))]
        now = utcnow()
        batch: list[dict[str, Any]] = []
        for n in range(count):
            mid, cbs = municipalities[n % len(municipalities)]
            address = f"raadslid{n}@{cbs.lower()}.example.nl"
            if big_domain and n % every == 0:
                address = f"raadslid{n}@{big_domain}"
            key = email_key(address)
            batch.append(
                {
                    "municipality_id": mid,
                    "role": "raadslid",
                    "voorletters": "J.",
                    "achternaam": f"Jansen{n}",
                    "email": address,
                    "email_normalized": address,
                    "email_key": key,
                    "email_hash": email_hash(key),
                    "office_key": office_key(key, cbs, "raadslid"),
                    "sort_name": f"jansen{n}",
                    "source": "bench",
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
            if len(batch) == 10_000:
                conn.execute(insert(table), batch)
                batch = []
        if batch:
            conn.execute(insert(table), batch)
    record_approval(engine, load_campaign(templates, "bench"), "bench")
    engine.dispose()


def prepare(folder: Path, count: int, *, big_domain: str = "", every: int = 0) -> Path:
    """A SQLite database with ``count`` raadsleden and an approved campaign; returns the file."""
    templates = folder / "letters"
    (templates / "bench").mkdir(parents=True)
    (templates / "bench" / "campaign.toml").write_text(CAMPAIGN_TOML, encoding="utf-8")
    (templates / "bench" / "brief.txt.j2").write_text(LETTER, encoding="utf-8")
    path = folder / f"prepared-{count}.db"
    bulk_contacts(f"sqlite:///{path}", templates, count, big_domain=big_domain, every=every)
    return path


def letter_size(folder: Path, db: Path) -> int:
    from outreach.db import open_database
    from outreach.letters.campaign_file import load_campaign
    from outreach.letters.compose import LetterComposer
    from outreach.letters.ids import new_token
    from outreach.letters.recipients import load_recipients
    from outreach.models import utcnow

    engine = open_database(f"sqlite:///{db}")
    with engine.connect() as conn:
        recipient = load_recipients(conn, [1])[1]
    letter = LetterComposer(load_campaign(folder / "letters", "bench")).compose(
        recipient, token=new_token(), now=utcnow()
    )
    engine.dispose()
    return len(letter.as_bytes())


def mailmerge_files(folder: Path, count: int, port: int, security: str | None) -> list[str]:
    MAILMERGE_VENV.parent.mkdir(exist_ok=True)
    binary = MAILMERGE_VENV / "bin" / "mailmerge"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(MAILMERGE_VENV)], check=True)
        subprocess.run([str(MAILMERGE_VENV / "bin" / "pip"), "install", "-q", "mailmerge==2.3.0"], check=True)
    (folder / "mm_template.txt").write_text(MAILMERGE_TEMPLATE, encoding="utf-8")
    with (folder / "mm_database.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["email", "gemeente", "aanhef"])
        for n in range(count):
            writer.writerow([f"raadslid{n}@gm{n % 342:04d}.example.nl", "Utrecht", f"Geachte heer Jansen{n}"])
    lines = ["[smtp_server]", "host = 127.0.0.1", f"port = {port}"]
    lines += [f"security = {security}", "username = brieven"] if security else ["security = Never"]
    (folder / "mm_server.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [
        str(binary),
        "--no-dry-run",
        "--no-limit",
        "--output-format",
        "raw",
        "--template",
        str(folder / "mm_template.txt"),
        "--database",
        str(folder / "mm_database.csv"),
        "--config",
        str(folder / "mm_server.conf"),
    ]


def send_env(url: str, templates: Path, port: int, *, tls: str = "none") -> dict[str, str]:
    """The environment of a benchmarked ``outreach send``: nothing of ours but the database, the
    templates and the SMTP server."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(templates.parent),
        "OUTREACH_DATABASE_URL": url,
        "OUTREACH_TEMPLATES": str(templates),
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(port),
        "OUTREACH_SMTP_TLS": tls,
        "OUTREACH_MX_LOOKUP": "off",  # loopback only: no DNS in a benchmark
    }
    if "PYTHONPATH" in os.environ:  # to measure another checkout: PYTHONPATH=/path/to/it
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def send_command(concurrency: int) -> list[str]:
    return [
        str(VENV_BIN / "outreach"),
        "send",
        "--campaign",
        "bench",
        "--yes",
        "--concurrency",
        str(concurrency),
    ]


def run_outreach(
    folder: Path,
    prepared: Path,
    port: int,
    *,
    concurrency: int,
    tls: str = "none",
    ca: Path | None = None,
    pythonpath: str | None = None,
    db: Path | None = None,
    check: bool = True,
) -> tuple[float, float, float, str]:
    db = db or folder / f"run-{time.monotonic_ns()}.db"
    shutil.copy(prepared, db)
    env = send_env(f"sqlite:///{db}", folder / "letters", port, tls=tls)
    if pythonpath is not None:  # another checkout (the previous commit), measured in the same run
        env["PYTHONPATH"] = pythonpath
    if ca is not None:
        env.update(
            OUTREACH_SMTP_CA_FILE=str(ca), OUTREACH_SMTP_USERNAME="brieven", OUTREACH_SMTP_PASSWORD="geheim"
        )
    cmd = send_command(concurrency)
    return timed(cmd, env=env, check=check)


def send_rate(stdout: str) -> str:
    found = re.search(r"\(([\d,]+) letters/s\)", stdout)
    return f"send phase {found.group(1)} letters/s" if found else ""


# --------------------------------------------------------------------------- 10 ms round trip with TLS

TLS_SINK = """
import asyncio, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

PIPELINING = sys.argv[4:5] == ["pipelining"]

class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd reads commands one line at a time, so it serves pipelining clients; it just does not
        # say so. Real relays (Postfix, Exchange) do.
        session.host_name = hostname
        if PIPELINING:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        return "250 OK"

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
controller = Controller(
    Sink(), hostname="127.0.0.1", port=int(sys.argv[1]), tls_context=ctx, require_starttls=True,
    authenticator=lambda *a: AuthResult(success=True), auth_required=True,
)
controller.start()
import signal, threading
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
controller.stop()
"""

DELAY_PROXY = """
import asyncio, sys
listen, upstream, delay = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])

async def pump(reader, writer):
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            loop.call_later(delay, writer.write, data)
    finally:
        loop.call_later(delay, writer.close)

async def handle(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@contextmanager
def tls_sink_behind_delay(
    folder: Path, one_way_delay: float, *, pipelining: bool = False
) -> Iterator[tuple[int, Path]]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    (folder / "tls_sink.py").write_text(TLS_SINK, encoding="utf-8")
    (folder / "delay_proxy.py").write_text(DELAY_PROXY, encoding="utf-8")
    sink_port, proxy_port = free_port(), free_port()
    sink = [sys.executable, str(folder / "tls_sink.py"), str(sink_port), str(cert_file), str(key_file)]
    if pipelining:
        sink.append("pipelining")
    proxy = [
        sys.executable,
        str(folder / "delay_proxy.py"),
        str(proxy_port),
        str(sink_port),
        str(one_way_delay),
    ]
    with background(sink, sink_port), background(proxy, proxy_port):
        yield proxy_port, ca_file


# --------------------------------------------------------------------------- faults: 421, 451, dropped

FAULT_SINK = """
import asyncio, json, random, signal, sys, threading, time
from aiosmtpd.controller import Controller

port, rate, log_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
throttle_domain = sys.argv[4] if len(sys.argv) > 4 else ""
throttle_after = int(sys.argv[5]) if len(sys.argv) > 5 else 0
rng = random.Random(20261201)
accepted = []  # (time, recipient)
tried = []  # (time, recipient, refused): every RCPT to the throttled domain
faults = {"421": 0, "451": 0, "drop": 0}
throttle_seen = [0]


def fault(server):
    # A share ``rate`` of all commands (MAIL, RCPT, end of data) fails: 421 and close, 451, or the
    # connection dropped without an answer.
    if rate <= 0 or rng.random() >= rate:
        return None
    kind = rng.choice(("421", "451", "drop"))
    faults[kind] += 1
    if kind == "421":
        asyncio.get_running_loop().call_soon(server.transport.close)  # after the reply is written
        return "421 4.3.2 Service not available, closing transmission channel"
    if kind == "451":
        return "451 4.3.0 Temporary server error, please try again later"
    server.transport.close()
    return "250 OK"  # never reaches the client


class Sink:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        reply = fault(server)
        if reply is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if throttle_domain and address.endswith("@" + throttle_domain):
            throttle_seen[0] += 1
            refused = throttle_seen[0] > throttle_after
            tried.append((time.time(), address, refused))
            if refused:
                return "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited"
        reply = fault(server)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = fault(server)
        if reply is not None:
            return reply
        accepted.append((time.time(), envelope.rcpt_tos[0]))
        return "250 2.0.0 queued"


controller = Controller(Sink(), hostname="127.0.0.1", port=port)
controller.start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
stop.wait()
controller.stop()
with open(log_path, "w") as fh:
    json.dump({"accepted": accepted, "tried": tried, "faults": faults}, fh)
"""


@dataclass
class FaultRun:
    label: str
    wall: float
    started: float  # time.time() when the process started
    accepted: list[tuple[float, str]]
    tried: list[tuple[float, str, bool]]
    faults: dict[str, int]
    states: dict[str, str]  # recipient -> delivery state afterwards

    def delivered_within(self, seconds: float) -> int:
        return sum(1 for t, _ in self.accepted if t - self.started <= seconds)

    @property
    def duplicates(self) -> int:
        counts: dict[str, int] = {}
        for _, rcpt in self.accepted:
            counts[rcpt] = counts.get(rcpt, 0) + 1
        return sum(n - 1 for n in counts.values() if n > 1)

    @property
    def accepted_not_recorded(self) -> int:
        """Letters the server accepted that the database does not have as ``sent`` or ``unknown``."""
        return sum(1 for _, rcpt in self.accepted if self.states.get(rcpt) not in ("sent", "unknown"))


def fault_run(
    folder: Path,
    prepared: Path,
    label: str,
    rate: float,
    *,
    concurrency: int,
    throttle: tuple[str, int] | None = None,
    pythonpath: str | None = None,
) -> FaultRun:
    import json
    import sqlite3

    script = folder / "fault_sink.py"
    script.write_text(FAULT_SINK, encoding="utf-8")
    port = free_port()
    log_path = folder / f"fault-{time.monotonic_ns()}.json"
    cmd = [sys.executable, str(script), str(port), str(rate), str(log_path)]
    if throttle is not None:
        cmd += [throttle[0], str(throttle[1])]
    db = folder / f"fault-{time.monotonic_ns()}.db"
    with background(cmd, port):
        started = time.time()
        wall, _, _, _ = run_outreach(
            folder, prepared, port, concurrency=concurrency, db=db, check=False, pythonpath=pythonpath
        )
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while not log_path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    data = json.loads(log_path.read_text(encoding="utf-8"))
    conn = sqlite3.connect(db)
    states = dict(
        conn.execute(
            "SELECT contact.email_normalized, delivery.state FROM delivery JOIN contact ON contact.id = "
            "delivery.contact_id"
        ).fetchall()
    )
    conn.close()
    return FaultRun(
        label,
        wall,
        started,
        [tuple(a) for a in data["accepted"]],
        [tuple(t) for t in data["tried"]],
        data["faults"],
        states,
    )


def render_faults(runs: list[FaultRun], count: int) -> str:
    baseline = runs[0]
    lines = [
        f"| run | wall s | delivered within {baseline.wall:.1f} s (the fault-free run's time) "
        "| delivered in all | duplicates | accepted but not recorded sent/unknown "
        "| faults injected (421 / 451 / dropped) | states afterwards |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        within = run.delivered_within(baseline.wall)
        states: dict[str, int] = {}
        for state in run.states.values():
            states[state] = states.get(state, 0) + 1
        faults = run.faults
        lines.append(
            f"| {run.label} | {run.wall:.1f} | {within:,} ({within / count:.0%}) | {len(run.accepted):,} | "
            f"{run.duplicates} | {run.accepted_not_recorded} | {faults['421']} / {faults['451']} / "
            f"{faults['drop']} | {', '.join(f'{k} {v:,}' for k, v in sorted(states.items()))} |"
        )
    return "\n".join(lines)


def render_throttle(run: FaultRun, baseline: FaultRun, domain: str, after: int) -> str:
    """Per second: letters accepted for the other domains (both runs) and tries of the throttled one."""
    lines = [
        f"| second | others accepted (no throttling) | others accepted | {domain}: accepted | "
        f"{domain}: RCPT tried (refused) |",
        "|---:|---:|---:|---:|---:|",
    ]
    seconds = int(max(run.wall, baseline.wall)) + 1

    def within(r: FaultRun, second: int, *, mine: bool) -> int:
        return sum(
            1
            for t, rcpt in r.accepted
            if second <= t - r.started < second + 1 and rcpt.endswith("@" + domain) == mine
        )

    for second in range(seconds):
        tries = [refused for t, _, refused in run.tried if second <= t - run.started < second + 1]
        lines.append(
            f"| {second} | {within(baseline, second, mine=False):,} | {within(run, second, mine=False):,} | "
            f"{within(run, second, mine=True)} | {len(tries)} ({sum(tries)}) |"
        )
    throttled = [s for r, s in run.states.items() if r.endswith("@" + domain)]
    counts: dict[str, int] = {}
    for state in throttled:
        counts[state] = counts.get(state, 0) + 1
    lines.append("")
    lines.append(
        f"{domain}: {len(throttled)} letters, the first {after} accepted, then `451 4.7.650`; afterwards "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; {len(run.tried)} RCPT tries to it in all."
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--rtt-count", type=int, default=5_000, help="letters for outreach at 10 ms RTT")
    parser.add_argument("--mailmerge-rtt-count", type=int, default=200, help="mailmerge is slow there")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rtt-concurrency", type=int, default=50)
    parser.add_argument("--large", action="store_true", help="also 100,000 letters, for peak RSS")
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--only",
        default="loopback,rtt,faults,throttle",
        help="comma-separated scenarios: loopback, rtt, faults, throttle (and --large)",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="a checkout of the previous commit: its `outreach send` runs the loopback scenario too, "
        "interleaved with this one (PYTHONPATH=DIR)",
    )
    parser.add_argument("--pairs", type=int, default=3, help="--baseline: interleaved pairs of runs")
    parser.add_argument(
        "--baseline-faults",
        action="store_true",
        help="--baseline: its sender through the fault scenarios too, interleaved over --pairs rounds "
        "(then the loopback comparison runs only with `loopback` in --only)",
    )
    parser.add_argument("--no-mailmerge", action="store_true", help="leave mailmerge out (it is slow)")
    parser.add_argument("--fault-rates", default="4,10", help="percentages of failing commands")
    args = parser.parse_args()
    only = set(args.only.split(","))

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="outreach-send-bench-") as tmp:
        folder = Path(tmp)
        prepared = prepare(folder, args.count)
        size = letter_size(folder, prepared)
        print(f"letter size {size} bytes", file=sys.stderr)
        if args.baseline and ("loopback" in only or not args.baseline_faults):
            print(compare_loopback(folder, prepared, args.count, args.concurrency, args.baseline, args.pairs))
        if "faults" in only:
            baseline = args.baseline if args.baseline_faults else None
            rates = tuple(float(r) / 100 for r in args.fault_rates.split(","))
            print(
                fault_scenarios(folder, prepared, args.count, args.concurrency, baseline, args.pairs, rates)
            )
        if "throttle" in only:
            print(throttle_scenario(folder, args.count, args.concurrency))
        if not only & {"loopback", "rtt"} and not args.large:
            return

        loop_name = "loopback, smtp-sink"
        with contextlib.suppress(_Skip), smtp_sink() as port:
            if "loopback" not in only:
                raise _Skip
            wall, cpu, rss, _ = timed(
                [SMTP_SOURCE, "-s", "20", "-m", str(args.count), "-l", str(size), "-f", "a@example.org",
                 "-t", "b@example.org", f"127.0.0.1:{port}"]
            )  # fmt: skip
            results.append(
                Result(
                    loop_name,
                    "smtp-source (C)",
                    args.count,
                    wall,
                    cpu,
                    rss,
                    "20 sessions, a connection per message",
                )
            )
            wall, cpu, rss, _ = timed(
                [SMTP_SOURCE, "-d", "-s", "20", "-m", str(args.count), "-l", str(size), "-f", "a@example.org",
                 "-t", "b@example.org", f"127.0.0.1:{port}"]
            )  # fmt: skip
            results.append(
                Result(loop_name, "smtp-source -d (C, ceiling)", args.count, wall, cpu, rss,
                       "20 sessions, persistent connections")
            )  # fmt: skip
            wall, cpu, rss, out = run_outreach(folder, prepared, port, concurrency=args.concurrency)
            results.append(
                Result(
                    loop_name,
                    "outreach send",
                    args.count,
                    wall,
                    cpu,
                    rss,
                    f"--concurrency {args.concurrency}, whole process incl. startup and planning; "
                    + send_rate(out),
                )
            )
            if args.no_mailmerge:
                raise _Skip
            cmd = mailmerge_files(folder, args.count, port, None)
            wall, cpu, rss, _ = timed(cmd)
            results.append(
                Result(loop_name, "mailmerge 2.3.0", args.count, wall, cpu, rss, "one connection per letter")
            )

        if "rtt" not in only:
            args.rtt_count = 0
        rtt_db = (
            prepare(folder / "rtt", args.rtt_count) if args.rtt_count not in (0, args.count) else prepared
        )
        rtt_folder = folder if rtt_db is prepared else folder / "rtt"

        # With --baseline, the previous commit's sender runs each of these scenarios too, just before
        # this one, against the same server.
        checkouts: list[tuple[str, str | None]] = (
            [("outreach send, previous commit", args.baseline), ("outreach send, this commit", None)]
            if args.baseline
            else [("outreach send", None)]
        )

        def outreach_at_rtt(name: str, port: int, ca_file: Path) -> None:
            for tool, path in checkouts:
                wall, cpu, rss, out = run_outreach(
                    rtt_folder, rtt_db, port, concurrency=args.rtt_concurrency, tls="starttls", ca=ca_file,
                    pythonpath=path,
                )  # fmt: skip
                results.append(
                    Result(name, tool, args.rtt_count, wall, cpu, rss,
                           f"--concurrency {args.rtt_concurrency}; " + send_rate(out))
                )  # fmt: skip

        rtt_name = "10 ms RTT, STARTTLS + AUTH, aiosmtpd"
        with contextlib.suppress(_Skip), tls_sink_behind_delay(folder, 0.005) as (port, ca_file):
            if not args.rtt_count:
                raise _Skip
            outreach_at_rtt(rtt_name, port, ca_file)
            if args.no_mailmerge:
                raise _Skip
            cmd = mailmerge_files(folder, args.mailmerge_rtt_count, port, "STARTTLS")
            wall, cpu, rss, _ = timed(cmd, stdin="geheim\n")
            count = args.mailmerge_rtt_count
            note = "one connection per letter"
            results.append(Result(rtt_name, "mailmerge 2.3.0", count, wall, cpu, rss, note))

        # The same server announcing PIPELINING, as real relays do: outreach then sends MAIL, RCPT and
        # DATA in one write and the next letter's envelope behind each body (one round trip per letter).
        # mailmerge does not pipeline, so its figure above stands for this server too.
        with (
            contextlib.suppress(_Skip),
            tls_sink_behind_delay(folder, 0.005, pipelining=True) as (port, ca_file),
        ):
            if not args.rtt_count:
                raise _Skip
            outreach_at_rtt("10 ms RTT, STARTTLS + AUTH + PIPELINING, aiosmtpd", port, ca_file)

        if args.large:
            large = prepare(folder / "large", 100_000)
            for tool, path in checkouts:
                with smtp_sink() as port:
                    wall, cpu, rss, out = run_outreach(
                        folder / "large", large, port, concurrency=args.concurrency, pythonpath=path
                    )
                results.append(
                    Result("100,000 letters, smtp-sink", tool, 100_000, wall, cpu, rss, send_rate(out))
                )

    table = render(results)
    print(table)
    if args.write:
        write_section(table)


class _Skip(Exception):
    """A scenario left out with --only."""


def compare_loopback(
    folder: Path, prepared: Path, count: int, concurrency: int, baseline: str, pairs: int
) -> str:
    """``outreach send`` of this checkout and of ``baseline`` to smtp-sink, in interleaved pairs."""
    rows = ["| run | checkout | wall s | letters/s whole process | send phase | CPU s | peak RSS MB |",
            "|---:|---|---:|---:|---|---:|---:|"]  # fmt: skip
    with smtp_sink() as port:
        for n in range(pairs):
            for name, path in (("previous commit", baseline), ("this commit", None)):
                wall, cpu, rss, out = run_outreach(
                    folder, prepared, port, concurrency=concurrency, pythonpath=path
                )
                rows.append(f"| {n + 1} | {name} | {wall:.2f} | {count / wall:,.0f} | {send_rate(out)} | "
                            f"{cpu:.1f} | {rss:.0f} |")  # fmt: skip
    return "\n".join(rows)


def fault_scenarios(
    folder: Path,
    prepared: Path,
    count: int,
    concurrency: int,
    baseline: str | None = None,
    pairs: int = 1,
    rates: tuple[float, ...] = (0.04, 0.10),
) -> str:
    """10,000 letters through a server that fails 0 %, 4 % and 10 % of commands (421, 451, dropped).
    With ``baseline``, ``pairs`` rounds of the fault-free run and, per rate, the previous commit's sender
    and this one interleaved; each round's fault runs are measured against that round's fault-free time."""
    if not baseline:
        runs = [
            fault_run(folder, prepared, f"{rate:.0%} of commands fail", rate, concurrency=concurrency)
            for rate in (0.0, *rates)
        ]
        return render_faults(runs, count)
    tables = []
    for n in range(pairs):
        runs = [fault_run(folder, prepared, f"{n + 1}: 0 %, this commit", 0.0, concurrency=concurrency)]
        for rate in rates:
            for name, path in (("previous commit", baseline), ("this commit", None)):
                label = f"{n + 1}: {rate:.0%}, {name}"
                run = fault_run(folder, prepared, label, rate, concurrency=concurrency, pythonpath=path)
                runs.append(run)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        tables.append(f"round {n + 1} (load average {load} after it)\n" + render_faults(runs, count))
    return "\n\n".join(tables)


def throttle_scenario(folder: Path, count: int, concurrency: int) -> str:
    """One destination (a tenth of the letters) answers ``451 4.7.650`` after its first 100 letters;
    the others go on as before."""
    domain, after = "utrecht.example.nl", 100
    prepared = prepare(folder / "throttle", count, big_domain=domain, every=10)
    work = folder / "throttle"
    baseline = fault_run(work, prepared, "no throttling", 0.0, concurrency=concurrency)
    run = fault_run(work, prepared, "throttled", 0.0, concurrency=concurrency, throttle=(domain, after))
    return render_throttle(run, baseline, domain, after)


def render(results: list[Result]) -> str:
    lines = [
        "| scenario | sender | letters | wall s | letters/s | CPU s | peak RSS MB | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.scenario} | {r.tool} | {r.messages:,} | {r.wall:.1f} | {r.rate:,.0f} | {r.cpu:.1f} | "
            f"{r.rss_mb:.0f} | {r.note} |"
        )
    return "\n".join(lines)


def write_section(table: str) -> None:
    path = REPO / "docs" / "performance.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance\n"
    machine = f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')}"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    section = (
        "## Sending\n\n"
        f"`bench/send_bench.py` ({machine}; load average {load} when it ended). Letters/s is letters "
        "divided by the wall time of the whole process, including interpreter start-up, planning and the "
        "final bookkeeping; CPU and peak RSS are those of the sending process (with `outreach send`, "
        "CPU includes its composer process; peak RSS is the larger of the two).\n\n" + table + "\n"
    )
    # The analysis under "### ..." headings below the table is kept.
    pattern = re.compile(r"^## Sending\n.*?(?=^### |^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
