"""Import files and situations a hostile first week found (issue 11: items 5, 6, 7, 15)."""

from __future__ import annotations

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
