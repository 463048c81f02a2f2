"""Benchmark of `outreach report`: a generated campaign of 10,000 deliveries with their responses.

    .venv/bin/python -m bench.report_bench [--deliveries 10000] [--postgres ADMIN_URL] [--write-docs]

Builds a fresh SQLite database in a temporary folder: the 342
municipalities, one contact per delivery spread over every municipality, roles and parties, the
deliveries in the states a finished campaign leaves (sent, failed, skipped) and about 2,900 events
(replies, some answered twice, automatic replies, hard and soft bounces, opt-outs, notes) plus a second
campaign of the same size whose rows the report must skip. Then times the report: totals, each
``--by`` grouping, and the whole ``--json`` document as the CLI builds it (coverage included). Each
figure is the median of 7 runs after one warm-up.
With --postgres the same runs on PostgreSQL too. With --write-docs the figures replace the
``## Reports`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "performance.md"
RUNS = 7
PARTIES = ["VVD", "D66", "CDA", "GroenLinks-PvdA", "SP", "ChristenUnie", "PVV", "Lokaal Belang", None]
ROLES = ["raadslid"] * 7 + ["wethouder", "wethouder", "burgemeester", "griffie"]


def build(url: str, deliveries: int, seed: int = 2026) -> None:
    sys.path.insert(0, str(REPO))
    from sqlalchemy import insert, select
    from sqlmodel import SQLModel

    from outreach.db import open_database
    from outreach.letters.ids import message_id, new_token
    from outreach.models import utcnow
    from outreach.registry.keys import email_hash, office_key
    from outreach.registry.municipalities import load_municipalities

    tables = SQLModel.metadata.tables
    rng = random.Random(seed)
    engine = open_database(url)
    load_municipalities(engine)
    now = utcnow()
    with engine.begin() as conn:
        munis = list(conn.execute(select(tables["municipality"].c.id, tables["municipality"].c.cbs_code)))
        campaign_ids = [
            conn.execute(
                insert(tables["campaign"])
                .values(slug=slug, name=slug, created_at=now)
                .returning(tables["campaign"].c.id)
            ).scalar_one()
            for slug in ("bench-2026", "other-2026")
        ]
        contacts = []
        for n in range(deliveries):
            muni_id, code = munis[n % len(munis)]
            role = rng.choice(ROLES)
            key = f"persoon.{n}@{code.lower()}.example.nl"
            contacts.append(
                {
                    "municipality_id": muni_id,
                    "role": role,
                    "party": rng.choice(PARTIES) if role == "raadslid" else None,
                    "email": key,
                    "email_normalized": key,
                    "email_key": key,
                    "email_hash": email_hash(key),
                    "office_key": office_key(key, code, role),
                    "sort_name": f"persoon {n}",
                    "source": "bench",
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
        conn.execute(insert(tables["contact"]), contacts)
        contact_ids = list(
            conn.execute(select(tables["contact"].c.id).order_by(tables["contact"].c.id)).scalars()
        )
        rows = []
        for campaign_id in campaign_ids:
            for contact_id in contact_ids:
                state = rng.choices(["sent", "failed", "skipped"], weights=[93, 4, 3])[0]
                token = new_token()
                rows.append(
                    {
                        "campaign_id": campaign_id,
                        "contact_id": contact_id,
                        "state": state,
                        "token": token if state != "skipped" else None,
                        "message_id": message_id(token, "hetvergetenkind.nl") if state != "skipped" else None,
                        "attempts": 1,
                        "sent_at": now
                        if state == "sent" or (state == "failed" and rng.random() < 0.5)
                        else None,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
        conn.execute(insert(tables["delivery"]), rows)
        delivery = tables["delivery"]
        sent = list(
            conn.execute(
                select(delivery.c.id, delivery.c.campaign_id, delivery.c.contact_id).where(
                    delivery.c.sent_at.is_not(None)
                )
            )
        )
        events = []
        for delivery_id, campaign_id, contact_id in sent:
            for kind, share in (
                ("reply", 0.14),
                ("reply", 0.02),
                ("auto-reply", 0.08),
                ("bounce", 0.03),
                ("opt-out", 0.01),
                ("note", 0.01),
            ):
                if rng.random() < share:
                    events.append(
                        {
                            "kind": kind,
                            "contact_id": contact_id,
                            "delivery_id": delivery_id,
                            "campaign_id": campaign_id,
                            "occurred_at": now,
                            "recorded_at": now,
                            "source": "imap",
                            "bounce_type": rng.choice(["hard", "soft"]) if kind == "bounce" else None,
                            "text": "Dank voor uw brief" if kind == "reply" else None,
                        }
                    )
        conn.execute(insert(tables["event"]), events)
    engine.dispose()


def timed(fn: Callable[[], Any]) -> float:
    fn()
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def write_docs(section: str) -> None:
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Performance\n"
    start = text.find("\n## Reports\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end != -1 else "")
    DOC.write_text(text.rstrip("\n") + "\n", encoding="utf-8")


def measure(url: str, deliveries: int) -> dict[str, Any]:
    """Build the database at ``url`` and time the reports on it."""
    from sqlalchemy import func, select
    from sqlmodel import SQLModel

    from outreach.db import open_database
    from outreach.tracking.report import campaign_report

    started = time.perf_counter()
    build(url, deliveries)
    built = time.perf_counter() - started
    engine = open_database(url)
    with engine.connect() as conn:
        events = conn.execute(
            select(func.count()).select_from(SQLModel.metadata.tables["event"])
        ).scalar_one()

    def report(by: str | None = None, as_json: bool = False) -> Callable[[], Any]:
        def run() -> Any:
            result = campaign_report(engine, "bench-2026", by=by)
            return json.dumps(result.as_json(), default=str) if as_json else result

        return run

    figures = {"totals": timed(report())}
    for by in ("role", "party", "province", "municipality"):
        figures[f"--by {by}"] = timed(report(by))
    figures["--by municipality --json"] = timed(report("municipality", as_json=True))
    totals = campaign_report(engine, "bench-2026").totals
    engine.dispose()
    return {"figures": figures, "totals": totals, "events": events, "built": built}


def postgres_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh database next to ``admin_url`` and a function that drops it."""
    from sqlalchemy import create_engine, text

    name = f"outreach_bench_{int(time.time())}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument(
        "--postgres",
        metavar="ADMIN_URL",
        help="also run on PostgreSQL, in a database created next to this one and dropped after "
        "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)",
    )
    parser.add_argument("--write-docs", action="store_true", help="record the figures in docs/performance.md")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="outreach-bench-") as tmp:
        runs["SQLite"] = measure(f"sqlite:///{Path(tmp) / 'report.db'}", args.deliveries)
    if args.postgres:
        url, drop = postgres_database(args.postgres)
        try:
            runs["PostgreSQL"] = measure(url, args.deliveries)
        finally:
            drop()
    sqlite = runs["SQLite"]
    machine = f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}"
    names = list(runs)
    header = "| report | " + " | ".join(f"{n} ms" for n in names) + " |"
    rule = "|---|" + "---:|" * len(names)
    lines = [
        f"| `outreach report --campaign bench-2026 {label}` | "
        + " | ".join(f"{runs[n]['figures'][label]:.0f}" for n in names)
        + " |"
        for label in sqlite["figures"]
    ]
    table = "\n".join([header, rule, *lines]).replace(" bench-2026 totals`", " bench-2026`")
    totals = sqlite["totals"]
    built = ", ".join(f"{n} {runs[n]['built']:.1f} s" for n in names)
    section = f"""## Reports

`bench/report_bench.py` (`.venv/bin/python -m bench.report_bench --postgres URL --write-docs`): a generated
campaign of {args.deliveries:,} deliveries (every municipality, roles and parties, 93% sent, 4% failed, 3%
skipped) and a second campaign of the same size in the same tables, {sqlite["events"]:,} events over the two
({machine}; databases built in {built}). The report function as the CLI calls it, median of {RUNS} runs
after a warm-up, in milliseconds: one GROUP BY over the deliveries joined to their events folded per
delivery, plus one NOT EXISTS query for coverage (342 municipalities).

{table}

Target: well under a second. Numbers of the run, as a check: {totals.letters:,} letters, {totals.sent:,} sent,
{totals.failed:,} failed, {totals.replied:,} replied, {totals.auto_replied:,} automatic replies,
{totals.bounced:,} bounced, {totals.opted_out:,} opted out, response rate {totals.response_rate:.1%}.
"""
    print(section)
    if args.write_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
