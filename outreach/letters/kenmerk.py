"""The kenmerk (reference) of each letter: ``HVK/2026/0003/0412``, unique per delivery.

A delivery is one campaign's letter to one contact, and (campaign, contact) is its unique key; so the
kenmerk is the campaign's part (prefix, year, campaign number), fixed once in ``campaign.kenmerk``, followed
by the contact number. Planning a million letters stays one ``INSERT ... SELECT`` with no extra column
or index per row, and the tracker finds the delivery back through the campaign's unique kenmerk and the
delivery's (contact, campaign) index. The campaign part is stored when the campaign row is made
(approval, planning, printing), so a later edit of ``kenmerk_prefix`` never changes the reference of a
letter already out; only a stored kenmerk is matched by the tracker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from outreach.letters.campaign import CampaignConfig
from outreach.letters.dates import amsterdam_date
from outreach.letters.recipients import table
from outreach.models import Campaign, Delivery, utcnow

#: A kenmerk as it appears in a reply: prefix, year, campaign number, contact number.
KENMERK_RE = re.compile(r"(?<![A-Za-z0-9/])([A-Z]{2,8})/(\d{4})/(\d{4,})/(\d{4,})(?![0-9/])")
#: Shown by previews of a campaign that has no row yet (never approved nor planned).
DRAFT_NUMBER = 0


def campaign_part(prefix: str, year: int, campaign_id: int) -> str:
    return f"{prefix}/{year:04d}/{campaign_id:04d}"


def delivery_kenmerk(campaign_kenmerk: str, contact_id: int) -> str:
    """The kenmerk of the campaign's letter to ``contact_id``."""
    return f"{campaign_kenmerk}/{contact_id:04d}"


def _computed(campaign: CampaignConfig, campaign_id: int, created_at: datetime) -> str:
    return campaign_part(campaign.kenmerk_prefix, amsterdam_date(created_at).year, campaign_id)


def campaign_kenmerk(conn: Connection, campaign: CampaignConfig, *, now: datetime | None = None) -> str:
    """The campaign's part of every kenmerk, read only: stored, computed from the campaign row, or (no
    row yet) a draft with campaign number 0000 dated ``now``."""
    campaigns = table(Campaign)
    row = conn.execute(
        select(campaigns.c.id, campaigns.c.created_at, campaigns.c.kenmerk).where(
            campaigns.c.slug == campaign.slug
        )
    ).first()
    if row is None:
        year = amsterdam_date(now or utcnow()).year
        return campaign_part(campaign.kenmerk_prefix, year, DRAFT_NUMBER)
    if row.kenmerk:
        return str(row.kenmerk)
    return _computed(campaign, int(row.id), row.created_at)


def store_campaign_kenmerk(conn: Connection, campaign: CampaignConfig, campaign_id: int) -> str:
    """Fix the campaign's kenmerk on its row (once; later calls return the stored one)."""
    campaigns = table(Campaign)
    created_at = conn.execute(
        select(campaigns.c.created_at).where(campaigns.c.id == campaign_id)
    ).scalar_one()
    conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id, campaigns.c.kenmerk.is_(None))
        .values(kenmerk=_computed(campaign, campaign_id, created_at))
    )
    stored = conn.execute(select(campaigns.c.kenmerk).where(campaigns.c.id == campaign_id)).scalar_one()
    return str(stored)


@dataclass(frozen=True)
class KenmerkMatch:
    kenmerk: str
    delivery_id: int
    campaign_id: int
    contact_id: int


def find_kenmerk(conn: Connection, text: str) -> KenmerkMatch | None:
    """The delivery whose kenmerk ``text`` quotes (the first one that exists), or None."""
    campaigns, deliveries = table(Campaign), table(Delivery)
    for match in KENMERK_RE.finditer(text):
        prefix, year, number, contact = match.groups()
        part = f"{prefix}/{year}/{number}"
        row = conn.execute(
            select(deliveries.c.id, deliveries.c.campaign_id, deliveries.c.contact_id)
            .join(campaigns, campaigns.c.id == deliveries.c.campaign_id)
            .where(deliveries.c.contact_id == int(contact), campaigns.c.kenmerk == part)
        ).first()
        if row is not None:
            return KenmerkMatch(match.group(0), int(row.id), int(row.campaign_id), int(row.contact_id))
    return None
