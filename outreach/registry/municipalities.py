"""The reference list of municipalities (CBS), loaded by `outreach init`."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, select

from outreach.db import dialect_insert
from outreach.errors import ImportFileError
from outreach.models import Municipality

REFERENCE_COLUMNS = ("gemeentecode", "gemeentenaam", "provinciecode", "provincienaam", "alias")


def default_reference_file() -> Path:
    """data/gemeenten-2026.csv of the source tree, or the copy shipped inside the package."""
    repo_copy = Path(__file__).resolve().parents[2] / "data" / "gemeenten-2026.csv"
    if repo_copy.is_file():
        return repo_copy
    return Path(str(resources.files("outreach") / "data" / "gemeenten-2026.csv"))


@dataclass(frozen=True)
class LoadResult:
    inserted: int
    updated: int
    total: int


def read_reference(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ImportFileError(f"{path}: missing column(s) {', '.join(missing)}")
            rows = []
            for lineno, row in enumerate(reader, start=2):
                code = (row["gemeentecode"] or "").strip().upper()
                if len(code) != 6 or not code.startswith("GM") or not code[2:].isdigit():
                    raise ImportFileError(f"{path}:{lineno}: gemeentecode {code!r} is not like GM0363")
                rows.append({k: (row[k] or "").strip() for k in REFERENCE_COLUMNS} | {"gemeentecode": code})
            return rows
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read: {exc.strerror}") from exc


def load_municipalities(engine: Engine, path: Path | None = None) -> LoadResult:
    """Insert or update every municipality of the reference file (by CBS code); idempotent."""
    rows = read_reference(path or default_reference_file())
    insert = dialect_insert(engine)
    with engine.begin() as conn:
        before = set(conn.execute(select(Municipality.cbs_code)).scalars())  # type: ignore[call-overload]
        values = [
            {
                "cbs_code": r["gemeentecode"],
                "name": r["gemeentenaam"],
                "province_code": r["provinciecode"],
                "province": r["provincienaam"],
                "aliases": r["alias"],
            }
            for r in rows
        ]
        stmt = insert(Municipality).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["cbs_code"],
            set_={k: stmt.excluded[k] for k in ("name", "province_code", "province", "aliases")},
        )
        conn.execute(stmt)
    inserted = sum(1 for r in rows if r["gemeentecode"] not in before)
    return LoadResult(inserted=inserted, updated=len(rows) - inserted, total=len(rows))
