"""How `outreach contacts import exportOO.xml` reports a register import: the reviewable summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import typer

from outreach.cli.common import err_console

if TYPE_CHECKING:  # the sync needs email-validator: loaded only when a register export is imported
    from outreach.registry.register_result import Change, RegisterResult

KINDS = ("joined", "left", "changed", "unchanged")
JOINED_LISTED = 200  # a first import joins everyone: past this, the list is in --dry-run and --json


def print_register(result: RegisterResult) -> None:
    verb = "Checked" if result.dry_run else "Imported"
    version = f"schema {result.version}" if result.version else "schema version unknown"
    typer.echo(
        f"{verb} {result.path} (government register export, {version}): {result.gemeenten} gemeenten, "
        f"{result.joined + result.changed + result.unchanged:,} offices in office"
    )
    for warning in result.warnings:
        err_console.print(f"Warning: {warning}")
    _table("role", result.by_role, totals=True)
    offices = result.joined + result.changed + result.unchanged
    if result.without_email:
        typer.echo(
            f"Without an e-mail address: {result.without_email:,} of {offices:,} offices in office "
            '(in the registry, skipped by planning: "no e-mail address")'
        )
    if result.municipalities_updated:
        would = "would be " if result.dry_run else ""
        typer.echo(
            f"Postal addresses {would}stored or changed: {result.municipalities_updated} municipalities"
        )
    if result.passed_over:
        typer.echo("Passed over:")
        for reason, count in result.passed_over.most_common():
            typer.echo(f"  {count:>7,}  {reason}")
    if result.unknown_codes:
        typer.echo(f"Gemeenten with a code outreach does not know ({len(result.unknown_codes)}):")
        for item in result.unknown_codes:
            typer.echo(f"    {item}")
    changed_places = {m: c for m, c in result.by_municipality.items() if any(c[k] for k in KINDS[:3])}
    if changed_places:
        typer.echo("Per municipality (where something joined, left or changed):")
        _table("municipality", changed_places, totals=False)
    _changes(result)
    if result.anomalies:
        typer.echo(
            f"Anomalies in the register's data ({sum(len(v) for v in result.anomalies.values())}, not fatal):"
        )
        for municipality, notes in sorted(result.anomalies.items()):
            for note in notes:
                typer.echo(f"  {municipality}: {note}")
    if result.dry_run:
        typer.echo("Dry run: nothing was written to the database.")


def _table(label: str, counts: Mapping[str, Counter[str]], *, totals: bool) -> None:
    rows = sorted(counts.items())
    width = max([len(label), *(len(name) for name, _ in rows), 5])
    typer.echo(f"  {label:<{width}}  " + "  ".join(f"{k:>9}" for k in KINDS))
    total = dict.fromkeys(KINDS, 0)
    for name, values in rows:
        numbers = [values[k] for k in KINDS]
        for k, n in zip(KINDS, numbers, strict=True):
            total[k] += n
        typer.echo(f"  {name:<{width}}  " + "  ".join(f"{n:>9,}" for n in numbers))
    if totals:
        typer.echo(f"  {'total':<{width}}  " + "  ".join(f"{total[k]:>9,}" for k in KINDS))


def _line(change: Change) -> str:
    what = f"{change.kind:<8} {change.municipality} ({change.cbs_code})  {change.role}  {change.name}"
    what += f"  [register {change.register_id}]"
    details = [f"{field}: {old} → {new}" for field, old, new in change.fields]
    if change.note:
        details.append(change.note)
    return what + (f": {'; '.join(details)}" if details else "")


def _changes(result: RegisterResult) -> None:
    joined = [c for c in result.changes if c.kind == "joined"]
    others = [c for c in result.changes if c.kind != "joined"]
    listed = joined if result.dry_run or len(joined) <= JOINED_LISTED else []
    if not (listed or others):
        if joined:
            typer.echo(f"{len(joined):,} joined (listed by --dry-run and --json)")
        return
    typer.echo("Changes:")
    for change in sorted([*listed, *others], key=lambda c: (c.kind, c.municipality, c.role, c.name)):
        typer.echo(f"  {_line(change)}")
    if joined and not listed:
        typer.echo(f"  … and {len(joined):,} joined (listed by --dry-run and --json)")
