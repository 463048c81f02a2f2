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
from operator import itemgetter
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from outreach import csvfiles
from outreach.errors import DatabaseError, ImportFileError, UsageError
from outreach.models import Municipality, utcnow
from outreach.registry.keys import sort_name
from outreach.registry.reading import Table, open_table
from outreach.registry.resolve import MunicipalityResolver
from outreach.registry.row_parser import BlankRow, Candidate, RowParser, RowRejected
from outreach.registry.store import COMPARED, ContactStore, contact_store

BATCH_SIZE = 2000
SUPPRESSED_SHOWN = 20
SQLITE_IMPORT_CACHE_KIB = 32 * 1024

ProgressCallback = Callable[[int, float], None]


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
    parser = RowParser(table.columns, MunicipalityResolver.load(conn), table.delimiter)
    store = contact_store(conn, source=result.source, now=utcnow())
    _parse_rows(
        table, parser, lambda batch: _apply(conn, batch, result, store), result, rejects, progress, batch_size
    )


def _parse_rows(
    table: Table,
    parser: RowParser,
    apply: Callable[[list[Candidate]], None],
    result: ImportResult,
    rejects: _RejectsWriter | None,
    progress: ProgressCallback | None,
    batch_size: int,
) -> None:
    seen: dict[str, int] = {}  # office_key -> first row: in-file duplicates
    batch: list[Candidate] = []
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
        except BlankRow:
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


def _apply(conn: Connection, batch: list[Candidate], result: ImportResult, store: ContactStore) -> None:
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
