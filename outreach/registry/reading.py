"""Reading import files: CSV in the encodings and dialects staff get from Dutch Excel and websites, XLSX.

Everything that makes a file unreadable as a whole raises ``ImportFileError`` before a single row is
handed out, except a quote that is never closed, which only shows at the end or where the field grows
past the csv module's limit (the import is one transaction, so that still leaves the database
untouched).

Row numbers are the ones a spreadsheet shows: the header is row 1 when it is the first line, and a
quoted field with line breaks inside stays one row.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Literal

from outreach.errors import ImportFileError, UsageError
from outreach.registry.columns import ColumnMap, column_letter, is_header_row, map_columns
from outreach.registry.sheet_layout import fill_merged_cells, merged_header, read_layout

DELIMITERS = (";", ",", "\t")
HEADER_SEARCH_ROWS = 10  # a title line or two ("Raadsleden 2026") may precede the header
_CHUNK = 1 << 20
_SAMPLE = 64 * 1024
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # Excel 97-2003 .xls (and .doc, .msg)
_ZIP_MAGIC = b"PK\x03\x04"
_CONTROL_BYTES = [bytes([b]) for b in range(32) if b not in (9, 10, 13)]

Cells = list[str]


@dataclass
class Table:
    """An open import file: its header and an iterator over its data rows."""

    path: Path
    kind: Literal["csv", "xlsx"]
    encoding: str | None
    delimiter: str | None
    sheet: str | None
    header_row: int
    columns: ColumnMap
    rows: Iterator[tuple[int, Cells]]  # (row number as a spreadsheet shows it, cells)
    progress: Callable[[], float]  # fraction of the file read, 0..1
    notes: list[str] = field(default_factory=list)  # how the header was read, when not plainly
    hidden_rows: list[int] = field(default_factory=list)  # data rows hidden in the sheet, as read
    hidden_columns: list[str] = field(default_factory=list)  # read columns hidden in the sheet
    unnamed_with_data: set[int] = field(default_factory=set)  # columns without a header that hold data

    def watch_unnamed(self) -> None:
        """Note, while the rows are read, which columns without a header hold data after all."""
        unnamed = [i for i, header in enumerate(self.columns.headers) if not header.strip()]
        if unnamed:
            self.rows = _watch_unnamed(self.rows, unnamed, self.unnamed_with_data)

    @property
    def ignored_columns(self) -> list[str]:
        """Headers outreach does not read, and columns without a header that hold data."""
        unnamed = [f"{column_letter(i)} (no header)" for i in sorted(self.unnamed_with_data)]
        return [*self.columns.ignored, *unnamed]

    @property
    def where(self) -> str:
        return str(self.path) if self.sheet is None else f"{self.path} [{self.sheet}]"


def _watch_unnamed(
    rows: Iterator[tuple[int, Cells]], unnamed: list[int], seen: set[int]
) -> Iterator[tuple[int, Cells]]:
    for number, cells in rows:
        for index in unnamed:
            if index < len(cells) and index not in seen and cells[index].strip():
                seen.add(index)
        yield number, cells


@contextmanager
def open_table(path: Path, *, sheet: str | None = None) -> Iterator[Table]:
    """Open ``path`` as CSV or XLSX (told apart by content, not by name)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(_SAMPLE)
    except IsADirectoryError:
        raise ImportFileError(f"{path}: is a folder, not a file") from None
    except FileNotFoundError:
        raise ImportFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror}") from None
    if size == 0 or not head.strip():
        raise ImportFileError(f"{path}: the file is empty")
    if head.startswith(_ZIP_MAGIC):
        with ExitStack() as stack:
            yield _open_xlsx(path, sheet, stack)
        return
    if sheet is not None:
        raise UsageError(f"--sheet applies to XLSX workbooks; {path} is a text file")
    if head.startswith(_OLE_MAGIC):
        raise ImportFileError(
            f"{path}: an old Excel 97-2003 (.xls) workbook, which outreach cannot read",
            hint="open it in Excel and save it as .xlsx or as CSV",
        )
    if head.startswith(b"%PDF"):
        raise ImportFileError(
            f"{path}: a PDF document, not a contacts list", hint="export the list as CSV or XLSX"
        )
    encoding = _detect_encoding(path, head)
    with ExitStack() as stack:
        yield _open_csv(path, size, encoding, stack)


# --- CSV ---------------------------------------------------------------------------------------------


