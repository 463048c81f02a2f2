"""Approval: who reviewed a campaign, when, and exactly which files they saw.

The fingerprint covers every file of the campaign folder (campaign.toml, templates, attachments, and
anything else kept there), except hidden files and ``__pycache__``. The manifest (relative path ->
sha256) is stored with the approval, so that a refusal can say which file changed, appeared or vanished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from outreach.db import dialect_insert
from outreach.errors import CampaignError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.render import table
from outreach.models import Approval, Campaign, utcnow


def campaign_files(folder: Path) -> list[Path]:
    """The files an approval covers, sorted by relative path."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") or part == "__pycache__" for part in relative.parts):
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def manifest(folder: Path) -> dict[str, str]:
    """{relative posix path: sha256 hex} of every file the approval covers."""
    result: dict[str, str] = {}
    for path in campaign_files(folder):
        with path.open("rb") as fh:
            digest = hashlib.file_digest(fh, "sha256")
        result[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return result


def fingerprint(files: dict[str, str]) -> str:
    """sha256 over the sorted manifest: any byte of any file, or a renamed file, changes it."""
    text = "".join(f"{name}\0{digest}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ensure_campaign_row(conn: Connection, campaign: CampaignConfig) -> int:
    """The id of the Campaign row for ``campaign.slug``, created if missing (safe under concurrency)."""
    campaigns = table(Campaign)
    insert = dialect_insert(conn.engine)
    conn.execute(
        insert(campaigns)
        .values(slug=campaign.slug, name=campaign.name, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["slug"])
    )
    campaign_id = conn.execute(select(campaigns.c.id).where(campaigns.c.slug == campaign.slug)).scalar_one()
    return int(campaign_id)


@dataclass(frozen=True)
class ApprovalRecord:
    campaign: str
    approved_by: str
    approved_at: datetime
    fingerprint: str
    files: dict[str, str]


def record_approval(
    engine: Engine, campaign: CampaignConfig, approved_by: str, *, files: dict[str, str] | None = None
) -> ApprovalRecord:
    """Store an approval of the campaign folder: ``files`` (a manifest taken before the review), or the
    folder as it is now."""
    approved_by = approved_by.strip()
    if not approved_by:
        raise CampaignError(f"campaign {campaign.slug}: say who approves (--by NAME)")
    files = manifest(campaign.folder) if files is None else files
    record = ApprovalRecord(
        campaign=campaign.slug,
        approved_by=approved_by,
        approved_at=utcnow(),
        fingerprint=fingerprint(files),
        files=files,
    )
    with engine.begin() as conn:
        campaign_id = ensure_campaign_row(conn, campaign)
        conn.execute(
            table(Approval)
            .insert()
            .values(
                campaign_id=campaign_id,
                approved_by=record.approved_by,
                approved_at=record.approved_at,
                fingerprint=record.fingerprint,
                manifest=json.dumps(files, sort_keys=True),
            )
        )
    return record


def latest_approval(engine: Engine, campaign: CampaignConfig) -> ApprovalRecord | None:
    approvals, campaigns = table(Approval), table(Campaign)
    with engine.connect() as conn:
        row = conn.execute(
            select(
                approvals.c.approved_by,
                approvals.c.approved_at,
                approvals.c.fingerprint,
                approvals.c.manifest,
            )
            .join(campaigns, campaigns.c.id == approvals.c.campaign_id)
            .where(campaigns.c.slug == campaign.slug)
            .order_by(approvals.c.approved_at.desc(), approvals.c.id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return ApprovalRecord(
        campaign=campaign.slug,
        approved_by=row.approved_by,
        approved_at=row.approved_at,
        fingerprint=row.fingerprint,
        files=json.loads(row.manifest),
    )


def changes_since(approved: dict[str, str], current: dict[str, str]) -> list[str]:
    """'brief.txt.j2 changed', 'extra.pdf added', 'bijlage.pdf removed', sorted by file."""
    changes = []
    for name in sorted(set(approved) | set(current)):
        if name not in current:
            changes.append(f"{name} removed")
        elif name not in approved:
            changes.append(f"{name} added")
        elif approved[name] != current[name]:
            changes.append(f"{name} changed")
    return changes


def require_approval(engine: Engine, campaign: CampaignConfig) -> None:
    """Raise CampaignError unless the campaign folder is exactly as it was when last approved."""
    record = latest_approval(engine, campaign)
    hint = f"review with `outreach check --campaign {campaign.slug}` and `outreach preview`, then approve"
    if record is None:
        raise CampaignError(f"campaign {campaign.slug} has not been approved", hint=hint)
    current = manifest(campaign.folder)
    if fingerprint(current) != record.fingerprint:
        changes = changes_since(record.files, current) or ["the approved manifest does not match"]
        raise CampaignError(
            f"campaign {campaign.slug} changed since {record.approved_by} approved it on "
            f"{record.approved_at:%Y-%m-%d %H:%M} UTC: {', '.join(changes)}",
            hint=hint,
        )
