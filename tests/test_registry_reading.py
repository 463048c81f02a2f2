"""Reading files as staff get them: encodings, delimiters, headers, XLSX, and files that are unreadable."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from outreach.errors import ImportFileError, UsageError
from outreach.registry.columns import Column, column_for, column_letter
from outreach.registry.reading import open_table
from tests.fixtures_registry import REGISTRY_DATA, WriteCsv, WriteXlsx


def read_all(
    path: Path, sheet: str | None = None
) -> tuple[list[str], list[tuple[int, list[str]]], str | None]:
    with open_table(path, sheet=sheet) as table:
        return list(table.columns.headers), list(table.rows), table.encoding


def test_windows_1252_semicolon_crlf() -> None:
    headers, rows, encoding = read_all(REGISTRY_DATA / "raad-cp1252.csv")
    assert encoding == "cp1252"
    assert headers[:3] == ["Voornaam", "Tussenvoegsel", "Achternaam"]
    assert rows[0] == (
        2,
        [
            "Anaïs",
            "van der",
            "Berg",
            "Raadslid",
            "GroenLinks-PvdA",
            "a.vanderberg@utrecht.example.nl",
            "Utrecht",
            "",
        ],
    )
    assert rows[5][1][6] == "Súdwest-Fryslân"
    assert not any("\r" in cell for _, cells in rows for cell in cells)


def test_utf8_bom_comma_and_line_breaks_inside_quotes_keep_rows_together() -> None:
    headers, rows, encoding = read_all(REGISTRY_DATA / "griffies-utf8-bom.csv")
    assert encoding == "utf-8-sig"
    assert headers[0] == "Naam"  # the BOM is not part of the first header
    assert [number for number, _ in rows] == [2, 3, 4, 5, 6]  # spreadsheet rows, not physical lines
    assert rows[0][1][5] == "Spui 70\n2511 BT Den Haag"
    assert rows[4][1][0] == "Jan\nJansen"


def test_utf16_tab_separated_unicode_text() -> None:
    headers, rows, encoding = read_all(REGISTRY_DATA / "excel-unicode-tekst.txt")
    assert encoding == "utf-16"
    assert headers == ["Voornaam", "Achternaam", "Functie", "Fractie", "E-mail", "Gemeente"]
    assert rows[1][1][:2] == ["Ömer", "Çelik"]


def test_a_title_line_above_the_header_is_skipped() -> None:
    headers, rows, encoding = read_all(REGISTRY_DATA / "bergen-utf8.csv")
    assert encoding == "utf-8"
    assert headers[0] == "Voornaam"
    assert rows[0][0] == 3
    assert rows[1][1][0] == "Riëtte"


@pytest.mark.parametrize("delimiter", [";", ",", "\t"])
def test_delimiter_is_sniffed_even_when_values_contain_the_others(
    write_csv: WriteCsv, delimiter: str
) -> None:
    path = write_csv(
        [
            ["Naam", "Functie", "E-mail", "Gemeente"],
            ["Berg, J. van der", "Wethouder; Jeugd", "j.berg@example.nl", "Nuenen, Gerwen en Nederwetten"],
            ["Jansen, P.", "Raadslid", "p.jansen@example.nl", "Utrecht"],
        ],
        delimiter=delimiter,
        encoding="utf-8",
    )
    headers, rows, _ = read_all(path)
    assert headers == ["Naam", "Functie", "E-mail", "Gemeente"]
    assert rows[0][1] == [
        "Berg, J. van der",
        "Wethouder; Jeugd",
        "j.berg@example.nl",
        "Nuenen, Gerwen en Nederwetten",
    ]


def test_utf8_is_told_from_windows_1252_by_content_not_name(write_csv: WriteCsv) -> None:
    rows = [
        ["E-mail", "Functie", "Gemeente", "Achternaam"],
        ["a@example.nl", "Raadslid", "Utrecht", "Müller-Ëlsen"],
    ]
    for encoding in ("utf-8", "cp1252"):
        path = write_csv(rows, encoding=encoding, name=f"{encoding}.csv")
        assert read_all(path)[1][0][1][3] == "Müller-Ëlsen"


@pytest.mark.parametrize(
    ("header", "column"),
    [
        ("E-mail", Column.EMAIL),
        ("\ufeffE-mailadres", Column.EMAIL),
        (" e mail ", Column.EMAIL),
        ("E-MAILADRES (werk)", Column.EMAIL),
        ("Email", Column.EMAIL),
        ("Functie", Column.ROLE),
        ("Rol", Column.ROLE),
        ("Fractie", Column.PARTY),
        ("Partij", Column.PARTY),
        ("Gemeentecode", Column.MUNICIPALITY_CODE),
        ("Tussen voegsel", Column.TUSSENVOEGSEL),
        ("Naam", Column.FULL_NAME),
        ("Portefeuille", Column.PORTFOLIO),
        ("Aanhef", Column.AANHEF),
        ("Provincie", Column.PROVINCE),
        ("Voorletters", Column.VOORLETTERS),
        ("Telefoon", None),
    ],
)
def test_headers_in_dutch_and_english(header: str, column: Column | None) -> None:
    assert column_for(header) is column


def test_column_letters() -> None:
    assert [column_letter(i) for i in (0, 25, 26, 27, 701, 702)] == ["A", "Z", "AA", "AB", "ZZ", "AAA"]


def test_xlsx_first_sheet_or_named_one_with_typed_cells(write_xlsx: WriteXlsx) -> None:
    path = write_xlsx(
        {
            "Toelichting": [["Deze lijst is bijgewerkt op 1 maart 2026"]],
            "Raad": [
                ["E-mail", "Functie", "Gemeentecode", "Einde termijn", "Zetels"],
                ["a@example.nl", "Raadslid", 363, date(2030, 3, 31), 4.0],
                [None, None, None, None, None],
                ["b@example.nl", "Wethouder", 344, None, 2.5],
            ],
        }
    )
    with pytest.raises(ImportFileError, match=r"\[Toelichting\]:1: no e-mail column"):
        read_all(path)  # the first sheet is the default
    headers, rows, _ = read_all(path, sheet="raad")
    assert headers[0] == "E-mail"
    assert rows[0] == (2, ["a@example.nl", "Raadslid", "363", "2030-03-31", "4"])
    assert rows[1] == (3, ["", "", "", "", ""])
    assert rows[2][1][4] == "2.5"
    with pytest.raises(ImportFileError, match=r"no sheet 'Blad9'; the workbook has 'Toelichting', 'Raad'"):
        read_all(path, sheet="Blad9")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("leeg.csv", r"leeg.csv: the file is empty$"),
        ("geen-email.csv", r"geen-email.csv:1: no e-mail column \(headers found: 'Voornaam', 'Achternaam'"),
        ("oud-excel.xls", r"an old Excel 97-2003 \(.xls\) workbook"),
        ("foto.png", r"foto.png: a binary file, not CSV or XLSX"),
    ],
)
def test_files_that_cannot_be_imported(name: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=message):
        read_all(REGISTRY_DATA / name)


def test_a_quote_never_closed_is_refused_not_swallowed() -> None:
    with pytest.raises(
        ImportFileError, match=r"open-aanhalingsteken.csv:3:B: a quote opened here is never closed"
    ):
        read_all(REGISTRY_DATA / "open-aanhalingsteken.csv")


def test_more_file_level_errors(tmp_path: Path, write_csv: WriteCsv) -> None:
    with pytest.raises(ImportFileError, match=r"no such file"):
        read_all(tmp_path / "nergens.csv")
    with pytest.raises(ImportFileError, match=r"is a folder"):
        read_all(tmp_path)
    zipped = tmp_path / "brief.docx"
    zipped.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    with pytest.raises(ImportFileError, match=r"a ZIP archive but not a readable XLSX workbook"):
        read_all(zipped)
    no_role = write_csv([["Naam", "E-mail", "Gemeente"], ["Jan", "jan@example.nl", "Utrecht"]])
    with pytest.raises(ImportFileError, match=r"no Functie column"):
        read_all(no_role)
    twice = write_csv([["E-mail", "Functie", "Emailadres"], ["a@example.nl", "Raadslid", "b@example.nl"]])
    with pytest.raises(
        ImportFileError, match=r"columns A \('E-mail'\) and C \('Emailadres'\) both hold the e-mail"
    ):
        read_all(twice)
    undecodable = tmp_path / "kapot.csv"
    undecodable.write_bytes(b"E-mail;Functie\r\njan@example.nl;Raadslid\r\n\x81\x8d;x\r\n")
    with pytest.raises(ImportFileError, match=r"neither UTF-8 nor Windows-1252 text \(byte 0x81 at line 3\)"):
        read_all(undecodable)
    mixed = tmp_path / "gemengd.csv"
    mixed.write_bytes(
        "E-mail;Functie;Achternaam\r\na@example.nl;Raadslid;Müller\r\n".encode()
        + "b@example.nl;Raadslid;Müller\r\n".encode("cp1252")
    )
    with pytest.raises(
        ImportFileError, match=r"mixes UTF-8 \(line 2\) and Windows-1252 \(byte 0xFC at line 3\)"
    ):
        read_all(mixed)
    with pytest.raises(UsageError, match=r"--sheet applies to XLSX"):
        read_all(REGISTRY_DATA / "raad-cp1252.csv", sheet="Blad1")
