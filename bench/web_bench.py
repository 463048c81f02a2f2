"""Benchmark of `outreach serve` (issue 15): one-click unsubscribes while a send runs on the same SQLite.

Each round prepares a fresh copy of one SQLite database: 10,000 raadsleden in campaign ``bench`` and
2,000 wethouders (outside its audience, so that both sends have the same 10,000 letters) who received
an earlier letter (campaign ``eerder``) whose unsubscribe token they use. Then:

- **baseline**: ``outreach send`` of the 10,000 letters to Postfix's ``smtp-sink`` on 127.0.0.1;
- **loaded**: the same send, and as soon as its first letters are out, 2,000 RFC 8058 one-click POSTs
  from 50 concurrent clients (keep-alive connections; each client its own X-Forwarded-For address, as
  behind a trusted proxy) to ``outreach serve`` (the real command, a process of its own) on the same
  database file.

The sends alone and the loaded ones are interleaved (alone, loaded, alone, loaded, ..., alone) and each
loaded send is compared with the mean of the two alone on either side of it: on this shared machine two
sends alone minutes apart differ by up to a factor of 2.8, neighbours much less. Reported per loaded
round: requests/s over the 2,000, latency p50/p99/max, errors (anything but 200), every opt-out recorded
exactly once (events and suppressions), the send's letters/s beside its neighbours' and the change, the
send's own CPU seconds alone and loaded (GNU time: a figure the other engineers' load hardly moves), and
the CPU seconds of `outreach serve` and of the load generator during the load; then the median of the
per-round changes. ``--baseline DIR`` runs every other loaded round's server from another checkout (the
previous commit, on PYTHONPATH), so that before and after are measured in the same run. The load
generator is a minimal asyncio HTTP/1.1 client (not httpx) so that it takes as little CPU as it can::

    flock /tmp/bench.lock .venv/bin/python bench/web_bench.py [--rounds 8] [--baseline DIR] [--in-audience]
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import uvloop

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
REQUESTS = OPT_OUTS  # --requests: fewer POSTs (the control: a server beside the send, hardly any load)
SEND_FROM = ""  # --send-from: every send of the run from another checkout (on PYTHONPATH)
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


async def _load(port: int, tokens: list[str]) -> LoadResult:
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


def load(port: int, tokens: list[str]) -> LoadResult:
    """The 2,000 POSTs from 50 clients, on uvloop (the server's own loop; less CPU than asyncio's)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_load(port, tokens))


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


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass
class Send:
    wall: float  # the whole `outreach send`, planning included
    cpu: float  # its user + system CPU seconds (GNU time): what the send did, whatever else ran

    @property
    def rate(self) -> float:
        return LETTERS / self.wall


def run_send(folder: Path, db: Path, sink: int) -> Send:
    """``outreach send`` of campaign ``bench``: this checkout's code (or ``--send-from``'s), whatever
    serves the web."""
    env = send_env(f"sqlite:///{db}", folder / "letters", sink)
    env.pop("PYTHONPATH", None)
    if SEND_FROM:
        env["PYTHONPATH"] = SEND_FROM
    wall, cpu, _rss, _out = timed(send_command(8), env=env)
    return Send(wall, cpu)


_T = TypeVar("_T")


