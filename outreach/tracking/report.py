"""`outreach report`: what a campaign achieved, per role, party, province or municipality.

Everything is counted per delivery (one letter to one contact) with one set-based query: the events of
the campaign are folded into one row per delivery (did it get a reply, an automatic reply, a bounce, an
opt-out?) and joined to the deliveries, grouped with SQL GROUP BY. Counting letters rather than events
means three replies from one wethouder count as one answered letter.

- sent: handed to the mail server (``sent_at`` set), whatever happened after;
- failed: refused by the server when sent, or bounced hard afterwards;
- delivered: sent and not failed; the base of the response rate;
- response rate: letters answered by a person (replied) / letters delivered. Automatic replies and
  opt-outs are counted on their own and are not responses.

Coverage lists the municipalities where no letter of the campaign was delivered, within the campaign's
audience (its provinces and municipalities) when the campaign folder can be read, else among all.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import ColumnElement, Engine, case, exists, func, select
from sqlmodel import SQLModel

from outreach import csvfiles
from outreach.errors import CampaignError, NotFoundError
from outreach.letters.campaign import Audience
from outreach.letters.campaign_file import load_campaign
from outreach.models import DeliveryState, EventKind
from outreach.registry.audience import municipality_filter
from outreach.sending.plan import SKIP_NO_EMAIL
from outreach.tracking.events import CAMPAIGN, CONTACT, DELIVERY, EVENT

log = logging.getLogger(__name__)
MUNICIPALITY = SQLModel.metadata.tables["municipality"]

GroupBy = Literal["role", "party", "province", "municipality"]
GROUPS: tuple[str, ...] = ("role", "party", "province", "municipality")
COLUMNS = (
    "letters",
    "sent",
    "printed",
    "failed",
    "skipped",
    "no_email",
    "bounced",
    "replied",
    "auto_replied",
    "opted_out",
    "delivered",
    "response_rate",
)


@dataclass(frozen=True)
class ReportRow:
    group: str | None  # the role, party, province or municipality; None in the totals row
    code: str | None  # the CBS code when grouped by municipality
    letters: int
    sent: int  # by e-mail or on paper (printed)
    failed: int
    skipped: int
    no_email: int  # skipped because the registry has no address (register office holders)
    bounced: int
    replied: int
    auto_replied: int
    opted_out: int
    delivered: int
    printed: int = 0  # delivered on paper (`outreach print`)

    @property
    def response_rate(self) -> float | None:
        return round(self.replied / self.delivered, 4) if self.delivered else None

    def as_dict(self) -> dict[str, Any]:
        values = {name: getattr(self, name) for name in COLUMNS}
        return {"group": self.group, "code": self.code, **values}


@dataclass(frozen=True)
class UncoveredMunicipality:
    cbs_code: str
    name: str
    province: str
    letters: int  # planned for it (pending, skipped, failed), none delivered
    no_email: int = 0  # of those, skipped because the registry has no e-mail address


@dataclass(frozen=True)
class CampaignReport:
    campaign: str
    name: str
    by: str | None
    rows: list[ReportRow]
    totals: ReportRow
    scope: str  # which municipalities coverage looked at
    municipalities_in_scope: int
    uncovered: list[UncoveredMunicipality]

    @property
    def covered(self) -> int:
        return self.municipalities_in_scope - len(self.uncovered)

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "name": self.name,
            "by": self.by,
            "rows": [row.as_dict() for row in self.rows],
            "totals": self.totals.as_dict(),
            "coverage": {
                "scope": self.scope,
                "municipalities": self.municipalities_in_scope,
                "covered": self.covered,
                "uncovered": [
                    {
                        "cbs_code": m.cbs_code,
                        "name": m.name,
                        "province": m.province,
                        "letters": m.letters,
                        "no_email": m.no_email,
                    }
                    for m in self.uncovered
                ],
            },
        }

    def as_csv(self) -> str:
        """One row per group and a final "total" row; coverage is in the JSON and human output."""
        out = io.StringIO()
        writer = csvfiles.writer(out, lineterminator="\r\n")
        writer.writerow(
            [self.by or "campaign", *(["cbs_code"] if self.by == "municipality" else []), *COLUMNS]
        )
        rows = [*self.rows, self.totals] if self.by else [self.totals]
        for row in rows:
            label = row.group if row is not self.totals else ("total" if self.by else self.campaign)
            values = row.as_dict()
            code = [row.code or ""] if self.by == "municipality" else []
            writer.writerow(
                [label if label is not None else UNKNOWN[self.by or ""], *code]
                + ["" if values[c] is None else values[c] for c in COLUMNS]
            )
        return out.getvalue()


# What a missing group value means: a contact erased by `contacts forget` has no role any more; a
# supporter has no municipality; many contacts have no party.
UNKNOWN = {
    "role": "(erased contact)",
    "party": "(no party)",
    "province": "(no municipality)",
    "municipality": "(no municipality)",
    "": "(none)",
}


def _flags() -> Any:
    """One row per delivery of the campaign's events: 1 where such an event exists."""

    def has(kind: EventKind) -> Any:
        return func.max(case((EVENT.c.kind == kind.value, 1), else_=0))

    return (
        select(
            EVENT.c.delivery_id.label("delivery_id"),
            has(EventKind.REPLY).label("replied"),
            has(EventKind.AUTO_REPLY).label("auto_replied"),
            has(EventKind.BOUNCE).label("bounced"),
            has(EventKind.OPT_OUT).label("opted_out"),
        )
        .where(EVENT.c.delivery_id.is_not(None))
        .group_by(EVENT.c.delivery_id)
    )


