"""Approval: who reviewed a campaign, when, what they decided, and exactly which files they saw.

The fingerprint covers every file of the campaign folder (campaign.toml, templates, attachments, and
anything else kept there), except hidden files and ``__pycache__``. The manifest (relative path ->
sha256) is stored with each decision, so that a refusal can say which file changed, appeared or
vanished; the text files themselves are stored too, so that a review can show a diff of what changed.

Decisions are an append-only history (the ``approval`` table): approvals and rejections. A campaign may
be sent when, counting only decisions after its latest rejection, ``campaign.approvals`` different
people (1 unless campaign.toml says ``approvals = 2``) approved the folder exactly as it is now.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from sqlalchemy import Connection, Engine, select

from outreach.db import dialect_insert
from outreach.errors import CampaignError
from outreach.letters.campaign import CampaignConfig
from outreach.letters.recipients import table
from outreach.models import Approval, Campaign, Decision, utcnow

# A text file larger than this is not kept for diffs: campaign folders hold letters, not data dumps.
MAX_TEXT_BYTES = 256 * 1024


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


@dataclass(frozen=True)
class FolderSnapshot:
    """The campaign folder read once: the manifest, and the text of every text file (for diffs)."""

    files: dict[str, str]  # {relative posix path: sha256 hex}
    texts: dict[str, str]  # {relative posix path: text} of the UTF-8 text files among them

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.files)


def _as_text(data: bytes) -> str | None:
    """The file's text when it is a small UTF-8 text file (a template, campaign.toml), else None."""
    if len(data) > MAX_TEXT_BYTES or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def snapshot_folder(folder: Path) -> FolderSnapshot:
    """Hash every file the approval covers and keep the text files' text, each file read once."""
    files: dict[str, str] = {}
    texts: dict[str, str] = {}
    for path in campaign_files(folder):
        name = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        files[name] = hashlib.sha256(data).hexdigest()
        text = _as_text(data)
        if text is not None:
            texts[name] = text
    return FolderSnapshot(files=files, texts=texts)


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
    """One decision of the history: an approval or a rejection (``decision``)."""

    campaign: str
    approved_by: str  # who decided, also for a rejection
    approved_at: datetime
    fingerprint: str
    files: dict[str, str]
    decision: str = Decision.APPROVED.value
    comment: str | None = None  # the approver's comment, or the reason of the rejection
    id: int | None = None

    @property
    def approved(self) -> bool:
        return self.decision == Decision.APPROVED

    @property
    def when(self) -> str:
        return f"{self.approved_at:%Y-%m-%d %H:%M} UTC"


def person_key(name: str) -> str:
    """Who a name means, for counting different approvers: 'anna  de Vries' and 'Anna de Vries' agree."""
    return " ".join(name.split()).casefold()


def _record(
    engine: Engine,
    campaign: CampaignConfig,
    decided_by: str,
    decision: Decision,
    comment: str | None,
    snapshot: FolderSnapshot,
) -> ApprovalRecord:
    decided_by = " ".join(decided_by.split())
    if not decided_by:
        raise CampaignError(f"campaign {campaign.slug}: say who decides (a name)")
    comment = (comment or "").strip() or None
    record = ApprovalRecord(
        campaign=campaign.slug,
        approved_by=decided_by,
        approved_at=utcnow(),
        fingerprint=snapshot.fingerprint,
        files=snapshot.files,
        decision=decision.value,
        comment=comment,
    )
    with engine.begin() as conn:
        campaign_id = ensure_campaign_row(conn, campaign)
        result = conn.execute(
            table(Approval)
            .insert()
            .values(
                campaign_id=campaign_id,
                approved_by=record.approved_by,
                approved_at=record.approved_at,
                fingerprint=record.fingerprint,
                manifest=json.dumps(snapshot.files, sort_keys=True),
                decision=record.decision,
                comment=record.comment,
                texts=json.dumps(snapshot.texts, sort_keys=True),
            )
        )
        new_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
    return replace(record, id=new_id)


def record_approval(
    engine: Engine,
    campaign: CampaignConfig,
    approved_by: str,
    *,
    files: dict[str, str] | None = None,
    snapshot: FolderSnapshot | None = None,
    comment: str | None = None,
) -> ApprovalRecord:
    """Store an approval of the campaign folder: as in ``snapshot`` (taken before the review), or the
    folder as it is now. ``files`` alone (a manifest without texts) is accepted for older callers."""
    if snapshot is None:
        snapshot = FolderSnapshot(files, {}) if files is not None else snapshot_folder(campaign.folder)
    if not approved_by.strip():
        raise CampaignError(f"campaign {campaign.slug}: say who approves (--by NAME)")
    return _record(engine, campaign, approved_by, Decision.APPROVED, comment, snapshot)


def record_rejection(
    engine: Engine,
    campaign: CampaignConfig,
    rejected_by: str,
    reason: str,
    *,
    snapshot: FolderSnapshot | None = None,
) -> ApprovalRecord:
    """Store a rejection with its reason; it voids every earlier approval of the campaign."""
    if not rejected_by.strip():
        raise CampaignError(f"campaign {campaign.slug}: say who rejects (a name)")
    if not reason.strip():
        raise CampaignError(f"campaign {campaign.slug}: a rejection needs a reason")
    return _record(
        engine, campaign, rejected_by, Decision.REJECTED, reason, snapshot or snapshot_folder(campaign.folder)
    )


