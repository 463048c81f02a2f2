"""Where a campaign stands: deliveries per state, recent errors, the next retry, who is sending."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from outreach.errors import NotFoundError
from outreach.models import DeliveryState, utcnow
from outreach.sending.claim import CAMPAIGN_TABLE, CONTACT_TABLE, DELIVERY, D

STATES = list(DeliveryState)


@dataclass(frozen=True)
class RecentError:
    email: str | None
    state: DeliveryState
    code: int | None
    error: str
    at: datetime


@dataclass
class CampaignStatus:
    slug: str
    name: str
    counts: dict[str, int]
    total: int
    next_retry_at: datetime | None
    last_sent_at: datetime | None
    workers: list[str] = field(default_factory=list)  # workers holding live leases
    recent_errors: list[RecentError] = field(default_factory=list)

    @property
    def left(self) -> int:
        """Deliveries neither sent (by e-mail or on paper) nor skipped."""
        done = (DeliveryState.SENT, DeliveryState.SKIPPED, DeliveryState.PRINTED)
        return self.total - sum(self.counts.get(state, 0) for state in done)

    @property
    def complete(self) -> bool:
        return self.total > 0 and self.left == 0

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.slug,
            "name": self.name,
            "total": self.total,
            "counts": self.counts,
            "complete": self.complete,
            "next_retry_at": _iso(self.next_retry_at),
            "last_sent_at": _iso(self.last_sent_at),
            "workers": self.workers,
            "recent_errors": [
                {"email": e.email, "state": e.state, "code": e.code, "error": e.error, "at": _iso(e.at)}
                for e in self.recent_errors
            ],
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds") + "Z"


def campaign_status(engine: Engine, slug: str, *, errors: int = 10) -> CampaignStatus:
    """The status of campaign ``slug``; NotFoundError when it was never approved or sent."""
    campaign = CAMPAIGN_TABLE.c
    contact = CONTACT_TABLE.c
    now = utcnow()
    with engine.connect() as conn:
        row = conn.execute(select(campaign.id, campaign.name).where(campaign.slug == slug)).first()
        if row is None:
            raise NotFoundError(
                f"campaign {slug} has no deliveries yet",
                hint=f"approve it, then `outreach send --campaign {slug}`",
            )
        campaign_id, name = row
        counts: dict[str, int] = {state: 0 for state in STATES}
        for state, n in conn.execute(
            select(D.state, func.count()).where(D.campaign_id == campaign_id).group_by(D.state)
        ):
            counts[str(state)] = int(n)
        next_retry = conn.execute(
            select(func.min(D.next_attempt_at)).where(
                D.campaign_id == campaign_id, D.state == DeliveryState.DEFERRED
            )
        ).scalar_one()
        last_sent = conn.execute(select(func.max(D.sent_at)).where(D.campaign_id == campaign_id)).scalar_one()
        workers = [
            str(w)
            for (w,) in conn.execute(
                select(D.claimed_by)
                .where(D.campaign_id == campaign_id, D.claimed_by.is_not(None), D.lease_until >= now)
                .group_by(D.claimed_by)
            )
        ]
        recent = conn.execute(
            select(contact.email_normalized, D.state, D.last_code, D.last_error, D.updated_at)
            .select_from(DELIVERY.outerjoin(CONTACT_TABLE, contact.id == D.contact_id))
            .where(
                D.campaign_id == campaign_id,
                D.state.in_(
                    (
                        DeliveryState.FAILED,
                        DeliveryState.DEFERRED,
                        DeliveryState.UNKNOWN,
                        DeliveryState.SENDING,
                        DeliveryState.HELD,
                    )
                ),
                D.last_error.is_not(None),
            )
            .order_by(D.updated_at.desc(), D.id.desc())
            .limit(errors)
        ).all()
    return CampaignStatus(
        slug=slug,
        name=str(name),
        counts=counts,
        total=sum(counts.values()),
        next_retry_at=next_retry,
        last_sent_at=last_sent,
        workers=workers,
        recent_errors=[RecentError(e, DeliveryState(s), c, str(t), at) for e, s, c, t, at in recent],
    )
