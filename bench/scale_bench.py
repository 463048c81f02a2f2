"""Benchmark of issue 6: a million contacts imported and planned, and two senders on one PostgreSQL.

Steps (``--steps``, default all):

- ``plan``: generate ``--contacts`` (1,000,000) contacts as a council list (``bench.import_bench.generate``:
  Windows-1252, ``;``, every municipality, about 1 in 500 rows bad), import them with the registry's
  importer (``import_contacts``, as ``outreach contacts import``) into a fresh SQLite database and into a
  throwaway PostgreSQL database, then plan a campaign that addresses all of them (``plan_deliveries``:
  one ``INSERT ... SELECT`` and a few set-based ``UPDATE`` s; the statements are counted and timed by
  kind), then plan again (nothing new: what every later ``outreach send`` pays). Each database is done in
  a process of its own, so the peak RSS is that of importing and planning.
- ``senders``: ``--deliveries`` (100,000) contacts bulk-inserted into a throwaway PostgreSQL database,
  sent by one ``outreach send`` process, and then (deliveries removed, planned afresh) by two
  ``outreach send`` processes started together, all against one Postfix ``smtp-sink`` on 127.0.0.1.

PostgreSQL: ``--pg`` is a server URL whose user may create databases (default the test server,
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); every database is dropped afterwards.

    .venv/bin/python -m bench.scale_bench [--contacts 1000000] [--deliveries 100000] [--steps plan,senders]

It prints a ``## Scale`` section; docs/performance.md holds the recorded one, with the analysis.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

ALL_ROLES = '["raadslid", "wethouder", "burgemeester", "burgerraadslid", "fractieassistent"]'


def campaign_folder(folder: Path, roles: str) -> Path:
    """A campaign ``bench`` under ``folder/letters`` addressing ``roles``; returns the templates folder."""
    from bench.send_bench import CAMPAIGN_TOML, LETTER

    templates = folder / "letters"
    (templates / "bench").mkdir(parents=True, exist_ok=True)
    toml = CAMPAIGN_TOML.replace('roles = ["raadslid"]', f"roles = {roles}")
    (templates / "bench" / "campaign.toml").write_text(toml, encoding="utf-8")
    (templates / "bench" / "brief.txt.j2").write_text(LETTER, encoding="utf-8")
    return templates


@contextmanager
def throwaway_pg(server: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"outreach_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------------------------ import and plan


def plan_child(file: Path, url: str, templates: Path) -> None:
    """Import ``file`` into ``url`` and plan the campaign twice; print the figures as JSON."""
    from sqlalchemy import event

    from outreach.db import open_database
    from outreach.letters.campaign_file import load_campaign
    from outreach.registry.bootstrap import initialise
    from outreach.registry.importer import import_contacts
    from outreach.sending.plan import plan_deliveries

    initialise(url)
    engine = open_database(url)
    figures: dict[str, Any] = {"load": round(os.getloadavg()[0], 1)}
    started, cpu = time.perf_counter(), time.process_time()
    result = import_contacts(engine, file, rejects_path=file.with_suffix(".rejects.csv"))
    seconds = time.perf_counter() - started
    figures["import"] = {
        "rows": result.rows_read,
        "inserted": result.inserted,
        "rejected": result.rejected,
        "seconds": round(seconds, 1),
        "cpu": round(time.process_time() - cpu, 1),
        "rows_per_s": round(result.rows_read / seconds),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    campaign = load_campaign(templates, "bench")
    statements: list[str] = []
    by_kind: dict[str, float] = {}
    began = [0.0]

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split(None, 1)[0].upper())
        began[0] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        kind = statements[-1]
        by_kind[kind] = by_kind.get(kind, 0.0) + time.perf_counter() - began[0]

    for label in ("plan", "plan_again"):
        statements.clear()
        by_kind.clear()
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        figures[f"{label}_load"] = round(os.getloadavg()[0], 1)
        started, cpu = time.perf_counter(), time.process_time()
        plan = plan_deliveries(engine, campaign)
        seconds = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
        figures[label] = {
            "created": plan.created,
            "skipped": plan.skipped,
            "total": plan.total,
            "seconds": round(seconds, 1),
            "cpu": round(time.process_time() - cpu, 1),
            "statements": len(statements),
            "kinds": sorted(set(statements)),
            # seconds per kind of statement (INSERT: the deliveries and the campaign row; UPDATE: skips)
            "by_kind": {kind: round(sec, 1) for kind, sec in sorted(by_kind.items())},
        }
    figures["rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    engine.dispose()
    print(json.dumps(figures))


def run_plan(args: argparse.Namespace, folder: Path) -> list[tuple[str, dict[str, Any]]]:
    from bench.import_bench import generate

    file = folder / "contacts.csv"
    started = time.perf_counter()
    generate(file, args.contacts)
    print(f"generated {args.contacts:,} rows in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    templates = campaign_folder(folder, ALL_ROLES)
    results: list[tuple[str, dict[str, Any]]] = []
    databases: list[tuple[str, Any]] = [
        ("SQLite (WAL, file in /tmp)", None),
        ("PostgreSQL 15, 127.0.0.1", "pg"),
    ]
    for label, kind in databases:
        with contextmanager_for(kind, args, folder) as url:
            done = subprocess.run(
                [sys.executable, "-m", "bench.scale_bench", "--plan-child", str(file), url, str(templates)],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(label, figures, file=sys.stderr)
        results.append((label, figures))
    return results


@contextmanager
def contextmanager_for(kind: str | None, args: argparse.Namespace, folder: Path) -> Iterator[str]:
    if kind == "pg":
        with throwaway_pg(args.pg) as url:
            yield url
    else:
        yield f"sqlite:///{folder / 'scale.db'}"


# ---------------------------------------------------------------------------------------------- senders


def bulk_contacts(url: str, templates: Path, count: int) -> None:
    """``count`` raadsleden over every municipality, inserted in bulk, and the campaign approved."""
    from bench.send_bench import bulk_contacts as insert_raadsleden

    insert_raadsleden(url, templates, count)


def forget_deliveries(url: str) -> None:
    from sqlalchemy import text

    from outreach.db import open_database

    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM delivery"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE delivery"))
    engine.dispose()


def senders(url: str, templates: Path, port: int, processes: int, concurrency: int) -> dict[str, Any]:
    """``processes`` ``outreach send`` processes started together; wall time until the last is done."""
    from bench.send_bench import send_command, send_env

    env = send_env(url, templates, port)
    cmd = send_command(concurrency)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    running = [
        subprocess.Popen(
            ["/usr/bin/time", "-f", "@@time %M %U %S", *cmd],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = [p.communicate() for p in running]
    wall = time.perf_counter() - started
    figures: dict[str, Any] = {
        "processes": processes,
        "concurrency": concurrency,
        "wall": round(wall, 1),
        "load": round(load, 1),
    }
    sent = cpu = 0.0
    rss: list[int] = []
    for proc, (out, err) in zip(running, outputs, strict=True):
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"outreach send exited {proc.returncode}: {err[-2000:]}")
        found = re.search(r"Sent ([\d,]+)", out)
        sent += int(found.group(1).replace(",", "")) if found else 0
        timing = re.search(r"@@time (\d+) ([\d.]+) ([\d.]+)", err)
        assert timing, err[-500:]
        rss.append(round(int(timing.group(1)) / 1024))
        cpu += float(timing.group(2)) + float(timing.group(3))
    figures.update(sent=int(sent), rate=round(sent / wall), cpu=round(cpu, 1), rss_mb=rss)
    return figures


def run_senders(args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    from bench.send_bench import smtp_sink

    templates = campaign_folder(folder / "senders", '["raadslid"]')
    results: list[dict[str, Any]] = []
    with throwaway_pg(args.pg) as url:
        bulk_contacts(url, templates, args.deliveries)
        concurrencies = [int(c) for c in args.concurrency.split(",")]
        runs = [(1, concurrencies[0]), *((2, c) for c in concurrencies)]
        with smtp_sink() as port:
            for n, (processes, concurrency) in enumerate(runs):
                if n:
                    forget_deliveries(url)
                figures = senders(url, templates, port, processes, concurrency)
                print(figures, file=sys.stderr)
                results.append(figures)
    return results


# ------------------------------------------------------------------------------------------------ report


def render(
    args: argparse.Namespace, plans: list[tuple[str, dict[str, Any]]], sends: list[dict[str, Any]]
) -> str:
    lines = ["## Scale", ""]
    if plans:
        lines += [
            f"`bench/scale_bench.py`: {args.contacts:,} generated contacts (`bench.import_bench.generate`) "
            "imported with the registry's importer, then a campaign addressing all of them planned, then "
            "planned again (nothing new: what every later `outreach send` pays). One process per database; "
            "RSS is its peak over import and planning.",
            "",
            "| database | import rows | inserted | import s | rows/s | plan: deliveries | skipped | plan s | "
            "of which INSERT, UPDATE s | statements | plan again s | peak RSS MB | load (import, plan) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
        ]
        for label, f in plans:
            i, p, q = f["import"], f["plan"], f["plan_again"]
            kinds = p.get("by_kind", {})
            lines.append(
                f"| {label} | {i['rows']:,} | {i['inserted']:,} | {i['seconds']} | {i['rows_per_s']:,} | "
                f"{p['created']:,} | {p['skipped']:,} | **{p['seconds']}** | "
                f"{kinds.get('INSERT', '-')}, {kinds.get('UPDATE', '-')} | {p['statements']} "
                f"({', '.join(p['kinds'])}) | {q['seconds']} | {f['rss_mb']} | "
                f"{f['load']}, {f['plan_load']} |"
            )
        lines.append("")
    if sends:
        lines += [
            f"Senders: {args.deliveries:,} deliveries on PostgreSQL, `outreach send --concurrency K` "
            "against one `smtp-sink` on 127.0.0.1; letters/s is all letters over the wall time from "
            "starting the processes until the last one exits (start-up and planning included).",
            "",
            "| processes | K | letters | wall s | letters/s | CPU s (all) | peak RSS MB (each) | load |",
            "|---:|---:|---:|---:|---:|---:|---|---:|",
        ]
        for f in sends:
            lines.append(
                f"| {f['processes']} | {f['concurrency']} | {f['sent']:,} | {f['wall']} | **{f['rate']:,}** "
                f"| {f['cpu']} | "
                f"{', '.join(str(r) for r in f['rss_mb'])} | {f['load']} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument(
        "--concurrency", default="8,32", help="SMTP connections per sender; more values: more two-sender runs"
    )
    parser.add_argument("--steps", default="plan,senders")
    parser.add_argument("--pg", default=os.environ.get("OUTREACH_BENCH_PG", PG_DEFAULT))
    parser.add_argument("--plan-child", nargs=3, metavar=("FILE", "URL", "TEMPLATES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.plan_child:
        file, url, templates = args.plan_child
        plan_child(Path(file), url, Path(templates))
        return
    steps = set(args.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="outreach-scale-bench-") as tmp:
        folder = Path(tmp)
        plans = run_plan(args, folder) if "plan" in steps else []
        sends = run_senders(args, folder) if "senders" in steps else []
    print(render(args, plans, sends))
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M')}"
    )


if __name__ == "__main__":
    main()
