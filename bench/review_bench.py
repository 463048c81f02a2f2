"""Benchmark of `outreach review` on a real audience: the three pages a reviewer waits for.

    flock /tmp/bench.lock .venv/bin/python -m bench.review_bench [--recipients N] [--repeat N] [--write-docs]

Fills a fresh SQLite database as bench/letters_bench.py does (342 municipalities, a griffie each,
``--recipients`` raadsleden; one in a hundred suppressed so the problem lists are not empty), starts the
review of campaign 2026 under uvicorn on 127.0.0.1 (tests/webserver.py, as the tests run it) and
times real HTTP requests with a keep-alive client:

* the first overview, which runs the check (every letter rendered and composed once);
* the overview afterwards (the check cached for the fingerprint);
* a page of 50 recipients: unfiltered pages spread over the list, one municipality, a search;
* one letter: the letter page (composed, headers, merge data, previous/next) and its HTML frame.

Each figure is the median and the slowest of ``--repeat`` requests. With --write-docs the figures
replace the ``## Review`` section of docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "performance.md"


def suppress_some(url: str, every: int) -> int:
    from sqlalchemy import insert, select

    from outreach.db import open_database
    from outreach.letters.recipients import table
    from outreach.models import Contact, Suppression, utcnow

    engine = open_database(url)
    contact = table(Contact).c
    with engine.begin() as conn:
        hashes = conn.execute(
            select(contact.email_hash).where(contact.role == "raadslid").order_by(contact.id)
        ).scalars()
        rows = [
            {"key_hash": h, "reason": "opt-out", "source": "bench", "created_at": utcnow()}
            for i, h in enumerate(hashes)
            if i % every == 0
        ]
        conn.execute(insert(table(Suppression)), rows)
    engine.dispose()
    return len(rows)


def timed(fetch: Callable[[], object], repeat: int) -> tuple[float, float, float]:
    """(median, slowest, CPU per request) seconds of ``repeat`` calls. The CPU time is the whole
    process's (server thread and client), which a loaded machine does not inflate as it does wall time."""
    times = []
    cpu = time.process_time()
    for _ in range(repeat):
        start = time.perf_counter()
        fetch()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times), (time.process_time() - cpu) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=12_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    import httpx

    from bench.letters_bench import populate
    from outreach.db import open_database
    from outreach.web.review.app import create_review_app
    from tests.webserver import serve

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        populate(url, args.recipients)
        suppressed = suppress_some(url, 100)
        engine = open_database(url)
        app = create_review_app(engine, REPO / "templates" / "letters", "2026")
        results: list[tuple[str, float, float, float]] = []
        with serve(app) as base, httpx.Client(base_url=base, timeout=60) as client:

            def get(path: str, expect: str) -> Callable[[], object]:
                def fetch() -> object:
                    response = client.get(path)
                    assert response.status_code == 200 and expect in response.text, (
                        path,
                        response.status_code,
                    )
                    return response

                return fetch

            start, cpu = time.perf_counter(), time.process_time()
            get("/", "letters render")()
            first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
            listing = client.get("/recipients", params={"municipality": "GM0344"}).text
            ids = [int(i) for i in re.findall(r'href="/letters/(\d+)\?municipality=GM0344"', listing)]
            pages = -(-args.recipients // 50)
            page_paths = iter(f"/recipients?page={1 + (i * 37) % pages}" for i in range(10**6))
            letter_paths = iter(f"/letters/{ids[i % len(ids)]}?municipality=GM0344" for i in range(10**6))
            frame_paths = iter(f"/letters/{ids[i % len(ids)]}/frame" for i in range(10**6))

            results.append(("overview, first (runs the check)", first, first, first_cpu))
            results.append(("overview (check cached)", *timed(get("/", "letters render"), args.repeat)))
            results.append(
                (
                    "a page of 50 recipients (pages 1..240)",
                    *timed(lambda: get(next(page_paths), "shown")(), args.repeat),
                )
            )
            results.append(
                (
                    "recipients of one municipality (Utrecht)",
                    *timed(get("/recipients?municipality=GM0344", "shown"), args.repeat),
                )
            )
            results.append(
                ("a search by name (`q=jansen`)", *timed(get("/recipients?q=jansen", "shown"), args.repeat))
            )
            results.append(
                ("one letter: its page", *timed(lambda: get(next(letter_paths), "Merge data")(), args.repeat))
            )
            results.append(
                (
                    "one letter: its HTML frame",
                    *timed(lambda: get(next(frame_paths), "Vergeten Kind")(), args.repeat),
                )
            )
        engine.dispose()

    load = os.getloadavg()[0]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, Python {platform.python_version()},"
        " SQLite, `flock /tmp/bench.lock python -m bench.review_bench`"
        f" (`--recipients {args.recipients}`, {suppressed} suppressed, `--repeat {args.repeat}`);"
        f" load average {load:.1f} on {os.cpu_count()} cores. Real HTTP to uvicorn on 127.0.0.1 with a"
        " keep-alive client; median and slowest of the repeats, and the CPU time of the process per"
        " request (server and client together; what a loaded machine does not inflate).",
        "",
        "| request | median | slowest | CPU per request | target |",
        "|---|---|---|---|---|",
    ]
    targets = {"overview (check cached)": "≤ 1 s", "a page of 50 recipients (pages 1..240)": "≤ 200 ms",
               "one letter: its page": "≤ 100 ms"}  # fmt: skip
    for name, median, slowest, cpu in results:
        lines.append(
            f"| {name} | {median * 1000:.0f} ms | {slowest * 1000:.0f} ms | {cpu * 1000:.1f} ms"
            f" | {targets.get(name, '')} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        doc = DOC.read_text(encoding="utf-8")
        section = re.compile(r"(## Review\n\n)(.*?)(?=\n<!-- review-bench-end -->)", re.S)
        if not section.search(doc):
            raise SystemExit(f"{DOC}: no '## Review' section with a <!-- review-bench-end --> marker")
        DOC.write_text(section.sub(lambda m: m.group(1) + text, doc, count=1), encoding="utf-8")


if __name__ == "__main__":
    main()
