"""Benchmark of `outreach contacts import`: 100,000 generated rows, rows/s and peak RSS.

    .venv/bin/python -m bench.import_bench [--rows 100000] [--runs 3] [--database URL]

Generates a council list the way staff receive one (Windows-1252, ';', CRLF, Dutch headers, every
municipality, names with tussenvoegsels and accents, a few bad rows), imports it into a fresh database
(SQLite in a temporary folder unless --database is given) after a --dry-run check, then imports it again
(every row unchanged).
The import runs in a child process so its peak RSS is its own, not the generator's.
It prints a ``## Import`` section; docs/performance.md holds the recorded one, with the analysis.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TARGET_ROWS_PER_S = 20_000
TARGET_RSS_MB = 150

FIRST = [
    "Anouk",
    "Daan",
    "Sanne",
    "Thijs",
    "Fleur",
    "Bram",
    "Eva",
    "Joris",
    "Noor",
    "Sem",
    "Renée",
    "Chloë",
    "Joëlle",
    "Hüseyin",
    "Fatima",
    "Mohamed",
    "Geert",
    "Hanneke",
    "Sjoerd",
    "Wietske",
    "Zoë",
    "Koen",
]
PARTICLES = ["", "", "", "van", "de", "van der", "van den", "ter", "in 't", "van de"]
LAST = [
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "Dijkstra",
    "Berg",
    "Dam",
    "Linden",
    "Veen",
    "Horst",
    "Brink",
    "Groot",
    "Koç",
    "El Amrani",
    "Wit",
    "Bruïne",
]
PARTIES = [
    "VVD",
    "D66",
    "CDA",
    "GroenLinks-PvdA",
    "SP",
    "ChristenUnie",
    "PVV",
    "Partij voor de Dieren",
    "Lokaal Belang",
    "Gemeentebelangen",
]
ROLES = ["Raadslid"] * 7 + [
    "Wethouder Jeugd",
    "Wethouder",
    "Burgerraadslid",
    "Fractieassistent",
    "Burgemeester",
]
HEADER = [
    "Voornaam",
    "Tussenvoegsel",
    "Achternaam",
    "Functie",
    "Fractie",
    "E-mail",
    "Gemeente",
    "Gemeentecode",
    "Portefeuille",
]


def generate(path: Path, rows: int, seed: int = 2026) -> None:
    """Write ``rows`` data rows; about 1 in 500 is bad (unknown municipality, invalid e-mail)."""
    sys.path.insert(0, str(REPO))
    from outreach.registry.municipalities import default_reference_file, read_reference

    municipalities = read_reference(default_reference_file())
    rng = random.Random(seed)
    with path.open("w", encoding="cp1252", newline="") as fh:
        writer = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        writer.writerow(HEADER)
        for n in range(rows):
            place = municipalities[n % len(municipalities)]
            first, particle, last = rng.choice(FIRST), rng.choice(PARTICLES), rng.choice(LAST)
            slug = place["gemeentecode"].lower()
            local = f"{first[0]}.{particle.replace(' ', '').replace(chr(39), '')}{last.replace(' ', '')}.{n}"
            email = f"{local.lower()}@{slug}.raad.example.nl".encode("ascii", "ignore").decode()
            name = place["gemeentenaam"] if n % 3 else place["alias"] or place["gemeentenaam"]
            code = place["gemeentecode"] if n % 2 else ""
            if n % 997 == 0:
                name, code = "Atlantis", ""
            if n % 1009 == 0:
                email = email.replace("@", "@@")
            role = rng.choice(ROLES)
            writer.writerow(
                [
                    first,
                    particle,
                    last,
                    role,
                    rng.choice(PARTIES),
                    email,
                    name,
                    code,
                    "Financiën" if role == "Wethouder" else "",
                ]
            )


def child(file: Path, url: str) -> None:
    """Check, import and import again ``file`` into ``url``; print the figures as JSON. Runs in a process of
    its own so that its peak RSS is the importer's."""
    sys.path.insert(0, str(REPO))
    from sqlalchemy import func, select

    from outreach.db import open_database
    from outreach.models import Contact
    from outreach.registry.bootstrap import initialise
    from outreach.registry.importer import import_contacts

    initialise(url)
    engine = open_database(url)
    with engine.connect() as conn:
        if conn.execute(select(func.count()).select_from(Contact)).scalar_one():
            raise SystemExit(f"{url} already holds contacts: give the benchmark an empty database")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures: dict[str, Any] = {}
    for label, dry_run in (("check", True), ("first", False), ("again", False)):
        load = os.getloadavg()[0]
        started, cpu = time.perf_counter(), time.process_time()
        result = import_contacts(
            engine, file, dry_run=dry_run, rejects_path=file.with_suffix(f".{label}.rejects.csv")
        )
        seconds = time.perf_counter() - started
        figures[label] = {
            "rows": result.rows_read,
            "inserted": result.inserted,
            "unchanged": result.unchanged,
            "rejected": result.rejected,
            "seconds": round(seconds, 2),
            "cpu": round(time.process_time() - cpu, 2),
            "rows_per_s": round(result.rows_read / seconds),
            "load": round(load, 1),
        }
    engine.dispose()
    # ru_maxrss is in KiB on Linux
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    figures["rss_before_import_mb"] = round(rss_before / 1024, 1)
    print(json.dumps(figures))


