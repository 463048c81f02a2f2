"""Benchmark of the PDF letters (issue 14): laying out 12,000 letters, and `outreach send` of a PDF campaign.

Scenarios:

- **layout**: the shipped ``wethouders-jeugd`` letter for ``--count`` recipients (names, functions and
  municipalities varied, postal addresses set) laid out by ``prepare_pdfs`` into an empty store, with one
  process per core (the target: 12,000 in at most 7 minutes, 30 letters/s, on the 2-core machine); and
  per letter in one process (``--sample`` letters), which is what the library comparison uses;
- **fpdf2**: the same letters (the text of the same template) laid out with fpdf2 in one process;
- **send**: ``outreach send`` of ``--send-count`` letters of the PDF campaign to Postfix's smtp-sink on
  127.0.0.1: once with an empty PDF store (the letters are laid out first, then sent), once more on a
  fresh copy of the database with the store filled (what a send after ``approve`` on the same day does).
  The send phase's rate is the sender's own "letters/s" figure.

Run under the benchmark lock (the machine is shared)::

    flock /tmp/bench.lock .venv/bin/python bench/pdf_bench.py [--count 12000] [--send-count 3000] [--write]

``--write`` replaces the ``<!-- pdf-bench -->`` block of docs/performance.md with the results.

``--baseline DIR`` (a worktree of the previous commit) measures the CPU time of a letter in one process
for that checkout and this one, in ``--pairs`` interleaved pairs of processes: on this shared machine
the CPU time a letter takes is the figure the others' load changes least, and interleaving spreads
what it does change over both.
"""

from __future__ import annotations

