"""What an XLSX sheet's cell values do not say: merged cells, hidden rows and hidden columns.

openpyxl's read-only mode (constant memory on big workbooks) hands out values only; a header "Naam"
merged over three columns then reads as "Naam", "", "" and a hidden row looks like any other. The
sheet's XML says both, in ``<mergeCell ref="A1:C1"/>``, ``<row r="5" hidden="1">`` and ``<col min="3"
max="3" hidden="1"/>``: this module finds those tags by scanning the XML as bytes in chunks (a second
pass that costs a fraction of parsing the cells), and decides what a merged header means.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from outreach.errors import ImportFileError
from outreach.registry.columns import column_letter

_CHUNK = 1 << 20
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\b[^>]*?\bref="\$?([A-Z]+)\$?(\d+)(?::\$?([A-Z]+)\$?(\d+))?"')
_ROW = re.compile(rb"<(?:\w+:)?row\b([^>]*)>")
_COL = re.compile(rb"<(?:\w+:)?col\b([^>]*)>")
_ROW_NUMBER = re.compile(rb'\br="(\d+)"')
_HIDDEN = re.compile(rb'\bhidden="(?:1|true)"')
_MIN = re.compile(rb'\bmin="(\d+)"')
_MAX = re.compile(rb'\bmax="(\d+)"')


def column_index(letters: str) -> int:
    """0-based index of a column letter: A -> 0, AB -> 27."""
    index = 0
    for char in letters:
        index = index * 26 + ord(char) - ord("A") + 1
    return index - 1


@dataclass(frozen=True)
class Merge:
    """A merged range; columns 0-based, rows as the sheet numbers them."""

    first_column: int
    first_row: int
    last_column: int
    last_row: int

    @property
    def ref(self) -> str:
        return (
            f"{column_letter(self.first_column)}{self.first_row}:"
            f"{column_letter(self.last_column)}{self.last_row}"
        )


@dataclass
class SheetLayout:
    merges: list[Merge] = field(default_factory=list)
    hidden_rows: set[int] = field(default_factory=set)
    hidden_columns: set[int] = field(default_factory=set)  # 0-based


def read_layout(path: Path, member: str) -> SheetLayout:
    """The merged ranges, hidden rows and hidden columns of the sheet stored at ``member``."""
    layout = SheetLayout()
    row = 0
    try:
        with zipfile.ZipFile(path) as archive, archive.open(member) as fh:
            carry = b""
            while chunk := fh.read(_CHUNK):
                data = carry + chunk
                cut = data.rfind(b"<")  # a tag may straddle chunks: keep it for the next round
                data, carry = data[:cut], data[cut:]
                row = _scan(data, layout, row)
            _scan(carry, layout, row)
    except (KeyError, OSError, zipfile.BadZipFile):
        return SheetLayout()  # openpyxl read the sheet; without its layout the values still stand
    return layout


def _scan(data: bytes, layout: SheetLayout, row: int) -> int:
    for match in _ROW.finditer(data):
        attributes = match.group(1)
        number = _ROW_NUMBER.search(attributes)
        row = int(number.group(1)) if number else row + 1
        if _HIDDEN.search(attributes):
            layout.hidden_rows.add(row)
    for match in _COL.finditer(data):
        attributes = match.group(1)
        if _HIDDEN.search(attributes):
            low, high = _MIN.search(attributes), _MAX.search(attributes)
            if low and high:
                layout.hidden_columns.update(range(int(low.group(1)) - 1, int(high.group(1))))
    for match in _MERGE.finditer(data):
        first_col, first_row, last_col, last_row = match.groups()
        layout.merges.append(
            Merge(
                column_index(first_col.decode()),
                int(first_row),
                column_index((last_col or first_col).decode()),
                int(last_row or first_row),
            )
        )
    return row


def _fill(cells: list[str], width: int) -> list[str]:
    return cells + [""] * (width - len(cells)) if len(cells) < width else cells


def merged_header(
    layout: SheetLayout,
    header_row: int,
    headers: list[str],
    rows: Iterator[tuple[int, list[str]]],
    where: str,
) -> tuple[list[str], str | None]:
    """Headers with a horizontally merged header cell resolved, and a note saying how.

    A header merged over several columns ("Naam" over A1:C1) is read from the sub-headers in the row
    under it (Voornaam, Tussenvoegsel, Achternaam), which is then consumed from ``rows``. Without
    sub-headers it cannot be known which column holds what: ``ImportFileError`` names the cells.
    """
    spans = [
        m for m in layout.merges if m.first_row <= header_row <= m.last_row and m.last_column > m.first_column
    ]
    if not spans:
        return headers, None
    width = max(len(headers), max(m.last_column for m in spans) + 1)
    headers = _fill(list(headers), width)
    following = next(rows, None)
    below: list[str] | None = None
    if following is not None and following[0] == header_row + 1:
        below = _fill(list(following[1]), width)
    inside = {c for m in spans for c in range(m.first_column, m.last_column + 1)}
    # A row of sub-headers has nothing under the columns whose header is not merged (those are empty
    # or merged downwards): a row of data has a name, a role, an address there.
    is_sub_row = below is not None and not any(
        cell.strip() for index, cell in enumerate(below) if index not in inside
    )
    for merge in spans:
        columns = range(merge.first_column, merge.last_column + 1)
        if is_sub_row and below is not None:
            lacking = [c for c in columns if not below[c].strip()]
        else:
            lacking = list(columns)[1:]
        if lacking:
            names = [column_letter(c) for c in lacking]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            raise ImportFileError(
                f"{where}: the header {headers[merge.first_column].strip()!r} is merged over {merge.ref}, "
                f"and row {header_row + 1} holds no sub-headers for column{'s' if len(names) > 1 else ''} "
                f"{listed}",
                hint="unmerge the cells and give each column its own header (Voornaam, Tussenvoegsel, "
                "Achternaam), or put a sub-header under each column of the merged one",
            )
    assert below is not None
    combined = [below[i].strip() if i in inside else headers[i] for i in range(width)]
    notes = "; ".join(
        f"Merged header {headers[m.first_column].strip()!r} ({m.ref}) read with its sub-headers on row "
        f"{header_row + 1}: " + ", ".join(below[c].strip() for c in range(m.first_column, m.last_column + 1))
        for m in spans
    )
    return combined, notes


def fill_merged_cells(
    layout: SheetLayout, after_row: int, rows: Iterator[tuple[int, list[str]]]
) -> Iterator[tuple[int, list[str]]]:
    """Data rows with every cell of a range merged downwards holding the range's value, as the sheet
    shows it (a Gemeente merged over ten rows is that municipality for all ten). A range merged across
    columns keeps its value in its first column only: which of the columns it belongs to is unknown."""
    merges = sorted(
        (m for m in layout.merges if m.first_row > after_row and m.first_column == m.last_column),
        key=lambda m: m.first_row,
    )
    if not merges:
        yield from rows
        return
    active: list[tuple[Merge, str]] = []
    upcoming = iter(merges)
    pending = next(upcoming, None)
    for number, cells in rows:
        active = [(m, value) for m, value in active if m.last_row >= number]
        while pending is not None and pending.first_row <= number:
            if pending.first_row == number:
                anchor = cells[pending.first_column] if pending.first_column < len(cells) else ""
                active.append((pending, anchor))
            pending = next(upcoming, None)
        if active:
            cells = list(cells)
            for merge, value in active:
                cells = _fill(cells, merge.last_column + 1)
                for column in range(merge.first_column, merge.last_column + 1):
                    if not cells[column]:
                        cells[column] = value
        yield number, cells
