"""`outreach contacts import`: read a council list, normalise it, upsert it into the registry.

Every data row ends in exactly one of five counts: inserted, updated, unchanged, duplicate, rejected.
The whole import is one transaction (a crash, Ctrl-C or a file that turns out unreadable leaves the
database as it was); ``dry_run`` classifies every row the same way and writes nothing.

Rows are handled in batches with bulk Core statements and lookup dictionaries built once, so 100,000
rows import in seconds in constant memory (see docs/performance.md).

Suppressions are never read for writing: an opted-out or bounced address that appears in a new list is
imported like any other row (the registry mirrors the council list) and reported as suppressed. The
Suppression row, keyed by the address's hash, keeps it out of every campaign.
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import col

from outreach.errors import DatabaseError, ImportFileError, UsageError
from outreach.models import Contact, Municipality, Role, Suppression, utcnow
from outreach.registry.columns import Column, ColumnMap, column_letter
from outreach.registry.emails import AddressChecker, InvalidAddress
from outreach.registry.keys import email_hash, email_key, fold, office_key, sort_name
from outreach.registry.names import (
    PARTICLES,
    NameParts,
    normalize_tussenvoegsel,
    normalize_voorletters,
    split_full_name,
)
from outreach.registry.reading import Table, open_table
from outreach.registry.resolve import MunicipalityResolver, Place, Unresolved
from outreach.registry.values import (
    ROLE_NAMES,
    clean,
    control_character,
    parse_aanspreekvorm,
    parse_date,
    parse_role,
)

BATCH_SIZE = 2000
_IN_CHUNK = 500  # values per IN (...) list: well inside SQLite's and PostgreSQL's parameter limits
SUPPRESSED_SHOWN = 20

# Fields an import sets and compares; an empty cell never erases what the registry already knows.
_COMPARED = (
    "email",
    "email_normalized",
    "title",
    "voorletters",
    "voornaam",
    "tussenvoegsel",
    "achternaam",
    "aanspreekvorm",
    "portfolio",
    "party",
    "term_end",
)
_GRIFFIE_NAMES = ("griffie", "raadsgriffie", "de griffie")

ProgressCallback = Callable[[int, float], None]


class RowRejected(ValueError):
    """One row cannot be imported; the message is the reason written to the rejects file, ``kind`` the
    reason without the row's details, for the summary."""

    def __init__(self, kind: str, message: str | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind


@dataclass(frozen=True)
class SuppressedRow:
    row: int
    email: str
    reason: str


@dataclass
class ImportResult:
    """What an import did (or, with ``dry_run``, would do)."""

    path: Path
    source: str
    dry_run: bool
    kind: str
    encoding: str | None
    delimiter: str | None
    sheet: str | None
    header_row: int
    columns: dict[str, str]  # registry field -> header in the file
    ignored_columns: list[str]
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicate: int = 0
    rejected: int = 0
    blank: int = 0  # entirely empty rows: not data, not counted as read
    rejects_path: Path | None = None
    reject_reasons: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)  # suppression reason -> contacts
    suppressed_rows: list[SuppressedRow] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        return self.inserted + self.updated + self.unchanged + self.duplicate + self.rejected

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Candidate:
    row: int
    cells: list[str]
    values: dict[str, Any]  # Contact column -> value
    office_key: str
    email_hash: str


