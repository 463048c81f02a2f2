"""`outreach init` and `outreach contacts import|list|show` as staff run them."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database
from outreach.models import Suppression
from outreach.registry.keys import email_hash, email_key
from tests.conftest import REPO
from tests.fixtures_registry import REGISTRY_DATA, WriteCsv, contact_count

HEADER = [
    "Voornaam",
    "Tussenvoegsel",
    "Achternaam",
    "Functie",
    "Fractie",
    "E-mail",
    "Gemeente",
    "Portefeuille",
]


def run(runner: CliRunner, db_url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--database", db_url, *args])
    return result.exit_code, result.stdout, result.stderr


def test_init_creates_then_reports_up_to_date(runner: CliRunner, db_url: str) -> None:
    code, out, _ = run(runner, db_url, "init")
    assert code == 0
    assert out.splitlines() == [
        f"Created database {db_url}",
        "Municipalities: 342 from gemeenten-2026.csv (342 added, 0 checked or updated)",
    ]
    code, out, _ = run(runner, db_url, "init")
    assert code == 0
    assert out.splitlines()[0] == f"Database {db_url} is up to date"
    assert "(0 added, 342 checked or updated)" in out


def test_import_the_sample_list(runner: CliRunner, db_url: str, tmp_path: Path) -> None:
    sample = tmp_path / "sample-contacts.csv"
    shutil.copy(REPO / "data" / "sample-contacts.csv", sample)
    run(runner, db_url, "init")
    code, out, err = run(runner, db_url, "contacts", "import", str(sample))
    assert code == 0, err
    lines = out.splitlines()
    assert (
        lines[0]
        == f"Imported {sample} (Windows-1252, ';'-separated, header on row 1), source 'sample-contacts.csv'"
    )
    assert lines[1:7] == [
        "  inserted          55",
        "  updated            0",
        "  unchanged          0",
        "  duplicate          1",
        "  rejected           3",
        "  rows read         59",
    ]
    assert (
        f"Rejected and duplicate rows, with row number and reason: {tmp_path / 'sample-contacts.rejects.csv'}"
        in out
    )
    rejects = (tmp_path / "sample-contacts.rejects.csv").read_text(encoding="utf-8-sig")
    assert "did you mean 'Zwolle'" in rejects and "ambiguous" in rejects and "duplicate of row 6" in rejects
    code, out, _ = run(runner, db_url, "contacts", "import", str(sample), "--dry-run")
    assert code == 0
    assert re.search(r"^  would be inserted +0$", out, re.MULTILINE)
    assert re.search(r"^  unchanged +55$", out, re.MULTILINE)
    assert out.rstrip().endswith("Dry run: nothing was written to the database.")


def test_an_unimportable_file_is_one_line_exit_1_and_changes_nothing(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    run(runner, db_url, "init")
    for name in ("leeg.csv", "geen-email.csv", "oud-excel.xls", "foto.png", "open-aanhalingsteken.csv"):
        path = tmp_path / name
        shutil.copy(REGISTRY_DATA / name, path)
        code, out, err = run(runner, db_url, "contacts", "import", str(path))
        assert code == 1, name
        assert out == ""
        assert err.startswith(f"Error: {path}"), err
        assert "Traceback" not in err
        assert len([line for line in err.splitlines() if line.startswith("Error:")]) == 1
    engine = open_database(db_url)
    assert contact_count(engine) == 0
    engine.dispose()


def test_usage_errors_exit_2(runner: CliRunner, db_url: str) -> None:
    run(runner, db_url, "init")
    code, _, err = run(
        runner, db_url, "contacts", "import", str(REGISTRY_DATA / "raad-cp1252.csv"), "--sheet", "X"
    )
    assert code == 2
    assert (
        err
        == f"Error: --sheet applies to XLSX workbooks; {REGISTRY_DATA / 'raad-cp1252.csv'} is a text file\n"
    )
    code, _, err = run(runner, db_url, "contacts", "list", "--role", "koning")
    assert code == 2 and err.startswith("Error: --role 'koning' is not a role")
    code, _, err = run(runner, db_url, "contacts", "list", "--municipality", "Atlantis")
    assert code == 2 and "no such municipality" in err


def populate(runner: CliRunner, db_url: str, write_csv: WriteCsv) -> None:
    path = write_csv(
        [
            HEADER,
            ["Piet", "de", "Zwart", "Raadslid", "VVD", "p.dezwart@utrecht.example.nl", "Utrecht", ""],
            [
                "Jan",
                "van der",
                "Berg",
                "Wethouder",
                "D66",
                "j.vanderberg@utrecht.example.nl",
                "Utrecht",
                "Jeugd",
            ],
            ["Anna", "", "Aalbers", "Raadslid", "vvd", "a.aalbers@utrecht.example.nl", "Utrecht", ""],
            ["Karel", "", "Appel", "Raadslid", "VVD", "k.appel@denhaag.example.nl", "Den Haag", ""],
            ["Els", "", "Zomer", "Raadslid", "CDA", "e.zomer@amsterdam.example.nl", "Amsterdam", ""],
            ["", "", "", "Griffie", "", "griffie@bergen.example.nl", "Bergen (NH.)", ""],
        ]
    )
    run(runner, db_url, "init")
    code, _, err = run(runner, db_url, "contacts", "import", str(path))
    assert code == 0, err


def test_list_sorts_by_municipality_then_surname_without_tussenvoegsel(
    runner: CliRunner, db_url: str, write_csv: WriteCsv
) -> None:
    populate(runner, db_url, write_csv)
    code, out, err = run(runner, db_url, "contacts", "list")
    assert code == 0
    rows = [line.split("  ")[0] for line in out.splitlines()[1:]]
    names = [
        json_row["name"] for json_row in json.loads(run(runner, db_url, "contacts", "list", "--json")[1])
    ]
    # Amsterdam, Bergen (NH.), 's-Gravenhage under G, Utrecht; in Utrecht: Aalbers, van der Berg, de Zwart
    assert names == ["Els Zomer", "", "Karel Appel", "Anna Aalbers", "Jan van der Berg", "Piet de Zwart"]
    assert rows[0] == "Amsterdam" and rows[2] == "'s-Gravenhage"
    assert out.splitlines()[0].split() == ["Municipality", "Role", "Name", "Party", "E-mail"]
    assert "wethouder (Jeugd)" in out
    assert err.strip() == "6 contacts"


def test_list_filters_and_json(runner: CliRunner, db_url: str, write_csv: WriteCsv) -> None:
    populate(runner, db_url, write_csv)

    def emails(*args: str) -> list[str]:
        code, out, _ = run(runner, db_url, "contacts", "list", "--json", *args)
        assert code == 0
        return [row["email_normalized"] for row in json.loads(out)]  # the whole stdout is one document

    assert emails("--role", "wethouder") == ["j.vanderberg@utrecht.example.nl"]
    assert emails("--party", "VVD") == [
        "k.appel@denhaag.example.nl",
        "a.aalbers@utrecht.example.nl",
        "p.dezwart@utrecht.example.nl",
    ]
    assert emails("--municipality", "'s-Gravenhage") == ["k.appel@denhaag.example.nl"]
    assert emails("--municipality", "GM0518") == ["k.appel@denhaag.example.nl"]
    assert emails("--province", "NH") == ["e.zomer@amsterdam.example.nl", "griffie@bergen.example.nl"]
    assert emails("--province", "Utrecht", "--party", "vvd") == [
        "a.aalbers@utrecht.example.nl",
        "p.dezwart@utrecht.example.nl",
    ]
    assert emails("--role", "burgemeester") == []
    row = json.loads(run(runner, db_url, "contacts", "list", "--json", "--role", "wethouder")[1])[0]
    assert row["municipality"] == "Utrecht" and row["cbs_code"] == "GM0344" and row["portfolio"] == "Jeugd"
    assert row["suppressed"] is None and row["tussenvoegsel"] == "van der"


def test_show_a_contact_and_its_suppression(
    runner: CliRunner, db_url: str, write_csv: WriteCsv, engine: Engine
) -> None:
    populate(runner, db_url, write_csv)
    key = email_key("a.aalbers@utrecht.example.nl")
    with Session(engine) as session:
        session.add(Suppression(key_hash=email_hash(key), email_key=key, reason="opt-out", source="imap"))
        session.commit()
    code, out, _ = run(runner, db_url, "contacts", "show", "A.Aalbers@Utrecht.example.nl")
    assert code == 0
    assert out.startswith("a.aalbers@utrecht.example.nl: SUPPRESSED (opt-out, source imap, since ")
    assert "  Name           Anna Aalbers" in out
    assert "  Municipality   Utrecht (GM0344, Utrecht)" in out
    code, out, _ = run(runner, db_url, "contacts", "show", "a.aalbers@utrecht.example.nl", "--json")
    document = json.loads(out)
    assert document["suppression"]["reason"] == "opt-out"
    assert [c["role"] for c in document["contacts"]] == ["raadslid"]
    code, out, _ = run(runner, db_url, "contacts", "list", "--party", "vvd")
    assert "a.aalbers@utrecht.example.nl  [suppressed: opt-out]" in out
    code, out, err = run(runner, db_url, "contacts", "show", "niemand@example.nl")
    assert (code, out) == (1, "")
    assert err == "Error: no contact with e-mail address 'niemand@example.nl'\n"


def test_list_of_an_empty_registry(runner: CliRunner, db_url: str) -> None:
    run(runner, db_url, "init")
    assert run(runner, db_url, "contacts", "list") == (0, "", "No contacts match.\n")
    code, out, _ = run(runner, db_url, "contacts", "list", "--json")
    assert (code, json.loads(out)) == (0, [])
