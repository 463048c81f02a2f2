"""Benchmark of letters: `outreach check` for 12,000 recipients and the compose rate of the sender.

    .venv/bin/python -m bench.letters_bench [--recipients 12000] [--database URL] [--write-docs]

Fills a fresh database (SQLite in a temporary folder unless --database is given) with the 342
municipalities, one griffie each and ``--recipients`` raadsleden spread over them (names with
tussenvoegsels and accents, a third with an aanspreekvorm, most with a party), then measures:

* ``check``: the whole of ``check_campaign`` for campaign 2026 (audience query, recipient snapshot,
  rendering and composing every letter with its PDF and Cc), as `outreach check` runs it;
* compose rate: ``LetterComposer.compose`` alone over the loaded recipients, as the sender calls it;
* for comparison, the same letters built with ``EmailMessage`` and serialised by its generator.

With --write-docs the figures replace the ``## Letters`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import email.policy
import os
import platform
import random
import re
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "performance.md"

FIRST = ["Anouk", "Daan", "Sanne", "Thijs", "Fleur", "Bram", "Renée", "Chloë", "Hüseyin", "Fatima", "Sjoerd"]
PARTICLES = ["", "", "", "van", "de", "van der", "van den", "ter", "in 't"]
LAST = [
    "Jansen",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "Mulder",
    "Bos",
    "Koç",
    "El Amrani",
    "Bruïne",
    "Dijkstra",
]
PARTIES = ["VVD", "D66", "CDA", "GroenLinks-PvdA", "SP", "ChristenUnie", "PVV", "Lokaal Belang", None]


def populate(url: str, recipients: int, seed: int = 2026) -> None:
    from sqlalchemy import insert

    from outreach.db import open_database
    from outreach.letters.recipients import table
    from outreach.models import Contact, Municipality, utcnow
    from outreach.registry.keys import email_hash, email_key, office_key, sort_name
    from outreach.registry.municipalities import load_municipalities

    engine = open_database(url)
    load_municipalities(engine)
    rng = random.Random(seed)
    with engine.begin() as conn:
        places = [dict(m) for m in conn.execute(table(Municipality).select()).mappings()]
        now = utcnow()
        rows = []

        def row(address: str, place: dict[str, object], role: str, **fields: object) -> dict[str, object]:
            key = email_key(address)
            return {
                "municipality_id": place["id"],
                "role": role,
                "email": address,
                "email_normalized": address,
                "email_key": key,
                "email_hash": email_hash(key),
                "office_key": office_key(key, str(place["cbs_code"]), role),
                "sort_name": sort_name(
                    str(fields.get("achternaam") or ""), str(fields.get("tussenvoegsel") or "")
                ),
                "source": "bench",
                "imported_at": now,
                "updated_at": now,
                "active": True,
                "portfolio": None,
                "party": None,
                "title": None,
                "voorletters": None,
                "voornaam": None,
                "tussenvoegsel": None,
                "achternaam": None,
                "aanspreekvorm": None,
                "term_end": None,
                "opted_in_at": None,
                "opt_in_topics": None,
            } | fields

        for place in places:
            rows.append(row(f"griffie@{str(place['cbs_code']).lower()}.example.nl", place, "griffie"))
        for n in range(recipients):
            place = places[n % len(places)]
            rows.append(
                row(
                    f"raadslid.{n}@{str(place['cbs_code']).lower()}.example.nl",
                    place,
                    "raadslid",
                    voornaam=rng.choice(FIRST),
                    tussenvoegsel=rng.choice(PARTICLES) or None,
                    achternaam=rng.choice(LAST),
                    aanspreekvorm=rng.choice(["mevrouw", "heer", None]),
                    party=rng.choice(PARTIES),
                )
            )
        conn.execute(insert(table(Contact)), rows)
    engine.dispose()


def email_message_baseline(letters: list[object], campaign: object) -> float:
    """Seconds to build and serialise the same letters with EmailMessage (what compose avoids)."""
    from outreach.letters.compose import ComposedLetter

    start = time.perf_counter()
    for item in letters:
        assert isinstance(item, ComposedLetter)
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["From"] = "Het Vergeten Kind <wereldvanaandacht@hetvergetenkind.nl>"
        msg["To"] = f"{item.recipient.name} <{item.recipient.email}>"
        msg["Subject"] = item.subject
        msg["Message-ID"] = item.message_id
        msg.set_content(item.text)
        if item.html is not None:
            msg.add_alternative(item.html, subtype="html")
        for path in getattr(campaign, "attachments", ()):
            msg.add_attachment(path.read_bytes(), maintype="application", subtype="pdf", filename=path.name)
        msg.as_bytes()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=12_000)
    parser.add_argument("--database", help="database URL (default: SQLite in a temporary folder)")
    parser.add_argument("--baseline", type=int, default=1_000, help="letters for the EmailMessage comparison")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    from outreach.db import open_database
    from outreach.letters.campaign_file import load_campaign
    from outreach.letters.compose import LetterComposer
    from outreach.letters.ids import new_token
    from outreach.letters.recipients import load_recipients
    from outreach.letters.review import check_campaign
    from outreach.models import utcnow
    from outreach.registry.audience import audience_contact_ids

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{tmp}/bench.db"
        populate(url, args.recipients)
        engine = open_database(url)
        campaign = load_campaign(REPO / "templates" / "letters", "2026")

        start, cpu = time.perf_counter(), time.process_time()
        report = check_campaign(engine, campaign)
        check_s, check_cpu = time.perf_counter() - start, time.process_time() - cpu
        assert report.ok and report.rendered == args.recipients, report

        start = time.perf_counter()
        with engine.connect() as conn:
            recipients = list(load_recipients(conn, audience_contact_ids(campaign)).values())
        load_s = time.perf_counter() - start

        composer = LetterComposer(campaign)
        tokens = [new_token() for _ in recipients]
        now = utcnow()
        start, cpu = time.perf_counter(), time.process_time()
        letters = [composer.compose(r, token=t, now=now) for r, t in zip(recipients, tokens, strict=True)]
        compose_s, compose_cpu = time.perf_counter() - start, time.process_time() - cpu
        size = sum(len(letter.as_bytes()) for letter in letters) / len(letters)

        sample = letters[: args.baseline]
        baseline_s = email_message_baseline(list(sample), campaign)
        engine.dispose()

    rate = len(letters) / compose_s
    cpu_rate = len(letters) / compose_cpu
    load = os.getloadavg()[0]
    baseline_rate = len(sample) / baseline_s
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()},"
        f" {'SQLite' if url.startswith('sqlite') else 'PostgreSQL'}, `python -m bench.letters_bench`"
        f" (`--recipients {args.recipients}`); load average {load:.1f} on {os.cpu_count()} cores, so"
        " the CPU time of the process is given beside the wall time.",
        "",
        "| what | figure |",
        "|---|---|",
        f"| `outreach check --campaign 2026`, {args.recipients:,} raadsleden (render + compose every letter,"
        f" text + HTML + 3 kB PDF, Cc griffie) | **{check_s:.2f} s** wall, {check_cpu:.2f} s CPU |",
        f"| loading the {len(recipients):,} recipients (one query) | {load_s:.2f} s |",
        f"| `LetterComposer.compose` | **{rate:,.0f} letters/s** wall, {cpu_rate:,.0f}/s per CPU second"
        f" ({1e6 / cpu_rate:.0f} µs CPU each, {size / 1024:.1f} kB per message) |",
        f"| the same letters via `EmailMessage` + generator, for comparison | {baseline_rate:,.0f}"
        " letters/s |",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        write_docs(text)


def write_docs(body: str) -> None:
    section = f"## Letters\n\n{body}\n"
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else "# Performance\n"
    pattern = re.compile(r"^## Letters\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _m: section + "\n", current).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + section
    DOC.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
