"""Import files and situations a hostile first week found (issue 11: items 5, 6, 7, 15)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from outreach.cli import app
from outreach.errors import ImportFileError
from outreach.registry.importer import import_contacts
from tests.fixtures_registry import contact_count

HEADER = "Voornaam;Achternaam;Functie;Fractie;E-mail;Gemeente;Adres"


def good_row(n: int) -> str:
    return f"Jan{n};Jansen{n};Raadslid;VVD;jan{n}@utrecht.example.nl;Utrecht;Straat {n}"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


# ---- item 7: a quote that is never closed ------------------------------------------------------------


def test_an_unclosed_quote_in_the_last_row_refuses_the_file(
    runner: CliRunner, db_url: str, registry_engine: Engine, tmp_path: Path
) -> None:
    source = write_lines(
        tmp_path / "raad.csv",
        [HEADER, good_row(1), good_row(2), 'Piet;"de Boer;Raadslid;CDA;piet@utrecht.example.nl;Utrecht;x'],
    )
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(source)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[0] == (
        f"Error: {source}:4:B: a quote opened here is never closed (line 4 of the file), "
        "so the rest of the file reads as one field"
    )
    assert contact_count(registry_engine) == 0  # rows 2 and 3 were not imported either
    assert not (tmp_path / "raad.rejects.csv").exists()


def test_the_line_of_the_quote_is_named_when_rows_and_lines_differ(
    registry_engine: Engine, tmp_path: Path
) -> None:
    # Row 2 has an address with a line break inside its quotes: rows and lines part ways after it.
    source = write_lines(
        tmp_path / "raad.csv",
        [
            HEADER,
            'Jan;Jansen;Raadslid;VVD;jan@utrecht.example.nl;Utrecht;"Straat 1',
            '3511 AA Utrecht"',
            good_row(3),
            'Piet;de Boer;Raadslid;"CDA;piet@utrecht.example.nl;Utrecht;x',
        ],
    )
    with pytest.raises(ImportFileError) as caught:
        import_contacts(registry_engine, source, batch_size=1)
    assert caught.value.message == (
        f"{source}:4:D: a quote opened here is never closed (line 5 of the file), "
        "so the rest of the file reads as one field"
    )
    assert contact_count(registry_engine) == 0


def test_an_unclosed_quote_early_in_a_big_file_names_where_it_opened(
    registry_engine: Engine, tmp_path: Path
) -> None:
    lines = [HEADER] + [good_row(n) for n in range(1, 20_000)]
    lines[10] = 'Piet;de Boer;Raadslid;CDA;piet@utrecht.example.nl;"Utrecht;x'  # row 11, column F
    source = write_lines(tmp_path / "groot.csv", lines)
    with pytest.raises(ImportFileError) as caught:
        import_contacts(registry_engine, source)
    assert caught.value.message.startswith(
        f"{source}:11:F: a quote opened here is never closed (line 11 of the file)"
    )
    assert "field limit" not in caught.value.message
    assert contact_count(registry_engine) == 0


def test_a_quoted_field_that_closes_on_the_last_line_is_fine(registry_engine: Engine, tmp_path: Path) -> None:
    source = tmp_path / "raad.csv"
    # The file ends without a line break, inside a closed multi-line field.
    source.write_bytes(
        (
            HEADER
            + "\r\n"
            + good_row(1)
            + "\r\n"
            + 'Piet;de Boer;Raadslid;CDA;piet@utrecht.example.nl;Utrecht;"a\r\nb"'
        ).encode()
    )
    result = import_contacts(registry_engine, source)
    assert result.inserted == 2 and result.rejected == 0


# ---- item 6: XLSX merged headers, hidden rows and columns, columns without a header ------------------


def _workbook(
    path: Path,
    rows: list[list[object]],
    *,
    merge: Sequence[str] = (),
    hidden_rows: Sequence[int] = (),
    hidden_columns: Sequence[str] = (),
) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in rows:
        sheet.append(row)
    for cells in merge:
        sheet.merge_cells(cells)
    for number in hidden_rows:
        sheet.row_dimensions[number].hidden = True
    for letter in hidden_columns:
        sheet.column_dimensions[letter].hidden = True
    book.save(path)
    return path


def _names(engine: Engine) -> list[tuple[str | None, str | None, str | None]]:
    from sqlmodel import Session, select

    from outreach.models import Contact

    with Session(engine) as session:
        people = session.exec(select(Contact).order_by(Contact.id)).all()  # type: ignore[arg-type]
        return [(c.voornaam, c.tussenvoegsel, c.achternaam) for c in people]


def test_a_merged_naam_header_is_read_with_its_sub_headers(
    runner: CliRunner, db_url: str, registry_engine: Engine, tmp_path: Path
) -> None:
    book = _workbook(
        tmp_path / "raad.xlsx",
        [
            ["Naam", None, None, "Functie", "E-mail", "Gemeente"],
            ["Voornaam", "Tussenvoegsel", "Achternaam", None, None, None],
            ["Ruben", "van", "Dijk", "Raadslid", "r.vandijk@utrecht.example.nl", "Utrecht"],
            ["Anouk", None, "Jansen", "Raadslid", "a.jansen@utrecht.example.nl", "Utrecht"],
        ],
        merge=["A1:C1", "D1:D2", "E1:E2", "F1:F2"],
    )
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(book)])
    assert result.exit_code == 0, result.output
    assert _names(registry_engine) == [("Ruben", "van", "Dijk"), ("Anouk", None, "Jansen")]
    assert (
        "Merged header 'Naam' (A1:C1) read with its sub-headers on row 2: "
        "Voornaam, Tussenvoegsel, Achternaam" in result.stdout
    )


def test_a_merged_header_without_sub_headers_is_refused_naming_the_cells(
    registry_engine: Engine, tmp_path: Path
) -> None:
    book = _workbook(
        tmp_path / "raad.xlsx",
        [
            ["Naam", None, None, "Functie", "E-mail", "Gemeente"],
            ["Ruben", "van", "Dijk", "Raadslid", "r.vandijk@utrecht.example.nl", "Utrecht"],
        ],
        merge=["A1:C1"],
    )
    with pytest.raises(ImportFileError) as caught:
        import_contacts(registry_engine, book)
    assert caught.value.message == (
        f"{book} [Sheet]: the header 'Naam' is merged over A1:C1, and row 2 holds no sub-headers "
        "for columns B and C"
    )
    assert caught.value.hint is not None and "unmerge" in caught.value.hint
    assert contact_count(registry_engine) == 0


def test_hidden_rows_and_columns_are_named(
    runner: CliRunner, db_url: str, registry_engine: Engine, tmp_path: Path
) -> None:
    rows: list[list[object]] = [["Voornaam", "Achternaam", "Fractie", "Functie", "E-mail", "Gemeente"]]
    for n in range(1, 7):
        rows.append([f"Jan{n}", f"Jansen{n}", "VVD", "Raadslid", f"jan{n}@utrecht.example.nl", "Utrecht"])
    book = _workbook(tmp_path / "raad.xlsx", rows, hidden_rows=[3, 6], hidden_columns=["C"])
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(book)])
    assert result.exit_code == 0, result.output
    assert contact_count(registry_engine) == 6  # hidden rows are data all the same
    assert "Rows hidden in the sheet (imported like the others): 3, 6" in result.stdout
    assert "Hidden columns (read like the others): C (Fractie)" in result.stdout


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_column_with_data_but_no_header_is_named_as_ignored(
    runner: CliRunner, db_url: str, registry_engine: Engine, tmp_path: Path, kind: str
) -> None:
    rows = [
        ["Voornaam", "Achternaam", "", "Functie", "E-mail", "Gemeente", ""],
        ["Jan", "Jansen", "06-12345678", "Raadslid", "jan@utrecht.example.nl", "Utrecht", ""],
    ]
    if kind == "csv":
        source = write_lines(tmp_path / "raad.csv", [";".join(r) for r in rows])
    else:
        source = _workbook(tmp_path / "raad.xlsx", [[c or None for c in r] for r in rows])
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "Ignored columns: C (no header)" in result.stdout  # G is empty throughout: not mentioned


# ---- item 5: a full disk while the rejects file is written -------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("rejected_rows", [3, 20_000], ids=["a-few", "more-than-a-buffer"])
def test_a_full_disk_for_the_rejects_file_is_one_line_and_imports_nothing(
    runner: CliRunner, db_url: str, registry_engine: Engine, tmp_path: Path, rejected_rows: int
) -> None:
    lines = [HEADER] + [good_row(n) for n in range(1, 6)]
    lines += [f"Kapot{n};X;Raadslid;VVD;geen-adres-{n};Utrecht;x" for n in range(rejected_rows)]
    source = write_lines(tmp_path / "raad.csv", lines)
    # The temporary rejects file goes to /dev/full: every write to it fails with ENOSPC, as on a full disk.
    temporary = tmp_path / f".raad.rejects.csv.{os.getpid()}.tmp"
    temporary.symlink_to("/dev/full")
    result = runner.invoke(app, ["--database", db_url, "contacts", "import", str(source)])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"Error: {tmp_path / 'raad.rejects.csv'}: cannot write the rejects file: No space left on device",
        "Hint: nothing was imported; free some space, or name another place with --rejects PATH",
    ]
    assert contact_count(registry_engine) == 0
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("outreach.db"))
    assert left == ["raad.csv"]  # no rejects file, no hidden temporary file


# ---- item 15: Ctrl-C or SIGTERM during an import -----------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code", "name"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_an_interrupted_import_says_that_nothing_was_written(
    tmp_path: Path, signum: int, code: int, name: str
) -> None:
    url = f"sqlite:///{tmp_path / 'outreach.db'}"
    assert _outreach(tmp_path, url, "init").returncode == 0
    # A big list whose first rows are rejected, so that the rejects file is being written early on.
    lines = [HEADER] + [f"Kapot{n};X;Raadslid;VVD;geen-adres-{n};Utrecht;x" for n in range(50)]
    lines += [good_row(n) for n in range(300_000)]
    source = write_lines(tmp_path / "groot.csv", lines)
    process = subprocess.Popen(
        [sys.executable, "-m", "outreach", "--database", url, "contacts", "import", str(source)],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        temporary = tmp_path / f".groot.rejects.csv.{process.pid}.tmp"
        deadline = time.monotonic() + 60
        while not temporary.exists():  # the import is under way: rows are being read and written
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signum)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, (out, err)
    assert err.splitlines() == [
        f"Import stopped ({name}): nothing was written; the database is as it was and there is no "
        "rejects file."
    ]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("outreach.db")) == ["groot.csv"]
    with sqlite3.connect(tmp_path / "outreach.db") as conn:
        assert conn.execute("SELECT count(*) FROM contact").fetchone()[0] == 0


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OUTREACH_")}


def _outreach(folder: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outreach", "--database", url, *args],
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