def send_beside(folder: Path, db: Path, sink: int, beside: Callable[[], _T]) -> tuple[Send, _T]:
    """``outreach send`` of ``db``, and ``beside()`` once its first letters are out. The sends alone
    (``beside`` does nothing) wait for those letters the same way, so that every send runs beside the
    same polling of the database."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        sending = pool.submit(run_send, folder, db, sink)
        deadline = time.monotonic() + 60
        while sent_count(db) == 0 and time.monotonic() < deadline and not sending.done():
            time.sleep(0.01)
        during = beside()
        return sending.result(), during


def remove(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


def alone(folder: Path, prepared: Path, sink: int, n: int) -> Send:
    """The send without the load."""
    db = folder / f"alone-{n}.db"
    shutil.copy(prepared, db)
    try:
        return send_beside(folder, db, sink, lambda: None)[0]
    finally:
        remove(db)


def loaded(
    folder: Path, prepared: Path, tokens: list[str], sink: int, n: int, pythonpath: str | None
) -> dict[str, Any]:
    """The send while `outreach serve` (from ``pythonpath`` when given: another checkout) answers the
    2,000 one-click POSTs, which start once the send's first letters are out."""
    db = folder / f"loaded-{n}.db"
    shutil.copy(prepared, db)
    port = free_port()
    served = db
    if SEPARATE_DB:  # the diagnostic: the same CPU load, but no shared database
        served = folder / f"served-{n}.db"
        shutil.copy(prepared, served)
    env = send_env(f"sqlite:///{served}", folder / "letters", sink)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["OUTREACH_WEB_TRUSTED_PROXIES"] = "127.0.0.1"
    env["OUTREACH_WEB_BASE_URL"] = "https://post.example.nl"
    log = (folder / f"serve-{n}.log").open("w")
    nice = ["nice", "-n", str(NICE)] if NICE else []
    server = subprocess.Popen(
        [*nice, str(VENV_BIN / "outreach"), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_port(port, 20)

        def the_load() -> tuple[LoadResult, float, float, float, float]:
            began = time.monotonic()
            cpu_before, own_before = cpu_seconds(server.pid), time.process_time()
            result = load(port, tokens[:REQUESTS])
            server_cpu, load_cpu = cpu_seconds(server.pid) - cpu_before, time.process_time() - own_before
            return result, server_cpu, load_cpu, began, time.monotonic()

        send, (result, server_cpu, load_cpu, began, load_end) = send_beside(folder, db, sink, the_load)
        send_end = time.monotonic()
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    counts = recorded(served)
    remove(db)
    if served != db:
        remove(served)
    return {
        "send": send,
        "rate": result.rate,
        "p50": result.percentile(50) * 1000,
        "p99": result.percentile(99) * 1000,
        "max": max(result.latencies) * 1000,
        "errors": result.errors,
        "requests": len(result.latencies),
        "overlap": min(load_end, send_end) - began,
        "server_cpu": server_cpu,
        "load_cpu": load_cpu,
        **counts,
    }


def serve_only(folder: Path, prepared: Path, tokens: list[str], n: int, pythonpath: str | None) -> float:
    """CPU milliseconds of `outreach serve` per one-click POST: the 2,000 POSTs without a send."""
    db = folder / f"serve-only-{n}.db"
    shutil.copy(prepared, db)
    env = send_env(f"sqlite:///{db}", folder / "letters", 25)
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env["OUTREACH_WEB_TRUSTED_PROXIES"] = "127.0.0.1"
    env["OUTREACH_WEB_BASE_URL"] = "https://post.example.nl"
    port = free_port()
    log = (folder / f"serve-only-{n}.log").open("w")
    server = subprocess.Popen(
        [str(VENV_BIN / "outreach"), "serve", "--port", str(port)], env=env, stdout=log, stderr=log
    )
    try:
        wait_port(port, 20)
        before = cpu_seconds(server.pid)
        result = load(port, tokens)
        cpu = cpu_seconds(server.pid) - before
    finally:
        server.terminate()
        server.wait(20)
        log.close()
    counts = recorded(db)
    remove(db)
    assert result.errors == 0 and counts["events"] == counts["suppressions"] == len(tokens), counts
    return cpu / len(tokens) * 1000


def run_rounds(
    folder: Path, prepared: Path, tokens: list[str], sink: int, rounds: int, baseline: str | None
) -> tuple[list[Send], list[dict[str, Any]]]:
    """Sends alone and loaded, interleaved: alone, loaded, alone, loaded, ..., alone. Each loaded send
    is compared with the two sends alone on either side of it (the machine as it was just then). With
    ``baseline`` the loaded rounds alternate between that checkout's server and this one's."""
    sends = [alone(folder, prepared, sink, 0)]
    results = []
    for n in range(1, rounds + 1):
        variant = baseline if baseline and n % 2 == 0 else None
        result = loaded(folder, prepared, tokens, sink, n, variant)
        result["code"] = "baseline" if variant else "this"
        result["load_average"] = load_average()
        sends.append(alone(folder, prepared, sink, n))
        before, after = sends[-2], sends[-1]
        result["alone"] = (before, after)
        result["ratio"] = result["send"].rate / statistics.mean((before.rate, after.rate))
        result["cpu_ratio"] = result["send"].cpu / statistics.mean((before.cpu, after.cpu))
        print({k: v for k, v in result.items()}, flush=True)
        results.append(result)
    return sends, results


def render(results: list[dict[str, Any]], load_start: float, load_end: float) -> str:
    lines = [
        f"{OPT_OUTS:,} one-click POSTs from {CLIENTS} clients while `outreach send` sends {LETTERS:,}"
        f" letters; load average {load_start:.1f} at the start, {load_end:.1f} at the end (2 cores).",
        "",
        "| round | serve | requests/s | p50 ms | p99 ms | max ms | errors | events / letters / suppressions |"
        " send letters/s: alone before / loaded / alone after | change | send CPU s: alone / loaded |"
        " CPU s: serve / load generator | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(results, 1):
        before, after = r["alone"]
        lines.append(
            f"| {n} | {r['code']} | {r['rate']:,.0f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | "
            f"{r['errors']} | {r['events']:,} / {r['letters']:,} / {r['suppressions']:,} | "
            f"{before.rate:,.0f} / {r['send'].rate:,.0f} / {after.rate:,.0f} | "
            f"{(r['ratio'] - 1) * 100:+.1f}% | "
            f"{statistics.mean((before.cpu, after.cpu)):.2f} / {r['send'].cpu:.2f} | "
            f"{r['server_cpu']:.2f} / {r['load_cpu']:.2f} | {r['load_average']:.1f} |"
        )
    for code in ("this", "baseline"):
        mine = [r for r in results if r["code"] == code]
        if not mine:
            continue
        ratios = [r["ratio"] for r in mine]
        median = {key: statistics.median(r[key] for r in mine) for key in ("rate", "p50", "p99", "max")}
        cpu = {
            key: statistics.median(r[key] for r in mine) for key in ("server_cpu", "load_cpu", "cpu_ratio")
        }
        lines.append(
            f"| median ({code}, {len(mine)}) | | {median['rate']:,.0f} | {median['p50']:.1f} | "
            f"{median['p99']:.1f} | {median['max']:.1f} | {sum(r['errors'] for r in mine)} | | | "
            f"{(statistics.median(ratios) - 1) * 100:+.1f}% (rounds {min(ratios) - 1:+.0%} to "
            f"{max(ratios) - 1:+.0%}) | {(cpu['cpu_ratio'] - 1) * 100:+.1f}% | "
            f"{cpu['server_cpu']:.2f} / {cpu['load_cpu']:.2f} | |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=4, help="loaded sends (each between two alone)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout (the previous commit): every other loaded round's server runs its code",
    )
    parser.add_argument(
        "--serve-only",
        action="store_true",
        help="only the CPU of `outreach serve` per POST, without a send (with --baseline: alternating)",
    )
    parser.add_argument(
        "--in-audience",
        action="store_true",
        help="the 2,000 who unsubscribe are recipients of the running send (their letters are skipped)",
    )
    parser.add_argument("--nice", type=int, default=0, help="run `outreach serve` under nice -n N")
    parser.add_argument(
        "--separate-db", action="store_true", help="the web server uses a copy of the database (diagnostic)"
    )
    parser.add_argument(
        "--send-from",
        metavar="DIR",
        default="",
        help="every `outreach send` of this run from another checkout (the previous commit's sender)",
    )
    parser.add_argument(
        "--requests", type=int, default=OPT_OUTS, help="POSTs per loaded send (the control: 50, one a client)"
    )
    args = parser.parse_args()
    global NICE, SEPARATE_DB, SEND_FROM, REQUESTS
    NICE, SEPARATE_DB, SEND_FROM, REQUESTS = args.nice, args.separate_db, args.send_from, args.requests
    with tempfile.TemporaryDirectory(prefix="web-bench-") as tmp, smtp_sink() as sink:
        folder = Path(tmp)
        prepared, tokens = prepare(folder, args.in_audience)
        load_start = load_average()
        if args.serve_only:
            for n in range(args.rounds):
                for code, path in (("this", None), (args.baseline, args.baseline)):
                    if code is not None:
                        ms = serve_only(folder, prepared, tokens, n, path)
                        print(
                            f"{code}: {ms:.3f} ms CPU per POST (load average {load_average():.1f})",
                            flush=True,
                        )
            print(f"load average {load_start:.1f} at the start, {load_average():.1f} at the end")
            return
        _sends, results = run_rounds(folder, prepared, tokens, sink, args.rounds, args.baseline)
        load_end = load_average()
    print(render(results, load_start, load_end))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
