"""The overview page's content: the campaign, its audience in counts, the check, the approval state
with a diff of what changed since the last decision, and the decision history."""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import Engine

from outreach.letters.approval import ApprovalRecord, ApprovalStatus, approval_status, decided_texts
from outreach.letters.review import CheckFailure, describe_audience
from outreach.review.checked import CheckedCampaign

# The overview lists at most this many failures and unreachable addresses one by one (with a count of
# the rest); the recipients page, filtered to problems, lists them all.
LISTED = 100
NO_PARTY = "(no party)"


@dataclass(frozen=True)
class FileChange:
    name: str
    change: str  # "changed", "added", "removed"
    diff: str | None  # unified diff of a text file; None for a binary file or a text not kept


@dataclass(frozen=True)
class Unsendable:
    contact_id: int
    label: str  # "anna@x.nl (raadslid, Utrecht)"
    kind: str  # "suppressed" or "invalid"
    reason: str


@dataclass
class Overview:
    checked: CheckedCampaign
    status: ApprovalStatus
    settings: list[tuple[str, str]]  # (label, value) of the campaign, in reading order
    by_role: list[tuple[str, int]]
    by_province: list[tuple[str, int]]
    by_party: list[tuple[str, int]]
    municipalities: int
    failures: list[CheckFailure]  # the first LISTED
    failure_summary: list[tuple[str, int]]  # each problem with the number of letters it hits
    unsendable: list[Unsendable]  # the first LISTED
    unsendable_total: int
    baseline: ApprovalRecord | None = None  # the decision the changes are relative to
    changes: list[FileChange] = field(default_factory=list)

    @property
    def history(self) -> list[ApprovalRecord]:
        """Newest first."""
        return list(reversed(self.status.history))


def _counts(values: list[str]) -> list[tuple[str, int]]:
    return sorted(Counter(values).items(), key=lambda item: (-item[1], item[0].casefold()))


def _settings(checked: CheckedCampaign) -> list[tuple[str, str]]:
    c = checked.campaign
    s = c.sending
    rate = f"{s.rate:g} letters/s" if s.rate else "the sender's default"
    if s.domain_rate:
        rate += f", {s.domain_rate:g}/s per recipient domain"
    griffie = {"none": "no copy", "cc": "Cc to the own griffie", "separate": "a separate copy per griffie"}
    return [
        ("Campaign", f"{c.name} ({c.slug})"),
        ("Subject template", c.subject),
        ("From", f"{c.from_name} <{c.from_address}>"),
        ("Reply-To", c.reply_to),
        ("Audience", describe_audience(c)),
        ("Griffie", griffie[c.griffie_copy]),
        ("Attachments", ", ".join(p.name for p in c.attachments) or "none"),
        ("Sending window", s.window.describe() if s.window else "any time"),
        ("Rate", rate),
        ("Approvals needed", "1" if c.approvals == 1 else f"{c.approvals} different people"),
    ]


def file_changes(
    before_files: dict[str, str],
    before_texts: dict[str, str] | None,
    after_files: dict[str, str],
    after_texts: dict[str, str],
) -> list[FileChange]:
    """Each file that differs, with a unified diff where both sides' text is known."""
    changes = []
    for name in sorted(set(before_files) | set(after_files)):
        if before_files.get(name) == after_files.get(name):
            continue
        change = "removed" if name not in after_files else "added" if name not in before_files else "changed"
        old = "" if name not in before_files else (before_texts or {}).get(name)
        new = "" if name not in after_files else after_texts.get(name)
        diff = None
        if old is not None and new is not None:
            diff = "".join(
                difflib.unified_diff(
                    old.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    fromfile=f"{name} (as decided on)",
                    tofile=f"{name} (now)",
                )
            )
        changes.append(FileChange(name, change, diff))
    return changes


@dataclass(frozen=True)
class _Counts:
    """The part of the overview that depends on the check alone, computed once per check."""

    by_role: list[tuple[str, int]]
    by_province: list[tuple[str, int]]
    by_party: list[tuple[str, int]]
    municipalities: int
    unsendable: list[Unsendable]
    unsendable_total: int
    failure_summary: list[tuple[str, int]]


def _count(checked: CheckedCampaign) -> _Counts:
    recipients = checked.recipients
    unsendable = [
        Unsendable(
            r.contact_id,
            r.label,
            "suppressed" if r.suppressed else "invalid",
            r.suppressed or r.email_problem or "",
        )
        for r in recipients
        if not r.sendable
    ]
    return _Counts(
        by_role=_counts([r.role for r in recipients]),
        by_province=_counts([r.province or "(unknown)" for r in recipients]),
        by_party=_counts([r.party or NO_PARTY for r in recipients]),
        municipalities=len({r.municipality_id for r in recipients}),
        unsendable=unsendable[:LISTED],
        unsendable_total=len(unsendable),
        failure_summary=checked.report.failure_summary(),
    )


def build_overview(engine: Engine, checked: CheckedCampaign) -> Overview:
    counts = checked.remember("overview_counts", lambda: _count(checked))
    status = approval_status(engine, checked.campaign, files=checked.snapshot.files)
    overview = Overview(
        checked=checked,
        status=status,
        settings=_settings(checked),
        by_role=counts.by_role,
        by_province=counts.by_province,
        by_party=counts.by_party,
        municipalities=counts.municipalities,
        failures=checked.report.failures[:LISTED],
        failure_summary=counts.failure_summary,
        unsendable=counts.unsendable,
        unsendable_total=counts.unsendable_total,
    )
    # What changed since the decision the reviewer needs to compare with: the last approval when the
    # folder changed since, or the rejection a new version answers.
    baseline = None
    if status.state == "changed":
        baseline = status.last_approval
    elif status.state == "rejected":
        baseline = status.rejection
    if baseline is not None and baseline.fingerprint != checked.fingerprint and baseline.id is not None:
        overview.baseline = baseline
        overview.changes = file_changes(
            baseline.files, decided_texts(engine, baseline.id), checked.snapshot.files, checked.snapshot.texts
        )
    return overview
