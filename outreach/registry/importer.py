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

import contextlib
import errno
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from outreach import csvfiles
from outreach.errors import DatabaseError, ImportFileError, UsageError
from outreach.models import Municipality, Role, utcnow
from outreach.registry.columns import Column, ColumnMap, column_letter
from outreach.registry.emails import AddressChecker, InvalidAddress
from outreach.registry.keys import email_hash, email_key, fold, office_key, sort_name
from outreach.registry.names import (
    PARTICLES,
    normalize_tussenvoegsel,
    normalize_voorletters,
    split_full_name,
)
from outreach.registry.reading import Table, open_table
from outreach.registry.resolve import MunicipalityResolver, Place, Unresolved
from outreach.registry.store import COMPARED, ContactStore, contact_store
from outreach.registry.values import (
    CONTROL_CHARS,
    ROLE_NAMES,
    clean,
    control_character,
    parse_aanspreekvorm,
    parse_date,
    parse_role,
)

BATCH_SIZE = 2000
SUPPRESSED_SHOWN = 20
SQLITE_IMPORT_CACHE_KIB = 32 * 1024

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
    notes: list[str] = field(default_factory=list)  # how a merged header was read
    hidden_rows: list[int] = field(default_factory=list)  # rows hidden in the sheet (imported)
    hidden_columns: list[str] = field(default_factory=list)  # read columns hidden in the sheet
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


class _BlankRow(Exception):
    """A row of nothing but spaces: not data, like an empty row."""


@dataclass(slots=True)
class _Candidate:
    row: int
    values: dict[str, Any]  # Contact column -> value
    office_key: str
    email_hash: str


class _RejectsWriter:
    """The rejects CSV, written to a temporary name and moved into place only when the import succeeds.

    ``finish`` writes the last bytes to disk before the import's transaction commits, so a full disk
    (which shows when the buffer is flushed, often only at the end) rolls the import back instead of
    leaving contacts imported without their rejects file; whatever fails, no temporary file stays.
    """

    def __init__(self, path: Path, headers: Iterable[str], delimiter: str) -> None:
        self.path = path
        self._headers = list(headers)
        self._delimiter = delimiter
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._fh: IO[str] | None = None
        self._writer: Any = None
        self.count = 0

    def _failed(self, exc: OSError) -> ImportFileError:
        self.discard()
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        return ImportFileError(
            f"{self.path}: cannot write the rejects file: {exc.strerror or exc}",
            hint="nothing was imported; "
            + ("free some space, or " if full else "")
            + "name another place with --rejects PATH",
        )

    def write(self, row: int, reason: str, cells: list[str]) -> None:
        try:
            if self._fh is None:
                # utf-8-sig: Excel opens a BOM-marked CSV as UTF-8 instead of guessing Windows-1252.
                self._fh = self._temp.open("w", encoding="utf-8-sig", newline="")
                self._writer = csvfiles.writer(self._fh, delimiter=self._delimiter, lineterminator="\r\n")
                self._writer.writerow(["row", "reason", *self._headers])
            self._writer.writerow([row, reason, *cells])
        except OSError as exc:
            raise self._failed(exc) from None
        self.count += 1

    def finish(self) -> None:
        """Everything written on disk (flushed, fsynced, closed); raises ImportFileError if not."""
        if self._fh is None:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            raise self._failed(exc) from None

    def commit(self) -> Path | None:
        if self._fh is None:
            return None
        try:
            os.replace(self._temp, self.path)
        except OSError as exc:
            raise ImportFileError(
                f"{self.path}: the import is done, but the rejects file could not be put in place: "
                f"{exc.strerror}; it is in {self._temp}"
            ) from None
        return self.path

    def discard(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):  # the disk may still be full: closing flushes
                self._fh.close()
            self._fh = None
        with contextlib.suppress(OSError):
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
    written = [False]  # set once the transaction has committed
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
                notes=table.notes,
                hidden_rows=table.hidden_rows,
                hidden_columns=table.hidden_columns,
            )
            rejects = _RejectsWriter(target, table.columns.headers, table.delimiter or ";")
            sqlite = conn.dialect.name == "sqlite"
            if sqlite:
                # Inserting into the indexes on random keys (email_key, email_hash, office_key)
                # outgrows SQLite's default 2 MB page cache; 32 MB for this connection (reset afterwards)
                # measured a quarter faster on 100k rows.
                _sqlite_pragma(conn, f"cache_size=-{SQLITE_IMPORT_CACHE_KIB}")
            try:
                with conn.begin() as tx:
                    if not conn.execute(select(func.count()).select_from(Municipality)).scalar_one():
                        raise DatabaseError(
                            "the registry has no municipalities yet", hint="run `outreach init` first"
                        )
                    _run(conn, table, result, rejects if write_rejects else None, progress, batch_size)
                    if result.rows_read == 0:
                        raise ImportFileError(f"{table.where}: the file has a header but no rows")
                    rejects.finish()  # on disk before the commit: a full disk rolls the import back
                    result.ignored_columns = table.ignored_columns  # now that every row has been seen
                    # Ctrl-C and SIGTERM wait while the import commits and its rejects file takes its
                    # name: an interrupted import has then either written nothing or everything.
                    with _signals_held():
                        if dry_run:
                            tx.rollback()  # nothing was written; release the lock without a commit
                        else:
                            tx.commit()
                            written[0] = True
                        result.rejects_path = rejects.commit()
            except BaseException:
                if not written[0]:
                    rejects.discard()
                raise
            finally:
                if sqlite:
                    _sqlite_pragma(conn, "cache_size=-2000")  # SQLite's default, for the pool
    except IntegrityError as exc:
        raise DatabaseError(
            f"{path}: another import changed the same contacts at the same time ({exc.orig})",
            hint="run the import again",
        ) from None
    except OperationalError as exc:
        raise DatabaseError(f"{path}: the database refused the import: {exc.orig}") from None
    except KeyboardInterrupt as exc:
        raise ImportStopped(exc, written=written[0]) from None
    result.seconds = time.perf_counter() - started
    return result


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the import rolls back and cleans up (see the CLI)."""


class ImportStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM ended an import; ``written`` says whether it had committed first."""

    def __init__(self, cause: KeyboardInterrupt, *, written: bool) -> None:
        super().__init__()
        self.by_sigterm = isinstance(cause, Terminated)
        self.written = written


@contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM are delivered after the block, not inside it (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # On the driver connection: through SQLAlchemy the PRAGMA would open the import's transaction early.
    conn.connection.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]


def _run(
    conn: Connection,
    table: Table,
    result: ImportResult,
    rejects: _RejectsWriter | None,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    # One thread on purpose. A writer thread beside the parser was tried and measured: Python's
    # sqlite3 releases the GIL only while SQLite steps one row, so the two threads take turns rather
    # than overlap (wall time equal to CPU time, no faster than this).
    parser = _RowParser(table.columns, MunicipalityResolver.load(conn), table.delimiter)
    store = contact_store(conn, source=result.source, now=utcnow())
    _parse_rows(
        table, parser, lambda batch: _apply(conn, batch, result, store), result, rejects, progress, batch_size
    )


def _parse_rows(
    table: Table,
    parser: _RowParser,
    apply: Callable[[list[_Candidate]], None],
    result: ImportResult,
    rejects: _RejectsWriter | None,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    seen: dict[str, int] = {}  # office_key -> first row: in-file duplicates
    batch: list[_Candidate] = []
    done = 0
    next_report = batch_size

    def reject(row: int, kind: str, reason: str, cells: list[str]) -> None:
        if kind == "duplicate":
            result.duplicate += 1
        else:
            result.rejected += 1
            result.reject_reasons[kind] += 1
        if rejects is not None:
            rejects.write(row, reason, cells)

    for row, cells in table.rows:
        if not any(cells):
            result.blank += 1
            continue
        try:
            candidate = parser.parse(row, cells)
        except _BlankRow:
            result.blank += 1
            continue
        except RowRejected as exc:
            reject(row, exc.kind, str(exc), cells)
        else:
            first = seen.get(candidate.office_key)
            if first is not None:
                reason = f"duplicate of row {first}: same e-mail, municipality and functie"
                reject(row, "duplicate", reason, cells)
            else:
                seen[candidate.office_key] = row
                batch.append(candidate)
                if len(batch) >= batch_size:
                    apply(batch)
                    batch = []
        done += 1
        if progress is not None and done >= next_report:
            progress(done, table.progress())
            next_report += batch_size
    if batch:
        apply(batch)
    if progress is not None:
        progress(done, 1.0)


_compared_values = itemgetter(*COMPARED)


def _apply(conn: Connection, batch: list[_Candidate], result: ImportResult, store: ContactStore) -> None:
    """Classify one batch against the database and (unless a dry run) write it with one INSERT and one
    UPDATE statement. In-file duplicates never reach here, so a dry run classifies exactly as a real one."""
    existing = store.existing(conn, [c.office_key for c in batch])
    suppressed = store.suppressed(conn, sorted({c.email_hash for c in batch}))

    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for candidate in batch:
        values = candidate.values
        old = existing.get(candidate.office_key)
        if old is None:
            values["office_key"] = candidate.office_key
            values["email_hash"] = candidate.email_hash
            inserts.append(values)
            result.inserted += 1
        else:
            known = old[2:]
            merged = tuple(
                new if new is not None else was
                for new, was in zip(_compared_values(values), known, strict=True)
            )
            if merged == known:
                result.unchanged += 1
            else:
                change = dict(zip(COMPARED, merged, strict=True))
                updates.append(
                    {f"b_{k}": v for k, v in change.items()}
                    | {
                        "b_id": old[0],
                        "b_sort_name": sort_name(change["achternaam"], change["tussenvoegsel"]),
                        "b_source": store.source,
                        "b_updated_at": store.now,
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
    if result.dry_run:
        return
    if inserts:
        store.insert(conn, inserts)
    if updates:
        store.update(conn, updates)


# Plain-string keys for the per-row dictionaries: a StrEnum member hashes through Python code, a str in C.
_FULL_NAME = Column.FULL_NAME.value
_TITLE = Column.TITLE.value
_VOORLETTERS = Column.VOORLETTERS.value
_VOORNAAM = Column.VOORNAAM.value
_TUSSENVOEGSEL = Column.TUSSENVOEGSEL.value
_ACHTERNAAM = Column.ACHTERNAAM.value
_ROLE = Column.ROLE.value
_PORTFOLIO = Column.PORTFOLIO.value
_PARTY = Column.PARTY.value
_EMAIL = Column.EMAIL.value
_MUNICIPALITY = Column.MUNICIPALITY.value
_MUNICIPALITY_CODE = Column.MUNICIPALITY_CODE.value
_PROVINCE = Column.PROVINCE.value
_AANHEF = Column.AANHEF.value
_GENDER = Column.GENDER.value
_TERM_END = Column.TERM_END.value

# No name, party or role is longer than this; a longer cell is an error in the list (a pasted text, a
# merged row), and a name of 2,000 characters made mail headers that servers refuse. The e-mail
# address has its own limit (254, RFC 5321) in the address check; a portfolio may list many subjects.
MAX_CELL = 200
_MAX_CELL_OF = {_EMAIL: 320, _PORTFOLIO: 500}

_Names = tuple[str | None, str | None, str | None, str | None, str | None, str | None]
_sort_name = lru_cache(maxsize=65536)(sort_name)  # surnames repeat: Jansen, de Vries, Bakker


class _RowParser:
    """Turns the cells of one row into Contact values, or raises RowRejected with the reason."""

    def __init__(self, columns: ColumnMap, resolver: MunicipalityResolver, delimiter: str | None) -> None:
        self.resolver = resolver
        self.addresses = AddressChecker()
        self.width = len(columns.headers)
        self.delimiter = delimiter
        mapped = sorted(columns.positions.items(), key=lambda item: item[1])
        self._keys = [column.value for column, _ in mapped]
        self._indices = [index for _, index in mapped]
        self._headers = [columns.headers[index].strip() or column_letter(index) for _, index in mapped]
        self._absent = {column.value: "" for column in Column if column not in columns.positions}
        self._has_place = (
            Column.MUNICIPALITY in columns.positions or Column.MUNICIPALITY_CODE in columns.positions
        )

    def parse(self, row: int, cells: list[str]) -> _Candidate:
        width = self.width
        if len(cells) != width:
            if len(cells) > width and any(c.strip() for c in cells[width:]):
                hint = f": a {self.delimiter!r} inside a value that is not quoted?" if self.delimiter else ""
                raise RowRejected("too many fields", f"{len(cells)} fields but the header has {width}{hint}")
            cells = cells[:width] + [""] * (width - len(cells))
        raw = [cells[i] for i in self._indices]
        joined = "".join(raw)
        if not joined.strip() and not "".join(cells).strip():
            raise _BlankRow
        if CONTROL_CHARS.search(joined) is not None:
            for value, index, header in zip(raw, self._indices, self._headers, strict=True):
                bad = control_character(value)
                if bad is not None:
                    raise RowRejected(
                        "control character", f"{bad} in column {column_letter(index)} ({header})"
                    )
        # One check for the whole row: most rows need no more than stripping.
        if "  " in joined or not joined.isprintable():
            v = dict(zip(self._keys, map(clean, raw), strict=True))
        else:
            v = dict(zip(self._keys, map(str.strip, raw), strict=True))
        if len(joined) > MAX_CELL:
            self._check_lengths(v)
        v.update(self._absent)

        email = v[_EMAIL]
        if email[:7].casefold() == "mailto:":
            email = email[7:].strip()
        if not email:
            raise RowRejected("no e-mail address")
        if email.count("@") > 1 and any(sep in email for sep in (";", ",", " ")):
            raise RowRejected(
                "more than one e-mail address",
                f"more than one e-mail address in {email!r}: one row per address",
            )
        try:
            normalized = self.addresses.normalize(email)
        except InvalidAddress as exc:
            raise RowRejected("invalid e-mail address", f"invalid e-mail address {email!r}: {exc}") from None

        role_text = v[_ROLE]
        if not role_text:
            raise RowRejected("no Functie")
        parsed_role = parse_role(role_text)
        if parsed_role is None:
            raise RowRejected(
                "unknown Functie", f"unknown Functie {role_text!r}; expected one of {ROLE_NAMES}"
            )
        role, role_portfolio = parsed_role
        role_value = role.value

        place = self._place(v, role)
        title, voorletters, voornaam, tussenvoegsel, achternaam, named_aanspreekvorm = self._names(v, role)
        aanspreekvorm = (
            (parse_aanspreekvorm(v[_AANHEF]) if v[_AANHEF] else None)
            or (parse_aanspreekvorm(v[_GENDER], gender_column=True) if v[_GENDER] else None)
            or named_aanspreekvorm
        )
        term_end: date | None = None
        if v[_TERM_END]:
            term_end = parse_date(v[_TERM_END])
            if term_end is None:
                raise RowRejected(
                    "invalid Einde termijn",
                    f"Einde termijn {v[_TERM_END]!r} is not a date like 31-03-2030",
                )

        key = email_key(normalized)
        values: dict[str, Any] = {
            "municipality_id": place.id if place else None,
            "role": role_value,
            "email": email,
            "email_normalized": normalized,
            "email_key": key,
            "title": title,
            "voorletters": voorletters,
            "voornaam": voornaam,
            "tussenvoegsel": tussenvoegsel,
            "achternaam": achternaam,
            "aanspreekvorm": aanspreekvorm,
            "portfolio": v[_PORTFOLIO] or role_portfolio,
            "party": v[_PARTY] or None,
            "term_end": term_end,
            "sort_name": _sort_name(achternaam, tussenvoegsel),
        }
        return _Candidate(
            row=row,
            values=values,
            office_key=office_key(key, place.cbs_code if place else None, role_value),
            email_hash=email_hash(key),
        )

    def _check_lengths(self, v: dict[str, str]) -> None:
        for key, index, header in zip(self._keys, self._indices, self._headers, strict=True):
            limit = _MAX_CELL_OF.get(key, MAX_CELL)
            if len(v[key]) > limit:
                raise RowRejected(
                    "value too long",
                    f"column {column_letter(index)} ({header}) is {len(v[key])} characters long;"
                    f" at most {limit}",
                )

    def _place(self, v: dict[str, str], role: Role) -> Place | None:
        code = v[_MUNICIPALITY_CODE]
        name = v[_MUNICIPALITY]
        if not code and not name:
            if role is Role.SUPPORTER:
                return None
            where = "the Gemeente cell is empty" if self._has_place else "the file has no Gemeente column"
            raise RowRejected("no municipality", f"no municipality for a {role.value}: {where}")
        try:
            return self.resolver.resolve(code, name, v[_PROVINCE])
        except Unresolved as exc:
            raise RowRejected(exc.kind, str(exc)) from None

    def _names(self, v: dict[str, str], role: Role) -> _Names:
        """(title, voorletters, voornaam, tussenvoegsel, achternaam, aanspreekvorm from the name)."""
        achternaam = v[_ACHTERNAAM] or None
        tussenvoegsel = normalize_tussenvoegsel(v[_TUSSENVOEGSEL]) if v[_TUSSENVOEGSEL] else None
        title = v[_TITLE] or None
        voorletters = normalize_voorletters(v[_VOORLETTERS]) if v[_VOORLETTERS] else None
        voornaam = v[_VOORNAAM] or None
        full = v[_FULL_NAME]
        if full and role is Role.GRIFFIE and fold(full).startswith(_GRIFFIE_NAMES):
            full = ""  # "Griffie Utrecht" names the mailbox, not a person
        if achternaam is None and full:
            split = split_full_name(full)
            return (
                title or split.title,
                voorletters or split.voorletters,
                voornaam or split.voornaam,
                tussenvoegsel or split.tussenvoegsel,
                split.achternaam,
                split.aanspreekvorm,
            )
        if achternaam is not None:
            # "van der Berg" in Achternaam: keep the particle in tussenvoegsel only.
            if tussenvoegsel:
                if achternaam.casefold().startswith(tussenvoegsel.casefold() + " "):
                    achternaam = achternaam[len(tussenvoegsel) + 1 :].strip()
            elif achternaam.split(maxsplit=1)[0].casefold() in PARTICLES:
                split = split_full_name(f"X {achternaam}")
                if split.tussenvoegsel and split.achternaam:
                    tussenvoegsel, achternaam = split.tussenvoegsel, split.achternaam
        return (title, voorletters, voornaam, tussenvoegsel, achternaam, None)