def _detect_encoding(path: Path, head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"  # Excel's "Unicode text" export: UTF-16 with BOM, tab-separated
    # A control character or two is a bad cell (its row is rejected); many are a binary file or UTF-16
    # without a BOM.
    controls = sum(head.count(byte) for byte in _CONTROL_BYTES)
    if controls > max(4, len(head) // 100):
        raise ImportFileError(
            f"{path}: a binary file, not CSV or XLSX", hint="export the list as CSV or XLSX"
        )
    # UTF-8 is self-checking: Windows-1252 text with ë or é is (almost) never valid UTF-8, so a file
    # that decodes as UTF-8 from start to end is UTF-8, and otherwise Excel's Windows-1252.
    if _decodes(path, "utf-8") is None:
        return "utf-8"
    failure = _decodes(path, "cp1252")
    if failure is not None:
        raise ImportFileError(
            f"{path}: neither UTF-8 nor Windows-1252 text ({failure})",
            hint="save it from Excel as 'CSV UTF-8' or export it as XLSX",
        )
    utf8_line = _utf8_letter_line(path)
    if utf8_line is not None:
        # "Ã«" where "ë" was meant: part of the file was saved as UTF-8 and part as Windows-1252 (a list
        # edited in two programs). Reading it either way would garble names.
        raise ImportFileError(
            f"{path}: mixes UTF-8 (line {utf8_line}) and Windows-1252 ({_decodes(path, 'utf-8')})",
            hint="open it in Excel, correct the names and save it again as 'CSV UTF-8'",
        )
    return "cp1252"


def _decodes(path: Path, encoding: str) -> str | None:
    """None when the whole file decodes; otherwise where it fails, as 'byte 0x81 at line 17'."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 1
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                bad = chunk[exc.start] if exc.start < len(chunk) else 0
                line = lines + chunk[: exc.start].count(b"\n")
                return f"byte 0x{bad:02X} at line {line}"
            lines += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "the file ends in the middle of a character"
    return None


_UTF8_LATIN = re.compile(rb"\xc3[\x80-\xbf]")  # UTF-8 for À-ÿ; as Windows-1252 "Ã" + a symbol


def _utf8_letter_line(path: Path) -> int | None:
    """The line of the first UTF-8 encoded accented letter in a file that is not UTF-8 as a whole."""
    lines = 1
    tail = b""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            data = tail + chunk
            found = _UTF8_LATIN.search(data)
            if found is not None:
                return lines + data[: found.start()].count(b"\n")
            lines += data[:-1].count(b"\n")
            tail = data[-1:]
    return None


def _sniff_delimiter(sample: str) -> str:
    """The candidate that splits the first records into the most consistent number of fields (> 1)."""
    lines = sample.splitlines()[:-1] or sample.splitlines()  # the last line of a sample may be cut off
    best = (0, 0, ",")
    for delimiter in DELIMITERS:
        widths = Counter(len(r) for r in csv.reader(io.StringIO("\n".join(lines[:50])), delimiter=delimiter))
        widths.pop(1, None)
        widths.pop(0, None)
        if not widths:
            continue
        width, count = widths.most_common(1)[0]
        best = max(best, (count, width, delimiter))
    return best[2]


def _open_csv(path: Path, size: int, encoding: str, stack: ExitStack) -> Table:
    binary = stack.enter_context(path.open("rb"))
    text = stack.enter_context(io.TextIOWrapper(binary, encoding=encoding, newline=""))
    sample = text.read(_SAMPLE)
    delimiter = _sniff_delimiter(sample)
    text.seek(0)
    numbered = _Records(_Lines(text), path, encoding, delimiter)
    records = iter(numbered)
    header_row, headers = _find_header(records, str(path))
    numbered.width = len(headers)
    columns = map_columns(headers, where=f"{path}:{header_row}")

    def progress() -> float:
        return min(1.0, binary.tell() / size) if size else 1.0

    table = Table(
        path=path,
        kind="csv",
        encoding=encoding,
        delimiter=delimiter,
        sheet=None,
        header_row=header_row,
        columns=columns,
        rows=records,
        progress=progress,
    )
    table.watch_unnamed()
    return table


# Follows the file's last line. Inside a quoted field that was never closed it becomes part of that field
# (the csv module reads such a field to the end of the file without a word); otherwise it is a record of
# its own, which is dropped. A private-use character no list contains.
_END_OF_FILE = "\ue000outreach: end of file\ue000"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _Lines:
    """The file's lines for ``csv.reader``, counted, followed by ``_END_OF_FILE``."""

    def __init__(self, text: Iterator[str]) -> None:
        self._text = text
        self.count = 0  # lines handed out so far

    def __iter__(self) -> Iterator[str]:
        for line in self._text:
            self.count += 1
            yield line
        yield _END_OF_FILE


class _Records:
    """CSV records with their row numbers; a quote that is never closed refuses the whole file, naming
    the row, column and line where it opened."""

    def __init__(self, lines: _Lines, path: Path, encoding: str, delimiter: str) -> None:
        self._lines = lines
        self._encoding = encoding
        self._reader = csv.reader(lines, delimiter=delimiter)
        self._path = path
        self._delimiter = delimiter
        self.width = 0  # fields in the header, once found

    def __iter__(self) -> Iterator[tuple[int, Cells]]:
        number = 0
        first_line = 1  # the line of the file where the next record starts
        try:
            for record in self._reader:
                number += 1
                if record and _END_OF_FILE in record[-1]:
                    if record == [_END_OF_FILE]:
                        return
                    self._unclosed(number, first_line, record)
                yield number, record
                first_line = self._lines.count + 1
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                # No contacts list has a cell of 128 KiB: a quote opened in this record and swallowed
                # the lines after it.
                self._unclosed(number + 1, first_line, None)
            raise ImportFileError(f"{self._path}:{number + 1}: cannot read CSV: {exc}") from None

    def _unclosed(self, number: int, first_line: int, cells: Cells | None) -> None:
        if cells is not None:
            index = len(cells) - 1  # the field that ran to the end of the file is the last
            line = first_line + sum(len(_LINE_BREAK.findall(cell)) for cell in cells[:index])
            column = column_letter(index)
        else:
            line, column = first_line, self._opening_column(first_line)
        raise ImportFileError(
            f"{self._path}:{number}:{column}: a quote opened here is never closed (line {line} of the "
            "file), so the rest of the file reads as one field",
            hint="close the quote or remove it, then import again",
        )

    def _opening_column(self, line_number: int) -> str:
        """The column of the quoted field that does not close on line ``line_number`` (read again)."""
        with self._path.open(encoding=self._encoding, errors="replace", newline="") as fh:
            for _ in range(line_number - 1):
                fh.readline()
            text = fh.readline().rstrip("\r\n")
        field, opened = 0, 0
        quoted = closed = False
        at_start = True
        for char in text:
            if quoted:
                quoted, closed = char != '"', char == '"'
            elif closed and char == '"':  # a doubled quote inside the field
                quoted, closed = True, False
            elif char == '"' and at_start:
                quoted, opened, at_start = True, field, False
            elif char == self._delimiter:
                field, at_start, closed = field + 1, True, False
            else:
                at_start = closed = False
        return column_letter(opened)


def _find_header(records: Iterator[tuple[int, Cells]], where: str) -> tuple[int, Cells]:
    first: tuple[int, Cells] | None = None
    seen = 0
    for number, cells in records:
        if not any(cell.strip() for cell in cells):
            continue
        if first is None:
            first = (number, cells)
        if is_header_row(cells):
            return number, cells
        seen += 1
        if seen >= HEADER_SEARCH_ROWS:
            break
    if first is None:
        raise ImportFileError(f"{where}: the file has no rows")
    map_columns(first[1], where=f"{where}:{first[0]}")  # raises, naming the headers it found
    raise AssertionError("map_columns accepted a row is_header_row rejected")  # pragma: no cover


# --- XLSX --------------------------------------------------------------------------------------------


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "ja" if value else "nee"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores 363 as 363.0
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _open_xlsx(path: Path, sheet: str | None, stack: ExitStack) -> Table:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise ImportFileError(
            f"{path}: a ZIP archive but not a readable XLSX workbook ({type(exc).__name__})",
            hint="open it in Excel and save it as .xlsx or CSV",
        ) from None
    stack.callback(workbook.close)
    names = workbook.sheetnames
    if not names:
        raise ImportFileError(f"{path}: the workbook has no sheets")
    if sheet is None:
        chosen = names[0]
    else:
        matches = [n for n in names if n == sheet] or [n for n in names if n.casefold() == sheet.casefold()]
        if not matches:
            raise ImportFileError(
                f"{path}: no sheet {sheet!r}; the workbook has {', '.join(repr(n) for n in names)}"
            )
        chosen = matches[0]
    worksheet = workbook[chosen]
    total = worksheet.max_row or 0
    where = f"{path} [{chosen}]"
    done = 0
    # openpyxl keeps where the sheet lives in the archive on the read-only worksheet.
    layout = read_layout(path, str(getattr(worksheet, "_worksheet_path", "")))

    def records() -> Iterator[tuple[int, Cells]]:
        nonlocal done
        for number, values in enumerate(worksheet.iter_rows(values_only=True), start=1):
            done = number
            yield number, [_cell_text(v) for v in values]

    rows = records()
    header_row, headers = _find_header(rows, where)
    headers, note = merged_header(layout, header_row, headers, rows, where)
    columns = map_columns(headers, where=f"{where}:{header_row}")
    hidden_rows: list[int] = []

    def data_rows() -> Iterator[tuple[int, Cells]]:
        for number, cells in fill_merged_cells(layout, header_row, rows):
            if number in layout.hidden_rows and any(cell.strip() for cell in cells):
                hidden_rows.append(number)
            yield number, cells

    def progress() -> float:
        return min(1.0, done / total) if total else 0.0

    hidden_columns = [
        f"{column_letter(index)} ({headers[index].strip()})"
        for index in sorted(set(columns.positions.values()) & layout.hidden_columns)
    ]
    table = Table(
        path=path,
        kind="xlsx",
        encoding=None,
        delimiter=None,
        sheet=chosen,
        header_row=header_row,
        columns=columns,
        rows=data_rows(),
        progress=progress,
        notes=[note] if note else [],
        hidden_rows=hidden_rows,
        hidden_columns=hidden_columns,
    )
    table.watch_unnamed()
    return table
