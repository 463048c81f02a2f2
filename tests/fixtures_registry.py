"""Fixtures for the registry tests: a database with the municipalities, and contact files written the
way Dutch Excel and municipal websites write them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlmodel
from openpyxl import Workbook
from sqlalchemy import Engine, func, select
from sqlmodel import Session

from outreach.models import Contact
from outreach.registry.municipalities import load_municipalities

REGISTRY_DATA = Path(__file__).resolve().parent / "data" / "registry"

WriteCsv = Callable[..., Path]
WriteXlsx = Callable[..., Path]


@pytest.fixture
def registry_engine(engine: Engine) -> Iterator[Engine]:
    """The test database with the 342 municipalities loaded, as after `outreach init`."""
    load_municipalities(engine)
    yield engine


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    """Write rows as a CSV file: ``write_csv(rows, name=, delimiter=, encoding=, newline=)``.

    Defaults are what Dutch Excel's "CSV (gescheiden door lijstscheidingsteken)" produces: ';', CRLF,
    Windows-1252. Cells are quoted only when they must be, as Excel does.
    """

    def write(
        rows: Sequence[Sequence[str]],
        *,
        name: str = "lijst.csv",
        delimiter: str = ";",
        encoding: str = "cp1252",
        newline: str = "\r\n",
    ) -> Path:
        lines = []
        for row in rows:
            cells = []
            for cell in row:
                if any(ch in cell for ch in (delimiter, '"', "\r", "\n")):
                    cell = '"' + cell.replace('"', '""') + '"'
                cells.append(cell)
            lines.append(delimiter.join(cells))
        path = tmp_path / name
        path.write_bytes((newline.join(lines) + newline).encode(encoding))
        return path

    return write


@pytest.fixture
def write_xlsx(tmp_path: Path) -> WriteXlsx:
    """Write an XLSX workbook with openpyxl: ``write_xlsx({"Blad1": rows, ...}, name=)``; cells keep their
    Python types (numbers, dates), as Excel would store them."""

    def write(sheets: dict[str, Sequence[Sequence[Any]]], *, name: str = "lijst.xlsx") -> Path:
        workbook = Workbook()
        first = True
        for title, rows in sheets.items():
            sheet = workbook.active if first else workbook.create_sheet()
            assert sheet is not None
            sheet.title = title
            first = False
            for row in rows:
                sheet.append(list(row))
        path = tmp_path / name
        workbook.save(path)
        return path

    return write


def contact_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Contact)).scalar_one())


def contacts_by_email(engine: Engine) -> dict[str, Contact]:
    """Every contact, keyed by its email_key (tests use one office per address unless they say so)."""
    with Session(engine) as session:
        return {c.email_key or "": c for c in session.exec(sqlmodel.select(Contact)).all()}
