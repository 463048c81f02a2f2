"""Every CSV file outreach writes goes through here, so that none can run as a spreadsheet formula.

A cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return, which some
spreadsheets skip before looking) is a formula to Excel and LibreOffice: a party called
``=HYPERLINK("https://…", "D66")`` in an imported list would become a link in the report, and worse
(CSV injection, OWASP). Such a cell is written with a leading apostrophe, which the spreadsheet shows as
text and hides; numbers stay numbers. tests/test_csv_files.py checks every writer, and that no module
outside this one calls ``csv.writer``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import IO, Any

#: What makes a spreadsheet read a cell as a formula (OWASP's list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> object:
    """``value`` as a cell that a spreadsheet shows as text, never evaluates."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class SafeWriter:
    """``csv.writer`` whose every text cell is ``neutralise``d."""

    def __init__(self, fh: IO[str], **dialect: Any) -> None:
        self._writer = csv.writer(fh, **dialect)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow([neutralise(cell) for cell in row])

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        for row in rows:
            self.writerow(row)


def writer(fh: IO[str], **dialect: Any) -> SafeWriter:
    """The one way outreach writes CSV: ``csv.writer``'s arguments, formulas neutralised."""
    return SafeWriter(fh, **dialect)
