"""The reviewer's decision, taken on the version of the campaign they looked at.

The decide form carries the fingerprint of the folder the reviewer saw. An approval is refused when the
folder has changed since (the reviewer would approve letters they never saw) or when any letter fails
to render, exactly as `outreach approve` refuses; it records the same fingerprint, so `outreach send`
accepts it. A rejection is always recorded: refusing a version nobody saw cannot let anything through.
"""

from __future__ import annotations

from outreach.errors import CampaignError
from outreach.letters.approval import ApprovalRecord, record_approval, record_rejection
from outreach.letters.review import refuse_unless_ready
from outreach.review.checked import CheckedCampaign, ReviewCache


def _current(cache: ReviewCache, slug: str, seen: str) -> CheckedCampaign:
    checked = cache.get(slug)
    if checked.fingerprint != seen:
        raise CampaignError(
            f"campaign {slug} changed while you were reviewing it; look at it again before deciding",
            hint="the overview shows what changed",
        )
    return checked


def approve(cache: ReviewCache, slug: str, *, by: str, seen: str, comment: str = "") -> ApprovalRecord:
    """Approve the campaign as the reviewer saw it (``seen``: the fingerprint shown with the form)."""
    if not by.strip():
        raise CampaignError("say who approves: fill in your name")
    checked = _current(cache, slug, seen)
    refuse_unless_ready(checked.campaign, checked.report)
    return record_approval(cache.engine, checked.campaign, by, snapshot=checked.snapshot, comment=comment)


def reject(cache: ReviewCache, slug: str, *, by: str, reason: str) -> ApprovalRecord:
    """Reject the campaign with a reason, recorded against the folder as it is now."""
    if not by.strip():
        raise CampaignError("say who rejects: fill in your name")
    if not reason.strip():
        raise CampaignError("a rejection needs a reason: say what must change")
    checked = cache.get(slug)
    return record_rejection(cache.engine, checked.campaign, by, reason, snapshot=checked.snapshot)
