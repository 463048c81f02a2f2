"""`outreach init` and `outreach contacts import|list|show`: the registry's commands."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from outreach.cli.common import app_context, contacts_app, echo_json, err_console
from outreach.errors import UsageError
from outreach.registry.bootstrap import initialise
from outreach.registry.query import ContactView, address_label, list_contacts, role_label, show_contact

if TYPE_CHECKING:
    from outreach.registry.importer import ImportResult, ProgressCallback

HIDDEN_ROWS_SHOWN = 20
PROGRESS_AFTER_ROWS = 2000  # small lists finish before a bar would be worth drawing


def init(ctx: typer.Context) -> None:
    """Create or upgrade the database and load the 342 municipalities (safe to run again)."""
    result = initialise(app_context(ctx).settings.database_url)
    if result.created:
        typer.echo(f"Created database {result.database}")
    elif result.migrations:
        typer.echo(f"Upgraded database {result.database}: {', '.join(result.migrations)}")
    else:
        typer.echo(f"Database {result.database} is up to date")
    loaded = result.municipalities
    typer.echo(
        f"Municipalities: {loaded.total} from {result.reference.name} "
        f"({loaded.inserted} added, {loaded.updated} checked or updated)"
    )


@contextmanager
def _progress_bar() -> Iterator[ProgressCallback]:
    """A bar on stderr that appears once an import passes PROGRESS_AFTER_ROWS rows."""
    bar: Progress | None = None
    task: TaskID | None = None

    def report(rows: int, fraction: float) -> None:
        nonlocal bar, task
        if bar is None:
            if rows < PROGRESS_AFTER_ROWS or fraction >= 1.0:
                return
            bar = Progress(
                TextColumn("Importing"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%  {task.fields[rows]:,} rows"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            bar.start()
            task = bar.add_task("import", total=1.0, rows=rows)
        assert task is not None
        bar.update(task, completed=fraction, rows=rows)

    try:
        yield report
    finally:
        if bar is not None:
            bar.stop()


def import_command(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="The list: CSV (; , or tab; UTF-8 or Windows-1252) or XLSX; or the government "
            "register's exportOO.xml (told apart by content)."
        ),
    ],
    source: Annotated[
        str | None,
        typer.Option("--source", help="Provenance stored on each contact (default: the file name)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check everything, report, write nothing.")
    ] = False,
    rejects: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="Where to write rejected rows (default: FILE.rejects.csv next to FILE)."
        ),
    ] = None,
    sheet: Annotated[
        str | None, typer.Option("--sheet", help="The XLSX sheet to read (default: the first).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The summary as one JSON document on stdout.")
    ] = False,
) -> None:
    """Import a council list or the government register's export: new people are added, known ones
    updated, every row accounted for; a newer register export marks who left office."""
    if _is_register_export(file):
        for flag, value in (("--source", source), ("--rejects", rejects), ("--sheet", sheet)):
            if value is not None:
                raise UsageError(f"{flag} does not apply to a register export ({file})")
        from outreach.cli.register import print_register
        from outreach.registry.register_sync import import_register

        outcome = import_register(app_context(ctx).engine(), file, dry_run=dry_run)
        if as_json:
            echo_json(outcome.as_json())
        else:
            print_register(outcome)
        return
    engine = app_context(ctx).engine()
    from outreach.registry.importer import ImportStopped, import_contacts  # email-validator, openpyxl

    try:
        with _sigterm_as_interrupt(), _progress_bar() as progress:
            result = import_contacts(
                engine,
                file,
                source=source,
                dry_run=dry_run,
                rejects_path=rejects,
                sheet=sheet,
                progress=progress,
            )
    except ImportStopped as stopped:
        how = "SIGTERM" if stopped.by_sigterm else "Ctrl-C"
        if stopped.written:
            sys.stderr.write(f"Import stopped ({how}) after it had finished: everything was written.\n")
        else:
            sys.stderr.write(
                f"Import stopped ({how}): nothing was written; the database is as it was and there is no "
                "rejects file.\n"
            )
        raise typer.Exit(143 if stopped.by_sigterm else 130) from None
    if as_json:
        echo_json(_import_json(result))
    else:
        _print_import(result)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` (a KeyboardInterrupt) in the import, as Ctrl-C does: its transaction
    rolls back and its temporary rejects file is removed, where the default action would just end the
    process."""
    from outreach.registry.importer import Terminated

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _is_register_export(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError:
        return False  # the CSV reader says what is wrong with the path
    from outreach.registry.register import is_register_export

    return is_register_export(head)


def _import_json(result: ImportResult) -> dict[str, object]:
    document = asdict(result)
    document["rows_read"] = result.rows_read
    document["kind"] = result.kind
    return document


def _print_import(result: ImportResult) -> None:
    if result.kind == "xlsx":
        read_as = f"sheet {result.sheet!r}"
    else:
        delimiter = {"\t": "tab", ";": "';'", ",": "','"}.get(result.delimiter or "", repr(result.delimiter))
        encoding = {"cp1252": "Windows-1252", "utf-8-sig": "UTF-8 with BOM", "utf-8": "UTF-8"}.get(
            result.encoding or "", result.encoding
        )
        read_as = f"{encoding}, {delimiter}-separated"
    verb = "Checked" if result.dry_run else "Imported"
    typer.echo(
        f"{verb} {result.path} ({read_as}, header on row {result.header_row}), source {result.source!r}"
    )
    would = "would be " if result.dry_run else ""
    lines = [
        (f"{would}inserted", result.inserted),
        (f"{would}updated", result.updated),
        ("unchanged", result.unchanged),
        ("duplicate", result.duplicate),
        ("rejected", result.rejected),
    ]
    width = max(len(label) for label, _ in lines)
    for label, count in lines:
        typer.echo(f"  {label:<{width}}  {count:>9,}")
    typer.echo(f"  {'rows read':<{width}}  {result.rows_read:>9,}")
    if result.blank:
        typer.echo(f"  ({result.blank:,} empty rows skipped)")
    for kind, count in result.reject_reasons.most_common():
        typer.echo(f"    {count:>6,}  {kind}")
    if result.rejects_path is not None:
        typer.echo(f"Rejected and duplicate rows, with row number and reason: {result.rejects_path}")
    elif result.rejected or result.duplicate:
        typer.echo("Rejected rows were not written (dry run); add --rejects PATH to see them.")
    if result.suppressed:
        total = sum(result.suppressed.values())
        reasons = ", ".join(f"{reason} {count}" for reason, count in result.suppressed.most_common())
        typer.echo(f"{total:,} of these addresses are suppressed ({reasons}): they stay suppressed.")
        for item in result.suppressed_rows:
            typer.echo(f"    row {item.row}: {item.email} ({item.reason})")
    for note in result.notes:
        typer.echo(note)
    if result.ignored_columns:
        typer.echo(f"Ignored columns: {', '.join(result.ignored_columns)}")
    if result.hidden_columns:
        typer.echo(f"Hidden columns (read like the others): {', '.join(result.hidden_columns)}")
    if result.hidden_rows:
        shown = ", ".join(str(n) for n in result.hidden_rows[:HIDDEN_ROWS_SHOWN])
        more = len(result.hidden_rows) - HIDDEN_ROWS_SHOWN
        tail = f" and {more:,} more" if more > 0 else ""
        typer.echo(f"Rows hidden in the sheet (imported like the others): {shown}{tail}")
    if result.dry_run:
        typer.echo("Dry run: nothing was written to the database.")


def _list_lines(views: list[ContactView]) -> list[str]:
    header = ("Municipality", "Role", "Name", "Party", "E-mail")
    rows = [
        (
            v.municipality or "-",
            role_label(v),
            v.name or "-",
            v.party or "-",
            address_label(v) + (f"  [suppressed: {v.suppressed}]" if v.suppressed else ""),
        )
        for v in views
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    return [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:4])) + "  " + r[4]
        for r in [header, *rows]
    ]


