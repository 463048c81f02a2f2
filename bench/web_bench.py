"""Benchmark of `outreach serve` (issue 15): one-click unsubscribes while a send runs on the same SQLite.

Each round prepares a fresh copy of one SQLite database: 10,000 raadsleden in campaign ``bench`` and
2,000 wethouders (outside its audience, so that both sends have the same 10,000 letters) who received
an earlier letter (campaign ``eerder``) whose unsubscribe token they use. Then:

- **baseline**: ``outreach send`` of the 10,000 letters to Postfix's ``smtp-sink`` on 127.0.0.1;
- **loaded**: the same send, and as soon as its first letters are out, 2,000 RFC 8058 one-click POSTs
  from 50 concurrent clients (keep-alive connections; each client its own X-Forwarded-For address, as
  behind a trusted proxy) to ``outreach serve`` (the real command, a process of its own) on the same
  database file.

Measured: requests/s over the 2,000, latency p50/p99/max per request, errors (anything but 200), every
opt-out recorded exactly once (events and suppressions), and the send's own letters/s in both runs. The
load generator is a minimal asyncio HTTP/1.1 client (not httpx) so that it takes as little of the
machine's CPU as it can. Run::

    flock /tmp/bench.lock .venv/bin/python bench/web_bench.py [--rounds 3] [--in-audience] [--write]

``--write`` replaces the ``## Web`` section of docs/performance.md with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: bench/web_bench.py
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: another checkout wins

from bench.send_bench import (
    CAMPAIGN_TOML,
    LETTER,
    bulk_contacts,
    free_port,
    send_command,
    send_env,
    smtp_sink,
    timed,
    wait_port,
)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
LETTERS = 10_000
OPT_OUTS = 2_000
CLIENTS = 50
NICE = 0  # --nice: the web server's niceness (the systemd unit's Nice=)
SEPARATE_DB = False  # --separate-db: the web server writes to a copy (CPU contention only)
BODY = b"List-Unsubscribe=One-Click"


@dataclass
class LoadResult:
    latencies: list[float]  # seconds per request
    errors: int
    wall: float  # first request sent → last response read

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def prepare(folder: Path, in_audience: bool = False) -> tuple[Path, list[str]]:
    """The prepared database and the 2,000 tokens of letters of an earlier campaign: to wethouders outside
    the send's audience, or (``in_audience``) to every fifth of the raadsleden the send writes to."""
    templates = folder / "letters"
    (templates / "bench").mkdir(parents=True)
    (templates / "bench" / "campaign.toml").write_text(CAMPAIGN_TOML, encoding="utf-8")
    (templates / "bench" / "brief.txt.j2").write_text(LETTER, encoding="utf-8")
    path = folder / "prepared.db"
    url = f"sqlite:///{path}"
    bulk_contacts(url, templates, LETTERS)

    from sqlalchemy import insert

    from outreach.db import open_database
    from outreach.letters.ids import message_id, new_token
    from outreach.models import Campaign, Contact, Delivery, utcnow
    from outreach.registry.keys import email_hash, email_key, office_key

    engine = open_database(url)
    now = utcnow()
    tokens = [new_token() for _ in range(OPT_OUTS)]
    with engine.begin() as conn:
        contacts: Any = Contact.__table__  # type: ignore[attr-defined]
        wethouders = []
        for n in range(OPT_OUTS):
            address = f"wethouder{n}@gemeente{n % 342}.example.nl"
            key = email_key(address)
            wethouders.append(
                {
                    "municipality_id": 1 + n % 342,
                    "role": "wethouder",
                    "achternaam": f"de Vries{n}",
                    "email": address,
                    "email_normalized": address,
                    "email_key": key,
                    "email_hash": email_hash(key),
                    "office_key": office_key(key, f"GM{n:04d}", "wethouder"),
                    "sort_name": f"vries{n}",
                    "source": "bench",
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
        ids = conn.execute(insert(contacts).values(wethouders).returning(contacts.c.id)).scalars().all()
        campaigns: Any = Campaign.__table__  # type: ignore[attr-defined]
        campaign_id = conn.execute(
            insert(campaigns)
            .values(slug="eerder", name="Eerdere brief", created_at=now)
            .returning(campaigns.c.id)
        ).scalar_one()
        conn.execute(
            insert(Delivery.__table__),  # type: ignore[attr-defined]
            [
                {
                    "campaign_id": campaign_id,
                    "contact_id": 1 + 5 * n if in_audience else ids[n],
                    "state": "sent",
                    "token": token,
                    "message_id": message_id(token, "hetvergetenkind.nl"),
                    "attempts": 1,
                    "sent_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
                for n, token in enumerate(tokens)
            ],
        )
    engine.dispose()
    return path, tokens


# ------------------------------------------------------------------------------------- the load


async def _client(
    port: int, number: int, tokens: list[str], latencies: list[float], errors: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    forwarded = f"10.{number // 250}.{number % 250}.1".encode()
    try:
        for token in tokens:
            request = (
                b"POST /afmelden/" + token.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(BODY)).encode() + b"\r\n"
                b"X-Forwarded-For: " + forwarded + b"\r\n\r\n" + BODY
            )
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors.append(1)
    finally:
        writer.close()
        await writer.wait_closed()


async def load(port: int, tokens: list[str]) -> LoadResult:
    latencies: list[float] = []
    errors: list[int] = []
    shares = [tokens[i::CLIENTS] for i in range(CLIENTS)]
    started = time.perf_counter()
    results = await asyncio.gather(
        *(_client(port, n, share, latencies, errors) for n, share in enumerate(shares)),
        return_exceptions=True,
    )
    wall = time.perf_counter() - started
    failed = sum(1 for r in results if isinstance(r, BaseException))
    return LoadResult(latencies, len(errors) + failed + (len(tokens) - len(latencies) if failed else 0), wall)


# ------------------------------------------------------------------------------------- a round


def sent_count(db: Path) -> int:
    """Letters of campaign ``bench`` sent so far (read-only: never in the sender's way)."""
    query = (
        "SELECT count(*) FROM delivery JOIN campaign ON campaign.id = delivery.campaign_id"
        " WHERE campaign.slug = 'bench' AND delivery.state = 'sent'"
    )
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        return int(conn.execute(query).fetchone()[0])


def recorded(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT delivery_id) FROM event"
            " WHERE kind = 'opt-out' AND source = 'web'"
        ).fetchone()
        suppressions = conn.execute("SELECT count(*) FROM suppression WHERE source = 'web'").fetchone()[0]
        skipped = conn.execute(
            "SELECT count(*) FROM delivery WHERE skip_reason = 'suppressed: opt-out'"
        ).fetchone()[0]
    return {"events": row[0], "letters": row[1], "suppressions": suppressions, "skipped": skipped}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_send(folder: Path, db: Path, sink: int) -> tuple[float, str]:
    """``outreach send`` of campaign ``bench``: its wall seconds and output."""
    env = send_env(f"sqlite:///{db}", folder / "letters", sink)
    wall, _cpu, _rss, out = timed(send_command(8), env=env)
    return wall, out


def baseline(folder: Path, prepared: Path, sink: int, n: int) -> float:
    """The send alone: letters/s of the whole `outreach send` (planning included)."""
    db = folder / f"baseline-{n}.db"
    shutil.copy(prepared, db)
    wall, _ = run_send(folder, db, sink)
    return LETTERS / wall


def round_trip(folder: Path, prepared: Path, tokens: list[str], sink: int, n: int) -> dict[str, Any]:
    # The baseline runs before the loaded send in even rounds and after it in odd ones, so that a
    # machine getting busier or quieter during the benchmark does not favour one side.
    base = baseline(folder, prepared, sink, n) if n % 2 == 0 else 0.0

    db = folder / f"loaded-{n}.db"
    shutil.copy(prepared, db)
    port = free_port()
    served = db
    if SEPARATE_DB:  # the diagnostic: the same CPU load, but no shared database
        served = folder / f"served-{n}.db"
        shutil.copy(prepared, served)
    env = send_env(f"sqlite:///{served}", folder / "letters", sink)
    env["OUTREACH_WEB_TRUSTED_PROXIES"] = "127.0.0.1"
    env["OUTREACH_WEB_BASE_URL"] = "https://post.example.nl"
    log = (folder / f"serve-{n}.log").open("w")
    nice = ["nice", "-n", str(NICE)] if NICE else []
    server = subprocess.Popen(
        [*nice, str(VENV_BIN / "outreach"), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_port(port, 20)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            sending = pool.submit(run_send, folder, db, sink)
            deadline = time.monotonic() + 60
            while sent_count(db) == 0 and time.monotonic() < deadline and not sending.done():
                time.sleep(0.01)
            began = time.monotonic()
            cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
            result = asyncio.run(load(port, tokens))
            server_cpu, load_cpu = cpu_seconds(server.pid) - cpu_before, time.process_time() - own_before
            load_end = time.monotonic()
            send_wall, _ = sending.result()
            send_end = time.monotonic()
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    counts = recorded(served)
    overlap = min(load_end, send_end) - began
    if n % 2 == 1:
        base = baseline(folder, prepared, sink, n)
    return {
        "baseline": base,
        "loaded": LETTERS / send_wall,
        "rate": result.rate,
        "p50": result.percentile(50) * 1000,
        "p99": result.percentile(99) * 1000,
        "max": max(result.latencies) * 1000,
        "errors": result.errors,
        "requests": len(result.latencies),
        "overlap": overlap,
        "send_wall": send_wall,
        "server_cpu": server_cpu,
        "load_cpu": load_cpu,
        "load_wall": result.wall,
        **counts,
    }


def render(rounds: list[dict[str, Any]], load_avg: str) -> str:
    lines = [
        "## Web",
        "",
        f"`flock /tmp/bench.lock .venv/bin/python bench/web_bench.py --rounds {len(rounds)}"
        + (f" --nice {NICE}" if NICE else "")
        + (" --separate-db" if SEPARATE_DB else "")
        + "`:",
        f"{OPT_OUTS:,} RFC 8058 one-click POSTs from {CLIENTS} concurrent keep-alive clients to",
        f"`outreach serve` while `outreach send` sends {LETTERS:,} letters to smtp-sink on the same SQLite",
        "database; 2,000 of the recipients unsubscribe (from an earlier letter's token). Load average at",
        "the start:",
        f"{load_avg} (2 cores, shared with the other engineers' work).",
        "",
        "| round | requests/s | p50 ms | p99 ms | max ms | errors | opt-outs recorded (events / letters /"
        " suppressions) | whole send, letters/s: alone / with the load | change | load during send, s |"
        " CPU s: serve / load generator |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(rounds, 1):
        change = (r["loaded"] - r["baseline"]) / r["baseline"] * 100 if r["baseline"] else 0.0
        lines.append(
            f"| {n} | {r['rate']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} | "
            f"{r['events']:,} / {r['letters']:,} / {r['suppressions']:,} | {r['baseline']:,.0f} / "
            f"{r['loaded']:,.0f} | {change:+.1f}% | {r['overlap']:.1f} of {r['send_wall']:.1f} | "
            f"{r['server_cpu']:.2f} / {r['load_cpu']:.2f} |"
        )
    if len(rounds) > 1:
        median = {key: statistics.median(r[key] for r in rounds) for key in ("rate", "p50", "p99", "max")}
        base = statistics.median(r["baseline"] for r in rounds)
        loaded = statistics.median(r["loaded"] for r in rounds)
        lines.append(
            f"| median | {median['rate']:,.0f} | {median['p50']:.1f} | {median['p99']:.1f} | "
            f"{median['max']:.1f} | {sum(r['errors'] for r in rounds)} | | {base:,.0f} / {loaded:,.0f} | "
            f"{(loaded - base) / base * 100:+.1f}% | | |"
        )
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    path = REPO / "docs" / "performance.md"
    text = path.read_text(encoding="utf-8")
    start = text.find("## Web\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end:] if end != -1 else "")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    parser.add_argument(
        "--in-audience",
        action="store_true",
        help="the 2,000 who unsubscribe are recipients of the running send (their letters are skipped)",
    )
    parser.add_argument("--nice", type=int, default=0, help="run `outreach serve` under nice -n N")
    parser.add_argument(
        "--separate-db", action="store_true", help="the web server uses a copy of the database (diagnostic)"
    )
    args = parser.parse_args()
    global NICE, SEPARATE_DB
    NICE, SEPARATE_DB = args.nice, args.separate_db
    load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    rounds = []
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp, smtp_sink() as sink:
        folder = Path(tmp)
        prepared, tokens = prepare(folder, args.in_audience)
        for n in range(args.rounds):
            result = round_trip(folder, prepared, tokens, sink, n)
            print(result, flush=True)
            rounds.append(result)
    section = render(rounds, load_avg)
    print(section)
    if args.write:
        write_docs(section)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