import argparse
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.send_bench import VENV_BIN, smtp_sink, timed

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates" / "letters"
DATE = datetime(2026, 12, 1, 9, 0)
FIRST = ("Anna", "Jan", "Fatima", "Pieter", "Sanne", "Mohammed", "Els", "Willem", "Noor", "Bram")
LAST = (
    ("", "Jansen"),
    ("de", "Vries"),
    ("van", "Dijk"),
    ("", "Bakker"),
    ("van der", "Berg"),
    ("", "El Amrani"),
    ("de", "Graaf-Hoogendoorn"),
    ("", "Visser"),
    ("'t", "Hart"),
    ("van den", "Heuvel"),
)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def recipients(count: int) -> list[Any]:
    """``count`` wethouders over the 342 municipalities, as the registry would give them."""
    import csv

    from outreach.letters.recipients import Recipient, postal_lines

    with (REPO / "data" / "gemeenten-2026.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    name_key = next(k for k in rows[0] if "naam" in k.lower() or "name" in k.lower())
    out = []
    for n in range(count):
        muni = rows[n % len(rows)][name_key]
        particle, last = LAST[n % len(LAST)]
        out.append(
            Recipient(
                contact_id=n + 1,
                role="wethouder",
                email=f"wethouder{n}@example.nl",
                voorletters=f"{FIRST[n % len(FIRST)][0]}.",
                tussenvoegsel=particle or None,
                achternaam=last,
                aanspreekvorm=("mevrouw", "heer", None)[n % 3],
                portfolio=("Jeugd, Onderwijs en Zorg", "Jeugd", "Sociaal domein en jeugd")[n % 3],
                municipality_id=n % len(rows) + 1,
                municipality=muni,
                postal=postal_lines(f"Postbus {1000 + n % 9000}", f"{1000 + n % 8999} AB", muni),
            )
        )
    return out


def layout(count: int, workers: int | None) -> dict[str, Any]:
    from outreach.letters.campaign_file import load_campaign
    from outreach.letters.pdf_letters import LetterJob, prepare_pdfs
    from outreach.letters.pdf_store import PdfStore

    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    jobs = [LetterJob(r, f"HVK/2026/0001/{r.contact_id:04d}") for r in recipients(count)]
    with tempfile.TemporaryDirectory(prefix="pdf-bench-") as folder:
        store = PdfStore(Path(folder))
        before = os.times()
        start = time.perf_counter()
        report = prepare_pdfs(campaign, jobs, now=DATE, store=store, workers=workers)
        elapsed = time.perf_counter() - start
        after = os.times()
        sizes = [p.stat().st_size for p in Path(folder).glob("*/*.pdf")]
    cpu = (after.user + after.system + after.children_user + after.children_system) - (
        before.user + before.system + before.children_user + before.children_system
    )
    assert not report.failures, report.failures[:3]
    return {
        "letters": report.rendered,
        "pages": report.pages,
        "seconds": elapsed,
        "rate": report.rendered / elapsed,
        "cpu": cpu,
        "kb": sum(sizes) / len(sizes) / 1024,
    }


def one_process(count: int) -> dict[str, Any]:
    """CPU time of ``count`` letters laid out in this process (``prepare_pdfs`` with one worker, into an
    empty store), after 5 letters that load the fonts and parse the stylesheet."""
    from outreach.letters.campaign_file import load_campaign
    from outreach.letters.pdf_letters import LetterJob, prepare_pdfs
    from outreach.letters.pdf_store import PdfStore

    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    people = recipients(count + 5)
    jobs = [LetterJob(r, f"HVK/2026/0001/{r.contact_id:04d}") for r in people]
    with tempfile.TemporaryDirectory(prefix="pdf-bench-") as folder:
        store = PdfStore(Path(folder))
        prepare_pdfs(campaign, jobs[:5], now=DATE, store=store, workers=1)
        start = time.process_time()
        report = prepare_pdfs(campaign, jobs[5:], now=DATE, store=store, workers=1)
        cpu = time.process_time() - start
    assert not report.failures and report.rendered == count, report
    return {"letters": count, "pages": report.pages, "ms": cpu / count * 1000}


def compare(baseline: str, count: int, pairs: int) -> list[tuple[str, dict[str, Any], str]]:
    """``one_process`` of ``baseline`` and of this checkout, in interleaved pairs of fresh processes."""
    runs = []
    for _ in range(pairs):
        for name, path in (("previous commit", baseline), ("this commit", str(REPO))):
            env = os.environ | {"PYTHONPATH": path}
            load = load_average()
            out = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--one-process", str(count)],
                env=env, cwd=path, check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            runs.append((name, json.loads(out.splitlines()[-1]), load))
            print(f"{name}: {runs[-1][1]['ms']:.1f} ms a letter (load {load})", flush=True)
    return runs


def render_compare(runs: list[tuple[str, dict[str, Any], str]], baseline: str) -> str:
    commit = subprocess.run(
        ["git", "-C", baseline, "log", "-1", "--format=%h"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        f"CPU time of a letter in one process, previous commit ({commit}) and this one, in interleaved"
        f" pairs of fresh processes, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:",
        "",
        "| pair | checkout | letters | CPU a letter | load average before |",
        "|---:|---|---:|---:|---|",
    ]
    for n, (name, run, load) in enumerate(runs):
        lines.append(f"| {n // 2 + 1} | {name} | {run['letters']:,} | {run['ms']:.1f} ms | {load} |")
    for name in ("previous commit", "this commit"):
        values = sorted(run["ms"] for who, run, _ in runs if who == name)
        lines.append(f"\n{name}: median {values[len(values) // 2]:.1f} ms a letter")
    return "\n".join(lines) + "\n"


class _Blocks(html.parser.HTMLParser):
    """The text blocks (paragraphs, list items, table rows) of the letter's HTML, for fpdf2."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[str] = []
        self._current: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("p", "li", "tr", "h2") or dict(attrs).get("id") == "adres":
            self._current = []
        elif tag == "br" and self._current is not None:
            self._current.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "li", "tr", "h2", "div") and self._current is not None:
            text = re.sub(r"[ \t]+", " ", "".join(self._current)).strip()
            if text:
                self.blocks.append(text)
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current.append(data.replace("\n", " "))


def fpdf2_letters(count: int) -> dict[str, Any]:
    """The same letters with fpdf2: letterhead logo, address at the window, reference block, body,
    signature, page numbers from page 2 (``{nb}``), the same embedded Open Sans."""
    from fpdf import FPDF

    from outreach.letters.campaign_file import load_campaign
    from outreach.letters.pdf import FONTS
    from outreach.letters.render import CampaignTemplates

    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    templates = CampaignTemplates(campaign)
    folder = campaign.folder

    class Letter(FPDF):
        def footer(self) -> None:
            if self.page_no() > 1:
                self.set_y(-15)
                self.set_font("OpenSans", size=8)
                self.cell(0, 5, f"pagina {self.page_no()} van {{nb}}", align="R")

    start = time.perf_counter()
    pages = 0
    for recipient in recipients(count):
        parser = _Blocks()
        parser.feed(templates.render_letter(recipient, token="", now=DATE, kenmerk="HVK/2026/0001/0001"))
        address, *body = parser.blocks
        pdf = Letter(format="A4")
        pdf.set_creation_date(DATE)
        for style, file in (("", "Regular"), ("B", "Bold"), ("I", "Italic")):
            pdf.add_font("OpenSans", style, str(FONTS / f"OpenSans-{file}.ttf"))
            pdf.add_font("Open Sans", style, str(FONTS / f"OpenSans-{file}.ttf"))  # the logo's SVG text
        pdf.set_margins(25, 20, 20)
        pdf.add_page()
        pdf.image(str(folder / "logo.svg"), x=25, y=12, w=62)
        pdf.set_font("OpenSans", size=10)
        pdf.set_xy(21, 48)
        pdf.multi_cell(83, 5, address)
        pdf.set_xy(25, 95)
        for block in body:
            pdf.multi_cell(0, 5, block)
            pdf.ln(2)
        pdf.image(str(folder / "handtekening.svg"), w=40)
        pages += pdf.page_no()
        bytes(pdf.output())
    elapsed = time.perf_counter() - start
    return {"letters": count, "pages": pages, "seconds": elapsed, "ms": elapsed / count * 1000}


def send_database(folder: Path, count: int) -> tuple[Path, Path]:
    """A database with ``count`` wethouders (jeugd) and an approved copy of the PDF campaign without its
    sending window and rates (the bench measures the sender, not the throttle)."""
    from sqlalchemy import insert, select

    from outreach.db import open_database
    from outreach.letters.approval import record_approval
    from outreach.letters.campaign_file import load_campaign
    from outreach.models import Contact, Municipality, utcnow
    from outreach.registry.keys import email_hash, email_key, office_key
    from outreach.registry.municipalities import load_municipalities

    templates = folder / "letters"
    shutil.copytree(TEMPLATES / "wethouders-jeugd", templates / "bench")
    toml = (templates / "bench" / "campaign.toml").read_text(encoding="utf-8")
    toml = toml.replace('griffie_copy = "separate"', 'griffie_copy = "none"')
    toml = re.sub(r"\n\[sending\].*", "\n", toml, flags=re.S)
    (templates / "bench" / "campaign.toml").write_text(toml, encoding="utf-8")
    path = folder / "prepared.db"
    engine = open_database(f"sqlite:///{path}")
    load_municipalities(engine)
    contact: Any = Contact.__table__  # type: ignore[attr-defined]
    m: Any = Municipality.__table__  # type: ignore[attr-defined]
    people = recipients(count)
    with engine.begin() as conn:
        municipalities = [(row.id, row.cbs_code) for row in conn.execute(select(m.c.id, m.c.cbs_code))]
        now = utcnow()
        rows = []
        for n, person in enumerate(people):
            mid, cbs = municipalities[n % len(municipalities)]
            address = f"wethouder{n}@{cbs.lower()}.example.nl"
            key = email_key(address)
            rows.append(
                {
                    "municipality_id": mid,
                    "role": "wethouder",
                    "portfolio": person.portfolio,
                    "voorletters": person.voorletters,
                    "tussenvoegsel": person.tussenvoegsel,
                    "achternaam": person.achternaam,
                    "aanspreekvorm": person.aanspreekvorm,
                    "email": address,
                    "email_normalized": address,
                    "email_key": key,
                    "email_hash": email_hash(key),
                    "office_key": office_key(key, cbs, "wethouder"),
                    "sort_name": person.achternaam.lower(),
                    "source": "bench",
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
        conn.execute(insert(contact), rows)
    campaign = load_campaign(templates, "bench")
    record_approval(engine, replace(campaign), "bench")
    engine.dispose()
    return path, templates


def send(count: int) -> dict[str, Any]:
    from bench.send_bench import send_env, send_rate

    results: dict[str, Any] = {"letters": count}
    with tempfile.TemporaryDirectory(prefix="pdf-send-bench-") as name:
        folder = Path(name)
        prepared, templates = send_database(folder, count)
        store = folder / "store"
        with smtp_sink() as port:
            for label in ("cold", "warm"):
                db = folder / f"{label}.db"
                shutil.copy(prepared, db)
                env = send_env(f"sqlite:///{db}", templates, port) | {"OUTREACH_PDF_CACHE": str(store)}
                cmd = [str(VENV_BIN / "outreach"), "send", "--campaign", "bench", "--yes"]
                wall, cpu, rss, stdout = timed([*cmd, "--concurrency", "8"], env=env)
                sent = re.search(r"Sent ([\d,]+)", stdout)
                results[label] = {
                    "wall": wall,
                    "cpu": cpu,
                    "rss": rss,
                    "sent": int(sent.group(1).replace(",", "")) if sent else 0,
                    "phase": send_rate(stdout),
                }
    return results


def render(count: int, parallel: dict[str, Any], single: dict[str, Any], fpdf: dict[str, Any],
           sending: dict[str, Any] | None, load: str) -> str:  # fmt: skip
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on the 2-core test machine,"
        f" load average before the run {load} (other engineers' tests and benchmarks were running).",
        "",
        "| what | letters | pages | time | rate | CPU | size |",
        "|---|---|---|---|---|---|---|",
        f"| WeasyPrint, 2 worker processes (`prepare_pdfs`) | {parallel['letters']:,} | {parallel['pages']:,}"
        f" | {parallel['seconds']:.1f} s | **{parallel['rate']:.1f} letters/s** | {parallel['cpu']:.0f} s"
        f" | {parallel['kb']:.1f} kB |",
        f"| WeasyPrint, one process | {single['letters']:,} | {single['pages']:,} | {single['seconds']:.1f} s"
        f" | {single['seconds'] / single['letters'] * 1000:.0f} ms a letter | {single['cpu']:.0f} s"
        f" | {single['kb']:.1f} kB |",
        f"| fpdf2 2.8, one process, same letters | {fpdf['letters']:,} | {fpdf['pages']:,}"
        f" | {fpdf['seconds']:.1f} s | {fpdf['ms']:.0f} ms a letter | | |",
    ]
    if sending:
        for label, what in (("cold", "empty PDF store: lay out, then send"), ("warm", "PDFs in the store")):
            run = sending[label]
            lines.append(
                f"| `outreach send` to smtp-sink, {what} | {run['sent']:,} | | {run['wall']:.1f} s"
                f" | {run['sent'] / run['wall']:.0f} letters/s overall; {run['phase']} | {run['cpu']:.0f} s"
                f" | peak RSS {run['rss']:.0f} MB |"
            )
    lines += ["", f"Command: `flock /tmp/bench.lock .venv/bin/python bench/pdf_bench.py --count {count}`."]
    return "\n".join(lines) + "\n"


def write_section(body: str) -> None:
    path = REPO / "docs" / "performance.md"
    text = path.read_text(encoding="utf-8")
    marker = "<!-- pdf-bench -->"
    if marker in text:
        start = text.index(marker)
        end = text.index(marker, start + len(marker)) + len(marker)
        text = text[:start] + marker + "\n" + body + marker + text[end:]
    else:
        raise SystemExit(f"{path}: no {marker} block to replace")
    path.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=12_000, help="letters laid out in parallel")
    parser.add_argument("--sample", type=int, default=200, help="letters in one process, each library")
    parser.add_argument("--send-count", type=int, default=3_000, help="letters sent (0: skip the send)")
    parser.add_argument("--write", action="store_true", help="write the results into docs/performance.md")
    parser.add_argument("--baseline", help="a worktree of the previous commit: compare the CPU a letter")
    parser.add_argument("--pairs", type=int, default=3, help="--baseline: interleaved pairs of processes")
    parser.add_argument("--one-process", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_process:
        print(json.dumps(one_process(args.one_process)))
        return
    if args.baseline:
        print(render_compare(compare(args.baseline, args.sample, args.pairs), args.baseline))
        return
    load = load_average()
    single = layout(args.sample, workers=1)
    print(f"one process: {single['seconds'] / single['letters'] * 1000:.0f} ms a letter", flush=True)
    fpdf = fpdf2_letters(args.sample)
    print(f"fpdf2: {fpdf['ms']:.0f} ms a letter", flush=True)
    parallel = layout(args.count, workers=None)
    print(f"{parallel['letters']} letters: {parallel['seconds']:.1f} s, {parallel['rate']:.1f}/s", flush=True)
    sending = send(args.send_count) if args.send_count else None
    if sending:
        print(sending, flush=True)
    body = render(args.count, parallel, single, fpdf, sending, load)
    print(body)
    if args.write:
        write_section(body)


if __name__ == "__main__":
    main()