def table_row(label: str, run: dict[str, Any]) -> str:
    cells = [
        label,
        f"{run['rows']:,}",
        f"{run['inserted']:,}",
        f"{run['unchanged']:,}",
        f"{run['rejected']:,}",
    ]
    timing = [str(run["seconds"]), str(run["cpu"]), f"**{run['rows_per_s']:,}**", str(run["load"])]
    return "| " + " | ".join([*cells, *timing]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="fresh SQLite databases; the median run is shown")
    parser.add_argument("--database", help="an empty database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="outreach-bench-") as tmp:
        file = Path(tmp) / "raadsleden.csv"
        generate(file, args.rows)
        size_mb = file.stat().st_size / 1e6
        for n in range(1 if args.database else args.runs):
            url = args.database or f"sqlite:///{Path(tmp) / f'bench{n}.db'}"
            done = subprocess.run(
                [sys.executable, "-m", "bench.import_bench", "--child", str(file), url],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            )
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda r: r["first"]["seconds"])
    figures = runs[len(runs) // 2]
    spread = ", ".join(f"{r['first']['rows_per_s']:,}" for r in runs)
    database = "PostgreSQL 15 on 127.0.0.1" if args.database else "SQLite (WAL, file in /tmp)"
    section = f"""## Import

`bench/import_bench.py` (`.venv/bin/python -m bench.import_bench`): {args.rows:,} generated
rows ({size_mb:.1f} MB, Windows-1252, `;`, CRLF, every municipality by name, alias or code, about 1 in 500
rows bad) into a fresh {database} database: checked with `--dry-run`, imported, imported again. The
median of {len(runs)} run(s) by first-import time (first imports of all runs: {spread} rows/s).

| run | rows | inserted | unchanged | rejected | seconds | CPU s | rows/s | load |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{table_row("check (--dry-run)", figures["check"])}
{table_row("first import", figures["first"])}
{table_row("same file again", figures["again"])}

Peak RSS of the importing process: **{figures["peak_rss_mb"]} MB** ({figures["rss_before_import_mb"]} MB of it
before the first row: Python, SQLAlchemy, the modules). Target: at least {TARGET_ROWS_PER_S:,} rows/s and
under {TARGET_RSS_MB} MB. "load" is the 1-minute load average when the run started: the machine is shared.

Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()},
{platform.system()}, 2 cores. Measured {time.strftime("%Y-%m-%d")}.
"""
    print(section)
    first = figures["first"]
    ok = first["rows_per_s"] >= TARGET_ROWS_PER_S and figures["peak_rss_mb"] < TARGET_RSS_MB
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)


if __name__ == "__main__":
    main()
