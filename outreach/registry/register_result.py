"""What a register import did (or, with ``dry_run``, would do): counts per role and municipality, the
offices that joined, left or changed, and what the export itself looked wrong in."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Change:
    """One office that joined, left or changed, for the review table."""

    kind: str  # "joined" | "left" | "changed"
    municipality: str
    cbs_code: str
    role: str
    name: str
    register_id: str
    fields: tuple[tuple[str, str, str], ...] = ()  # (field, old, new), for "changed"
    note: str | None = None  # "took over a hand-imported row", "gone from the export", ...

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "municipality": self.municipality,
            "cbs_code": self.cbs_code,
            "role": self.role,
            "name": self.name,
            "register_id": self.register_id,
            "changes": [{"field": f, "old": old, "new": new} for f, old, new in self.fields],
            "note": self.note,
        }


@dataclass
class RegisterResult:
    """What a register import did (or, with ``dry_run``, would do)."""

    path: Path
    dry_run: bool
    version: str | None
    warnings: list[str]
    gemeenten: int = 0  # active gemeenten matched to a municipality
    joined: int = 0
    left: int = 0
    changed: int = 0
    unchanged: int = 0
    without_email: int = 0  # offices in this export with no address in the registry
    municipalities_updated: int = 0  # postal addresses stored or changed
    changes: list[Change] = field(default_factory=list)
    by_role: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_municipality: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    passed_over: Counter[str] = field(default_factory=Counter)  # reason -> entries
    unknown_codes: list[str] = field(default_factory=list)
    anomalies: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # municipality ->
    sources: Counter[str] = field(default_factory=Counter)  # provenance -> offices
    seconds: float = 0.0

    def count(self, kind: str, role: str, municipality: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.by_role[role][kind] += 1
        self.by_municipality[municipality][kind] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "kind": "register export",
            "dry_run": self.dry_run,
            "schema_version": self.version,
            "warnings": self.warnings,
            "gemeenten": self.gemeenten,
            "joined": self.joined,
            "left": self.left,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "without_email": self.without_email,
            "municipality_addresses_updated": self.municipalities_updated,
            "by_role": {k: dict(v) for k, v in sorted(self.by_role.items())},
            "by_municipality": {k: dict(v) for k, v in sorted(self.by_municipality.items())},
            "passed_over": dict(self.passed_over.most_common()),
            "unknown_codes": self.unknown_codes,
            "anomalies": {k: v for k, v in sorted(self.anomalies.items())},
            "sources": dict(self.sources.most_common()),
            "changes": [c.as_json() for c in self.changes],
        }
