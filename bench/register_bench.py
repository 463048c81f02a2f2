"""Benchmark of `outreach contacts import exportOO.xml`: a generated register export the size of the real one.

    flock /tmp/bench.lock .venv/bin/python -m bench.register_bench [--runs 3] [--database URL]

Generates an export in the register's structure (tests/register_export.py): the 342 municipalities,
each with a burgemeester, wethouders, raadsleden, fractievoorzitters, a locoburgemeester, a griffier and
functies that are not imported, about 17,000 medewerkers in all, about 40% with an e-mail address; padded
with other bodies (provinces, waterschappen, ministries, with descriptions) to about 38 MB like the real
file. Each step runs in a process of its own, so its peak RSS is its own: the first import into a fresh
database (after `outreach init`), the same file again (a re-sync with nothing to do), a newer export
(a re-sync after an election: a quarter of the raadsleden replaced, parties and addresses changed), and
the first import of the same gemeenten padded to twice the size (memory must not grow with the file).
It prints a ``## Register`` section; docs/performance.md holds the recorded one.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.register_export import Org, Person, write_export  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_RSS_MB = 150
INITIALS = [
    "A.",
    "B.",
    "C.J.",
    "D.",
    "E.M.",
    "F.",
    "G.H.",
    "H.",
    "J.K.",
    "K.",
    "L.",
    "M.A.",
    "N.",
    "P.",
    "R.",
    "S.",
]
PARTICLES = ["", "", "", "van", "de", "van der", "van den", "ter", "in 't"]
SURNAMES = [
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Mulder",
    "Bos",
    "Vos",
    "Peters",
    "Dijkstra",
    "Berg",
]
PARTIES = ["VVD", "CDA", "D66", "GroenLinks-PvdA", "SP", "ChristenUnie", "SGP", "Lokaal Belang", "Geen"]


def _municipalities() -> list[tuple[str, str]]:
    with (REPO / "data" / "gemeenten-2026.csv").open(encoding="utf-8-sig") as fh:
        return [(row["gemeentecode"].lower(), row["gemeentenaam"]) for row in csv.DictReader(fh)]


def _person(rng: random.Random, pid: str, domain: str, *, email_share: float = 0.4) -> Person:
    salutation = rng.choice(["Dhr.", "Mw."])
    particle = rng.choice(PARTICLES)
    surname = f"{rng.choice(SURNAMES)}{rng.randrange(1000)}"
    name = " ".join(p for p in (salutation, rng.choice(INITIALS), particle, surname) if p)
    email = f"{surname.lower()}@{domain}" if rng.random() < email_share else None
    return Person(pid, name, party=rng.choice(PARTIES), start="2022-03-30", email=email)


def _orgs(seed: int, stats: dict[str, int], *, padding_mb: float, election: bool = False) -> Iterator[Org]:
    """The 342 gemeenten (about 17,000 medewerkers) and other bodies of about ``padding_mb`` MB."""
    rng = random.Random(seed)
    later = random.Random(seed + 1)
    for number, (code, name) in enumerate(_municipalities()):
        domain = f"{code}.example.nl"
        base = f"{number + 1:03d}"
        college = [_person(rng, f"{base}1{n:02d}", domain) for n in range(rng.randint(3, 6))]
        raad = [_person(rng, f"{base}2{n:02d}", domain) for n in range(rng.randint(14, 42))]
        if election:
            for index in range(0, len(raad), 4):  # a quarter of the council replaced
                raad[index] = _person(later, f"{base}3{index:02d}", domain)
            for person in raad[1::5]:
                person.party = "Lokaal Belang"
            for person in college[::3]:
                person.email = f"wethouder.{person.id}@{domain}"
        fractie = [Person(f"{base}4{n:02d}", p.name, party=p.party) for n, p in enumerate(raad[:8])]
        burgemeester = [_person(rng, f"{base}001", domain, email_share=0.9)]
        griffier = [_person(rng, f"{base}002", domain, email_share=0.9)]
        others = [_person(rng, f"{base}5{n:02d}", domain) for n in range(6)]
        stats["medewerkers"] += len(college) + len(raad) + len(fractie) + len(others) + 4
        yield Org(
            id=f"9{base}",
            name=f"Gemeente {name}",
            code=code,
            postbus=(str(rng.randint(1, 9999)), f"{rng.randint(1000, 9999)} AB", name.upper()),
            functies=[
                ("Burgemeester", burgemeester),
                ("Wethouder", college),
                ("Locoburgemeester", [Person(f"{base}003", college[0].name)]),
                ("Raadslid", raad),
                ("Fractievoorzitter", fractie),
                ("Raadsgriffier", griffier),
                ("Gemeentesecretaris", others[:1]),
                ("Woo-contactpersoon", others[1:2]),
                ("Contactpersoon inkoop", others[2:]),
            ],
            padding="Gemeente in Nederland. " * 20,
        )
    text = "Een bestuursorgaan met taken in het openbaar bestuur van Nederland, opgericht bij wet. " * 40
    bodies = int(padding_mb * 1e6 / (len(text) + 600))
    kinds = [
        "Provincie",
        "Waterschap",
        "Ministerie",
        "Zelfstandig bestuursorgaan",
        "Gemeenschappelijke regeling",
    ]
    stats["bodies"] = bodies
    for n in range(bodies):
        staff = [Person(f"8{n:06d}", "Dhr. A. Medewerker")]
        yield Org(
            id=f"7{n:06d}",
            name=f"Organisatie {n}",
            type=kinds[n % len(kinds)],
            functies=[("Directeur", staff)],
            padding=text,
        )


def generate(path: Path, *, padding_mb: float = 33.0, election: bool = False) -> dict[str, int]:
    """Write the export; returns how many medewerkers the gemeenten have and how many other bodies."""
    stats = {"medewerkers": 0, "bodies": 0}
    write_export(path, _orgs(7, stats, padding_mb=padding_mb, election=election))
    return stats


def child(step: str, file: Path, url: str) -> None:
    """One step in a process of its own; prints its figures as JSON."""
    from outreach.db import open_database
    from outreach.registry.bootstrap import initialise
    from outreach.registry.register_sync import import_register

    if step == "first":
        initialise(url)
    engine = open_database(url)
    load = os.getloadavg()[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), time.process_time()
    result = import_register(engine, file)
    seconds = time.perf_counter() - started
    engine.dispose()
    print(
        json.dumps(
            {
                "step": step,
                "seconds": round(seconds, 2),
                "cpu": round(time.process_time() - cpu, 2),
                "joined": result.joined,
                "left": result.left,
                "changed": result.changed,
                "unchanged": result.unchanged,
                "without_email": result.without_email,
                "gemeenten": result.gemeenten,
                "passed_over": sum(result.passed_over.values()),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rss_before_mb": round(rss_before / 1024, 1),
                "load": round(load, 1),
            }
        )
    )


def _run(step: str, file: Path, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.register_bench", "--child", step, str(file), url],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(REPO))},
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="fresh SQLite databases; the median run is shown")
    parser.add_argument("--database", help="an empty database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--child", nargs=3, metavar=("STEP", "FILE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.child[2])
        return
    with tempfile.TemporaryDirectory(prefix="outreach-register-bench-") as tmp:
        export = Path(tmp) / "exportOO.xml"
        newer = Path(tmp) / "exportOO-after-election.xml"
        double = Path(tmp) / "exportOO-double.xml"
        stats = generate(export)
        generate(newer, election=True)
        generate(double, padding_mb=71.0)
        sizes = {p.name: round(p.stat().st_size / 1e6, 1) for p in (export, newer, double)}
        runs = []
        for n in range(1 if args.database else args.runs):
            url = args.database or f"sqlite:///{Path(tmp) / f'bench{n}.db'}"
            steps = [_run("first", export, url), _run("again", export, url), _run("election", newer, url)]
            steps.append(_run("first", double, f"sqlite:///{Path(tmp) / f'double{n}.db'}"))
            runs.append(steps)
    runs.sort(key=lambda steps: steps[0]["seconds"])
    median = runs[len(runs) // 2]
    spread = ", ".join(str(steps[0]["seconds"]) for steps in runs)
    labels = [
        f"first import ({sizes['exportOO.xml']} MB)",
        "same file again",
        "newer export (after an election)",
        f"first import, padded to {sizes['exportOO-double.xml']} MB",
    ]
    rows = "\n".join(
        f"| {label} | {s['joined']:,} | {s['left']:,} | {s['changed']:,} | {s['unchanged']:,} | "
        f"**{s['seconds']}** | {s['cpu']} | **{s['peak_rss_mb']}** | {s['load']} |"
        for label, s in zip(labels, median, strict=True)
    )
    first = median[0]
    database = "PostgreSQL on 127.0.0.1" if args.database else "SQLite (WAL, file in /tmp)"
    print(f"""## Register

`bench/register_bench.py` (`flock /tmp/bench.lock .venv/bin/python -m bench.register_bench`): a generated
register export of the 342 municipalities ({first["gemeenten"]} gemeenten matched, {stats["medewerkers"]:,}
medewerkers of gemeenten, padded with {stats["bodies"]:,} other bodies to {sizes["exportOO.xml"]} MB)
into a fresh {database} database, each step in a process of its own. Median of
{len(runs)} run(s) by first-import time (first imports: {spread} s).

| step | joined | left | changed | unchanged | seconds | CPU s | peak RSS MB | load |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

{first["without_email"]:,} of the offices have no e-mail address. Targets: import and re-sync at most
{TARGET_SECONDS:.0f} s, peak RSS at most {TARGET_RSS_MB} MB. "load" is the 1-minute load average when the
step started (the machine is shared). Machine: {platform.machine()}, {platform.python_implementation()}
{platform.python_version()}, {platform.system()}, 2 cores. Measured {time.strftime("%Y-%m-%d")}.
""")
    ok = all(s["seconds"] <= TARGET_SECONDS and s["peak_rss_mb"] <= TARGET_RSS_MB for s in median)
    print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)


if __name__ == "__main__":
    main()