_NO_EMAIL = (DELIVERY.c.state == DeliveryState.SKIPPED.value) & (DELIVERY.c.skip_reason == SKIP_NO_EMAIL)


def _counts(campaign_id: int, group_columns: Sequence[ColumnElement[Any]]) -> Any:
    flags = _flags().where(EVENT.c.campaign_id == campaign_id).subquery("flags")
    sent = DELIVERY.c.sent_at.is_not(None)
    failed = DELIVERY.c.state == DeliveryState.FAILED.value

    def total(condition: Any) -> Any:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    def flagged(column: Any) -> Any:
        return func.coalesce(func.sum(column), 0)

    return (
        select(
            *group_columns,
            func.count().label("letters"),
            total(sent).label("sent"),
            total(DELIVERY.c.state == DeliveryState.PRINTED.value).label("printed"),
            total(failed).label("failed"),
            total(DELIVERY.c.state == DeliveryState.SKIPPED.value).label("skipped"),
            total(_NO_EMAIL).label("no_email"),
            flagged(flags.c.bounced).label("bounced"),
            flagged(flags.c.replied).label("replied"),
            flagged(flags.c.auto_replied).label("auto_replied"),
            flagged(flags.c.opted_out).label("opted_out"),
            total(sent & ~failed).label("delivered"),
        )
        .select_from(
            DELIVERY.outerjoin(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .outerjoin(MUNICIPALITY, MUNICIPALITY.c.id == CONTACT.c.municipality_id)
            .outerjoin(flags, flags.c.delivery_id == DELIVERY.c.id)
        )
        .where(DELIVERY.c.campaign_id == campaign_id)
    )


def _row(row: Any, group: str | None, code: str | None) -> ReportRow:
    return ReportRow(
        group=group,
        code=code,
        letters=int(row.letters),
        sent=int(row.sent),
        failed=int(row.failed),
        skipped=int(row.skipped),
        no_email=int(row.no_email),
        bounced=int(row.bounced),
        replied=int(row.replied),
        auto_replied=int(row.auto_replied),
        opted_out=int(row.opted_out),
        delivered=int(row.delivered),
        printed=int(row.printed),
    )


def campaign_report(
    engine: Engine, slug: str, *, by: str | None = None, audience: Audience | None = None
) -> CampaignReport:
    """The report of one campaign; ``audience`` (from its campaign.toml) scopes the coverage list."""
    if by is not None and by not in GROUPS:
        raise NotFoundError(f"cannot group a report by {by!r}; use one of {', '.join(GROUPS)}")
    with engine.connect() as conn:
        campaign = conn.execute(select(CAMPAIGN.c.id, CAMPAIGN.c.name).where(CAMPAIGN.c.slug == slug)).first()
        if campaign is None:
            raise NotFoundError(
                f"campaign {slug!r} has no letters in the database",
                hint="a campaign appears here once `outreach send` has planned it",
            )
        cid = int(campaign.id)
        totals_row = conn.execute(_counts(cid, [])).one()
        totals = _row(totals_row, None, None)
        rows: list[ReportRow] = []
        if by is not None:
            if by == "municipality":
                columns = [MUNICIPALITY.c.name.label("grp"), MUNICIPALITY.c.cbs_code.label("code")]
            else:
                column = {
                    "role": CONTACT.c.role,
                    "party": CONTACT.c.party,
                    "province": MUNICIPALITY.c.province,
                }
                columns = [column[by].label("grp")]
            query = _counts(cid, columns).group_by(*columns).order_by(*columns)
            for row in conn.execute(query):
                rows.append(_row(row, row.grp, getattr(row, "code", None)))
        scope_filter = municipality_filter(audience) if audience is not None else None
        scope = "the campaign's audience" if scope_filter is not None else "all municipalities"
        in_scope = select(func.count()).select_from(MUNICIPALITY)
        delivered_there = exists().where(
            DELIVERY.c.campaign_id == cid,
            DELIVERY.c.sent_at.is_not(None),
            DELIVERY.c.state != DeliveryState.FAILED.value,
            DELIVERY.c.contact_id == CONTACT.c.id,
            CONTACT.c.municipality_id == MUNICIPALITY.c.id,
        )

        def planned(*condition: Any) -> Any:
            return (
                select(func.count())
                .select_from(DELIVERY.join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id))
                .where(
                    DELIVERY.c.campaign_id == cid, CONTACT.c.municipality_id == MUNICIPALITY.c.id, *condition
                )
                .scalar_subquery()
            )

        uncovered_query = (
            select(
                MUNICIPALITY.c.cbs_code,
                MUNICIPALITY.c.name,
                MUNICIPALITY.c.province,
                planned().label("n"),
                planned(_NO_EMAIL).label("no_email"),
            )
            .where(~delivered_there)
            .order_by(MUNICIPALITY.c.province, MUNICIPALITY.c.name)
        )
        if scope_filter is not None:
            in_scope = in_scope.where(scope_filter)
            uncovered_query = uncovered_query.where(scope_filter)
        municipalities = int(conn.execute(in_scope).scalar() or 0)
        uncovered = [
            UncoveredMunicipality(
                cbs_code=r.cbs_code,
                name=r.name,
                province=r.province,
                letters=int(r.n),
                no_email=int(r.no_email),
            )
            for r in conn.execute(uncovered_query)
        ]
        # Where letters were planned but none arrived comes first: that is where the team can act.
        uncovered.sort(key=lambda m: m.letters == 0)
    return CampaignReport(
        campaign=slug,
        name=str(campaign.name),
        by=by,
        rows=rows,
        totals=totals,
        scope=scope,
        municipalities_in_scope=municipalities,
        uncovered=uncovered,
    )


def build_report(
    engine: Engine, slug: str, *, by: str | None = None, templates: Path | None = None
) -> CampaignReport:
    """The report, with coverage scoped to the audience of the campaign folder in ``templates`` when it
    can be read (a campaign folder removed after sending still has its numbers in the database)."""
    audience = None
    if templates is not None:
        try:
            audience = load_campaign(templates, slug).audience
        except (CampaignError, NotFoundError) as exc:
            log.warning("campaign %s: folder not readable, coverage over all municipalities (%s)", slug, exc)
    return campaign_report(engine, slug, by=by, audience=audience)