def decision_history(engine: Engine, campaign: CampaignConfig) -> list[ApprovalRecord]:
    """Every decision on the campaign, oldest first."""
    approvals, campaigns = table(Approval), table(Campaign)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                approvals.c.id,
                approvals.c.approved_by,
                approvals.c.approved_at,
                approvals.c.fingerprint,
                approvals.c.manifest,
                approvals.c.decision,
                approvals.c.comment,
            )
            .join(campaigns, campaigns.c.id == approvals.c.campaign_id)
            .where(campaigns.c.slug == campaign.slug)
            .order_by(approvals.c.approved_at, approvals.c.id)
        ).all()
    return [
        ApprovalRecord(
            campaign=campaign.slug,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
            fingerprint=row.fingerprint,
            files=json.loads(row.manifest),
            decision=row.decision,
            comment=row.comment,
            id=row.id,
        )
        for row in rows
    ]


def decided_texts(engine: Engine, decision_id: int) -> dict[str, str] | None:
    """The text files as they were when decision ``decision_id`` was taken (None: not kept, before m008)."""
    approvals = table(Approval)
    with engine.connect() as conn:
        texts = conn.execute(select(approvals.c.texts).where(approvals.c.id == decision_id)).scalar()
    return json.loads(texts) if texts else None


def latest_approval(engine: Engine, campaign: CampaignConfig) -> ApprovalRecord | None:
    """The most recent approval of any version of the folder (rejections are not approvals)."""
    approvals = [d for d in decision_history(engine, campaign) if d.approved]
    return approvals[-1] if approvals else None


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


@dataclass(frozen=True)
class ApprovalStatus:
    """Where a campaign stands: whether it may be sent, and if not, the one-line reason."""

    campaign: str
    required: int  # different people who must approve (campaign.approvals)
    fingerprint: str  # of the folder now
    files: dict[str, str]  # the manifest now
    history: list[ApprovalRecord] = field(default_factory=list)  # oldest first
    valid: list[ApprovalRecord] = field(default_factory=list)  # approvals that count, one per person
    rejection: ApprovalRecord | None = None  # the latest rejection when nothing was approved after it
    last_approval: ApprovalRecord | None = None  # since the latest rejection, of any version

    @property
    def approved(self) -> bool:
        return len(self.valid) >= self.required

    @property
    def state(self) -> str:
        """'approved', 'partly approved', 'changed', 'rejected' or 'not approved'."""
        if self.approved:
            return "approved"
        if self.valid:
            return "partly approved"
        if self.last_approval is not None:
            return "changed"
        if self.rejection is not None:
            return "rejected"
        return "not approved"

    @property
    def changes(self) -> list[str]:
        """What changed since the last approval ('brief.txt.j2 changed'), when the state is 'changed'."""
        if self.last_approval is None or self.valid:
            return []
        return changes_since(self.last_approval.files, self.files) or ["the approved manifest does not match"]

    def describe(self) -> str:
        """The state with its detail, as `campaign list` and `campaign show` print it."""
        who = ", ".join(f"by {d.approved_by}, {d.when}" for d in self.valid)
        if self.approved:
            return f"approved ({who})"
        if self.valid:
            return f"partly approved ({len(self.valid)} of {self.required}: {who}; needs another person)"
        if self.last_approval is not None:
            last = self.last_approval
            return (
                f"changed (approved by {last.approved_by}, {last.when}; since then {', '.join(self.changes)})"
            )
        if self.rejection is not None:
            r = self.rejection
            return f"rejected (by {r.approved_by}, {r.when}: {r.comment})"
        return "not approved"

    def refusal(self) -> str | None:
        """Why the campaign may not be sent, in one line; None when it may."""
        slug = self.campaign
        if self.approved:
            return None
        if self.valid:
            names = " and ".join(d.approved_by for d in self.valid)
            return (
                f"campaign {slug} needs {self.required} approvals by different people;"
                f" only {names} approved it so far"
            )
        if self.last_approval is not None:
            last = self.last_approval
            return (
                f"campaign {slug} changed since {last.approved_by} approved it on {last.when}:"
                f" {', '.join(self.changes)}"
            )
        if self.rejection is not None:
            r = self.rejection
            return f"campaign {slug} was rejected by {r.approved_by} on {r.when}: {r.comment}"
        return f"campaign {slug} has not been approved"


def approval_status(
    engine: Engine, campaign: CampaignConfig, *, files: dict[str, str] | None = None
) -> ApprovalStatus:
    """The campaign's decisions weighed against the folder as it is now (or as in ``files``)."""
    history = decision_history(engine, campaign)
    current = manifest(campaign.folder) if files is None else files
    now = fingerprint(current)
    since = history
    rejection = None
    for index in range(len(history) - 1, -1, -1):
        if not history[index].approved:
            rejection = history[index]
            since = history[index + 1 :]
            break
    valid: list[ApprovalRecord] = []
    people: set[str] = set()
    for decision in since:
        if (
            decision.approved
            and decision.fingerprint == now
            and person_key(decision.approved_by) not in people
        ):
            people.add(person_key(decision.approved_by))
            valid.append(decision)
    approvals_since = [d for d in since if d.approved]
    return ApprovalStatus(
        campaign=campaign.slug,
        required=campaign.approvals,
        fingerprint=now,
        files=current,
        history=history,
        valid=valid,
        rejection=rejection if not approvals_since else None,
        last_approval=approvals_since[-1] if approvals_since else None,
    )


def require_approval(engine: Engine, campaign: CampaignConfig) -> None:
    """Raise CampaignError unless enough people approved the campaign folder exactly as it is now."""
    reason = approval_status(engine, campaign).refusal()
    if reason is not None:
        raise CampaignError(
            reason,
            hint=f"review with `outreach review --campaign {campaign.slug}` (or `outreach check` and "
            "`outreach preview`), then approve",
        )