def list_command(
    ctx: typer.Context,
    role: Annotated[
        str | None, typer.Option("--role", help="raadslid, wethouder, burgemeester, griffie, ...")
    ] = None,
    municipality: Annotated[
        str | None, typer.Option("--municipality", help="Name, alias or CBS code (GM0363, 363).")
    ] = None,
    party: Annotated[str | None, typer.Option("--party", help="Fractie, case-insensitive.")] = None,
    province: Annotated[
        str | None, typer.Option("--province", help="Province name or code (PV27, NH).")
    ] = None,
    without_email: Annotated[
        bool,
        typer.Option("--without-email", help="Only people in office the registry has no e-mail address for."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """List contacts by municipality and surname ("van der Berg" under B)."""
    views = list_contacts(
        app_context(ctx).reader(),
        role=role,
        municipality=municipality,
        party=party,
        province=province,
        without_email=without_email,
    )
    if as_json:
        echo_json([v.as_json() for v in views])
        return
    if not views:
        err_console.print("No contacts match.")
        return
    for line in _list_lines(views):
        typer.echo(line.rstrip())
    err_console.print(f"{len(views):,} contacts")


def show_command(
    ctx: typer.Context,
    email: Annotated[
        str,
        typer.Argument(
            help="The e-mail address (any capitalisation), or register:ID for an office holder the "
            "register lists without one."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Everything the registry holds on one address: each office, provenance, suppression."""
    detail = show_contact(app_context(ctx).reader(), email)
    if as_json:
        echo_json(detail.as_json())
        return
    if detail.suppression is not None:
        s = detail.suppression
        typer.echo(
            f"{detail.email_key}: SUPPRESSED ({s['reason']}, source {s['source']}, "
            f"since {s['created_at']:%Y-%m-%d}): no letters go to this address"
        )
    for view in detail.contacts:
        typer.echo("")
        fields = [
            ("Name", " ".join(p for p in (view.title, view.name) if p) or "-"),
            ("Aanspreekvorm", view.aanspreekvorm or "- (not given)"),
            ("Role", role_label(view)),
            ("Portfolio", view.portfolio or "-"),
            ("Party", view.party or "-"),
            (
                "Municipality",
                f"{view.municipality} ({view.cbs_code}, {view.province})" if view.municipality else "-",
            ),
            (
                "E-mail",
                (
                    view.email_normalized
                    + (f" (given as {view.email})" if view.email != view.email_normalized else "")
                )
                if view.email_normalized
                else "- (none: no letter can be e-mailed)",
            ),
            ("Register id", view.register_id or "-"),
            ("Term starts", view.term_start.isoformat() if view.term_start else "-"),
            ("Term ends", view.term_end.isoformat() if view.term_end else "-"),
            ("Active", "yes" if view.active else "no"),
            ("Source", view.source),
            ("Imported", f"{view.imported_at:%Y-%m-%d %H:%M} UTC"),
            ("Updated", f"{view.updated_at:%Y-%m-%d %H:%M} UTC"),
        ]
        for label, value in fields:
            typer.echo(f"  {label:<14} {value}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("init")(init)
    contacts_app.command("import")(import_command)
    contacts_app.command("list")(list_command)
    contacts_app.command("show")(show_command)