class _RejectsWriter:
    """The rejects CSV, written to a temporary name and moved into place only when the import succeeds."""

    def __init__(self, path: Path, headers: Iterable[str], delimiter: str) -> None:
        self.path = path
        self._headers = list(headers)
        self._delimiter = delimiter
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self.count = 0

    def write(self, row: int, reason: str, cells: list[str]) -> None:
        if self._fh is None:
            try:
                # utf-8-sig: Excel opens a BOM-marked CSV as UTF-8 instead of guessing Windows-1252.
                self._fh = self._temp.open("w", encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise ImportFileError(
                    f"{self.path}: cannot write the rejects file: {exc.strerror}",
                    hint="name another place with --rejects PATH",
                ) from None
            self._writer = csv.writer(self._fh, delimiter=self._delimiter, lineterminator="\r\n")
            self._writer.writerow(["row", "reason", *self._headers])
        self._writer.writerow([row, reason, *cells])
        self.count += 1

    def commit(self) -> Path | None:
        if self._fh is None:
            return None
        self._fh.close()
        os.replace(self._temp, self.path)
        return self.path

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._temp.unlink(missing_ok=True)


def default_rejects_path(path: Path) -> Path:
    """Next to the input: raad.csv -> raad.rejects.csv."""
    return path.with_name(f"{path.stem}.rejects.csv")


def import_contacts(
    engine: Engine,
    path: Path,
    *,
    source: str | None = None,
    dry_run: bool = False,
    rejects_path: Path | None = None,
    sheet: str | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportResult:
    """Import one contacts file in one transaction; see the module docstring."""
    started = time.perf_counter()
    write_rejects = rejects_path is not None or not dry_run  # a dry run writes no file unless asked
    target = rejects_path or default_rejects_path(path)
    if target.resolve() == path.resolve():
        raise UsageError(f"--rejects {target} would overwrite the file being imported")
    try:
        with engine.connect() as conn, open_table(path, sheet=sheet) as table:
            if source:
                label = source
            elif sheet is not None and table.sheet is not None:
                label = f"{path.name} [{table.sheet}]"
            else:
                label = path.name
            result = ImportResult(
                path=path,
                source=label,
                dry_run=dry_run,
                kind=table.kind,
                encoding=table.encoding,
                delimiter=table.delimiter,
                sheet=table.sheet,
                header_row=table.header_row,
                columns={c.value: table.columns.header_of(c).strip() for c in table.columns.positions},
                ignored_columns=list(table.columns.ignored),
            )
            rejects = _RejectsWriter(target, table.columns.headers, table.delimiter or ";")
            try:
                with conn.begin() as tx:
                    if not conn.execute(select(func.count()).select_from(Municipality)).scalar_one():
                        raise DatabaseError(
                            "the registry has no municipalities yet", hint="run `outreach init` first"
                        )
                    _run(conn, table, result, rejects if write_rejects else None, progress, batch_size)
                    if dry_run:
                        tx.rollback()
            except BaseException:
                rejects.discard()
                raise
            result.rejects_path = rejects.commit()
    except IntegrityError as exc:
        raise DatabaseError(
            f"{path}: another import changed the same contacts at the same time ({exc.orig})",
            hint="run the import again",
        ) from None
    except OperationalError as exc:
        raise DatabaseError(f"{path}: the database refused the import: {exc.orig}") from None
    result.seconds = time.perf_counter() - started
    return result


def _run(
    conn: Connection,
    table: Table,
    result: ImportResult,
    rejects: _RejectsWriter | None,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    parser = _RowParser(table.columns, MunicipalityResolver.load(conn), table.delimiter)
    now = utcnow()
    seen: dict[str, int] = {}  # office_key -> first row: in-file duplicates
    batch: list[_Candidate] = []
    done = 0

    def reject(row: int, kind: str, reason: str, cells: list[str]) -> None:
        if kind == "duplicate":
            result.duplicate += 1
        else:
            result.rejected += 1
            result.reject_reasons[kind] += 1
        if rejects is not None:
            rejects.write(row, reason, cells)

    for row, cells in table.rows:
        if not any(cell.strip() for cell in cells):
            result.blank += 1
            continue
        done += 1
        try:
            candidate = parser.parse(row, cells)
        except RowRejected as exc:
            reject(row, exc.kind, str(exc), cells)
            continue
        first = seen.get(candidate.office_key)
        if first is not None:
            reject(
                row, "duplicate", f"duplicate of row {first}: same e-mail, municipality and functie", cells
            )
            continue
        seen[candidate.office_key] = row
        batch.append(candidate)
        if len(batch) >= batch_size:
            _apply(conn, batch, result, now)
            batch = []
            if progress is not None:
                progress(done, table.progress())
    if batch:
        _apply(conn, batch, result, now)
    if progress is not None:
        progress(done, 1.0)


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _IN_CHUNK):
        yield items[start : start + _IN_CHUNK]


def _apply(conn: Connection, batch: list[_Candidate], result: ImportResult, now: datetime) -> None:
    """Classify one batch against the database and write it with one INSERT and one UPDATE statement."""
    keys = [c.office_key for c in batch]
    existing: dict[str, dict[str, Any]] = {}
    columns = [col(Contact.id), col(Contact.office_key), *(col(getattr(Contact, f)) for f in _COMPARED)]
    for chunk in _chunks(keys):
        for found in conn.execute(select(*columns).where(col(Contact.office_key).in_(chunk))).mappings():
            existing[found["office_key"]] = dict(found)
    suppressed: dict[str, str] = {}
    hashes = sorted({c.email_hash for c in batch})
    for chunk in _chunks(hashes):
        rows = conn.execute(
            select(col(Suppression.key_hash), col(Suppression.reason)).where(
                col(Suppression.key_hash).in_(chunk)
            )
        )
        suppressed.update((r[0], r[1]) for r in rows)

    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for candidate in batch:
        old = existing.get(candidate.office_key)
        values = candidate.values
        if old is None:
            inserts.append(
                values
                | {
                    "office_key": candidate.office_key,
                    "email_hash": candidate.email_hash,
                    "source": result.source,
                    "imported_at": now,
                    "updated_at": now,
                    "active": True,
                }
            )
            result.inserted += 1
        else:
            merged = {f: values[f] if values[f] is not None else old[f] for f in _COMPARED}
            if merged == {f: old[f] for f in _COMPARED}:
                result.unchanged += 1
            else:
                updates.append(
                    {f"b_{k}": v for k, v in merged.items()}
                    | {
                        "b_id": old["id"],
                        "b_sort_name": sort_name(merged["achternaam"], merged["tussenvoegsel"]),
                        "b_source": result.source,
                        "b_updated_at": now,
                    }
                )
                result.updated += 1
        reason = suppressed.get(candidate.email_hash)
        if reason is not None:
            result.suppressed[reason] += 1
            if len(result.suppressed_rows) < SUPPRESSED_SHOWN:
                result.suppressed_rows.append(
                    SuppressedRow(candidate.row, values["email_normalized"], reason)
                )
    if inserts:
        conn.execute(insert(Contact), inserts)
    if updates:
        assignments: dict[str, Any] = {f: bindparam(f"b_{f}") for f in (*_COMPARED, "sort_name", "source")}
        assignments |= {"updated_at": bindparam("b_updated_at"), "active": True}
        conn.execute(update(Contact).where(col(Contact.id) == bindparam("b_id")).values(assignments), updates)


class _RowParser:
    """Turns the cells of one row into Contact values, or raises RowRejected with the reason."""

    def __init__(self, columns: ColumnMap, resolver: MunicipalityResolver, delimiter: str | None) -> None:
        self.columns = columns
        self.resolver = resolver
        self.addresses = AddressChecker()
        self.width = len(columns.headers)
        self.delimiter = delimiter
        self._fields = [
            (c, i, columns.headers[i].strip() or column_letter(i)) for c, i in columns.positions.items()
        ]
        self._has_place = (
            Column.MUNICIPALITY in columns.positions or Column.MUNICIPALITY_CODE in columns.positions
        )

    def parse(self, row: int, cells: list[str]) -> _Candidate:
        if len(cells) > self.width and any(c.strip() for c in cells[self.width :]):
            hint = f": a {self.delimiter!r} inside a value that is not quoted?" if self.delimiter else ""
            raise RowRejected("too many fields", f"{len(cells)} fields but the header has {self.width}{hint}")
        v: dict[Column, str] = {}
        for column, index, header in self._fields:
            raw = cells[index] if index < len(cells) else ""
            bad = control_character(raw)
            if bad is not None:
                raise RowRejected("control character", f"{bad} in column {column_letter(index)} ({header})")
            v[column] = clean(raw)

        email = v[Column.EMAIL]
        if email[:7].casefold() == "mailto:":
            email = email[7:].strip()
        if not email:
            raise RowRejected("no e-mail address")
        if any(sep in email for sep in (";", ",", " ")) and email.count("@") > 1:
            raise RowRejected(
                "more than one e-mail address",
                f"more than one e-mail address in {email!r}: one row per address",
            )
        try:
            normalized = self.addresses.normalize(email)
        except InvalidAddress as exc:
            raise RowRejected("invalid e-mail address", f"invalid e-mail address {email!r}: {exc}") from None

        role_text = v[Column.ROLE]
        if not role_text:
            raise RowRejected("no Functie")
        parsed_role = parse_role(role_text)
        if parsed_role is None:
            raise RowRejected(
                "unknown Functie", f"unknown Functie {role_text!r}; expected one of {ROLE_NAMES}"
            )
        role, role_portfolio = parsed_role

        place = self._place(v, role)
        names = self._names(v, role)
        aanspreekvorm = (
            (parse_aanspreekvorm(v[Column.AANHEF]) if v.get(Column.AANHEF) else None)
            or (parse_aanspreekvorm(v[Column.GENDER], gender_column=True) if v.get(Column.GENDER) else None)
            or names.aanspreekvorm
        )
        term_end: date | None = None
        if v.get(Column.TERM_END):
            term_end = parse_date(v[Column.TERM_END])
            if term_end is None:
                raise RowRejected(
                    "invalid Einde termijn",
                    f"Einde termijn {v[Column.TERM_END]!r} is not a date like 31-03-2030",
                )

        key = email_key(normalized)
        values: dict[str, Any] = {
            "municipality_id": place.id if place else None,
            "role": role.value,
            "email": email,
            "email_normalized": normalized,
            "email_key": key,
            "title": v.get(Column.TITLE) or names.title,
            "voorletters": names.voorletters,
            "voornaam": names.voornaam,
            "tussenvoegsel": names.tussenvoegsel,
            "achternaam": names.achternaam,
            "aanspreekvorm": aanspreekvorm,
            "portfolio": v.get(Column.PORTFOLIO) or role_portfolio,
            "party": v.get(Column.PARTY) or None,
            "term_end": term_end,
            "sort_name": sort_name(names.achternaam, names.tussenvoegsel),
        }
        return _Candidate(
            row=row,
            cells=cells,
            values=values,
            office_key=office_key(key, place.cbs_code if place else None, role.value),
            email_hash=email_hash(key),
        )

    def _place(self, v: dict[Column, str], role: Role) -> Place | None:
        code = v.get(Column.MUNICIPALITY_CODE, "")
        name = v.get(Column.MUNICIPALITY, "")
        if not code and not name:
            if role is Role.SUPPORTER:
                return None
            where = "the Gemeente cell is empty" if self._has_place else "the file has no Gemeente column"
            raise RowRejected("no municipality", f"no municipality for a {role.value}: {where}")
        try:
            return self.resolver.resolve(code, name, v.get(Column.PROVINCE, ""))
        except Unresolved as exc:
            raise RowRejected(exc.kind, str(exc)) from None

    def _names(self, v: dict[Column, str], role: Role) -> NameParts:
        achternaam = v.get(Column.ACHTERNAAM) or None
        tussenvoegsel = (
            normalize_tussenvoegsel(v[Column.TUSSENVOEGSEL]) if v.get(Column.TUSSENVOEGSEL) else None
        )
        given = NameParts(
            title=v.get(Column.TITLE) or None,
            voorletters=normalize_voorletters(v[Column.VOORLETTERS]) if v.get(Column.VOORLETTERS) else None,
            voornaam=v.get(Column.VOORNAAM) or None,
            tussenvoegsel=tussenvoegsel,
            achternaam=achternaam,
        )
        full = v.get(Column.FULL_NAME, "")
        if role is Role.GRIFFIE and fold(full).startswith(_GRIFFIE_NAMES):
            full = ""  # "Griffie Utrecht" names the mailbox, not a person
        if achternaam is None and full:
            split = split_full_name(full)
            return NameParts(
                title=given.title or split.title,
                voorletters=given.voorletters or split.voorletters,
                voornaam=given.voornaam or split.voornaam,
                tussenvoegsel=given.tussenvoegsel or split.tussenvoegsel,
                achternaam=split.achternaam,
                aanspreekvorm=split.aanspreekvorm,
            )
        if achternaam is not None:
            # "van der Berg" in Achternaam: keep the particle in tussenvoegsel only.
            if tussenvoegsel and fold(achternaam).startswith(fold(tussenvoegsel) + " "):
                achternaam = achternaam[len(tussenvoegsel) + 1 :].strip()
            elif tussenvoegsel is None and achternaam.split(maxsplit=1)[0].casefold() in PARTICLES:
                split = split_full_name(f"X {achternaam}")
                if split.tussenvoegsel and split.achternaam:
                    tussenvoegsel, achternaam = split.tussenvoegsel, split.achternaam
        return NameParts(
            title=given.title,
            voorletters=given.voorletters,
            voornaam=given.voornaam,
            tussenvoegsel=tussenvoegsel,
            achternaam=achternaam,
        )
