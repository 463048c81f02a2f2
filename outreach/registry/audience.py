"""Who a campaign addresses, as one set-based SELECT of contact ids.

The statement includes suppressed contacts, contacts with an unusable address and contacts without any
address (register office holders) on purpose: planning records them as ``skipped`` with a reason, so
that a report shows who was left out and why. Inactive contacts (no longer in office) are left out
altogether.

One letter per mailbox: a person who holds several offices under one address (raadslid and
fractievoorzitter in a council list, a griffier whose entry carries the griffie mailbox) is addressed
once, as the office imported first (the lowest contact id: stable when offices are added later, so a
second planning never adds a second letter to the same mailbox).
"""

from __future__ import annotations

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
)

from outreach.letters.campaign import Audience, CampaignConfig
from outreach.letters.recipients import table
from outreach.models import Contact, Municipality, Role


def municipality_filter(audience: Audience) -> ColumnElement[bool] | None:
    """Condition on Municipality rows for the provinces and municipalities of the audience (None: all).

    Also used by reports to count coverage over the same municipalities the campaign addressed.
    """
    m = table(Municipality).c
    conditions: list[ColumnElement[bool]] = []
    if audience.provinces:
        codes = [p.upper() for p in audience.provinces if p.upper().startswith("PV")]
        names = [p.casefold() for p in audience.provinces if not p.upper().startswith("PV")]
        conditions.append(
            or_(
                m.province_code.in_(codes) if codes else false(),
                func.lower(m.province).in_(names) if names else false(),
            )
        )
    if audience.municipalities:
        codes = [x.upper() for x in audience.municipalities if _is_cbs_code(x)]
        names = [x.casefold() for x in audience.municipalities if not _is_cbs_code(x)]
        name_matches: list[ColumnElement[bool]] = [
            func.lower(m.name).in_(names),
            *(
                # aliases is "|"-separated: "|den haag|" finds the whole alias, never a part of one.
                (literal("|") + func.lower(m.aliases) + literal("|")).contains(f"|{name}|", autoescape=True)
                for name in names
            ),
        ]
        conditions.append(
            or_(
                m.cbs_code.in_(codes) if codes else false(),
                or_(*name_matches) if names else false(),
            )
        )
    if not conditions:
        return None
    return and_(*conditions)


def _is_cbs_code(text: str) -> bool:
    text = text.strip().upper()
    return len(text) == 6 and text.startswith("GM") and text[2:].isdigit()


def _audience_condition(contact: FromClause, audience: Audience) -> ColumnElement[bool]:
    """The WHERE clause selecting the audience among rows of ``contact`` (the table or an alias of it)."""
    c = contact.c
    conditions: list[ColumnElement[bool]] = [c.active == true(), c.role.in_(audience.roles)]
    municipality = municipality_filter(audience)
    if municipality is not None:
        conditions.append(c.municipality_id.in_(select(table(Municipality).c.id).where(municipality)))
    if audience.parties:
        conditions.append(func.lower(c.party).in_([fold_party(p) for p in audience.parties]))
    if audience.portfolio:
        conditions.append(
            or_(*(func.lower(c.portfolio).contains(word, autoescape=True) for word in audience.portfolio))
        )
    return and_(*conditions)


def fold_party(name: str) -> str:
    """Party names compare case-insensitively; SQL lower() does not fold accents, so neither do we."""
    return " ".join(name.lower().split())


def audience_contact_ids(campaign: CampaignConfig) -> Select[int]:
    """SELECT contact.id for everyone ``campaign`` addresses (see the module docstring).

    With ``griffie_copy == "separate"`` the griffie contacts of every municipality that has someone in
    the audience are included too: each gets one copy of its own.
    """
    contact = table(Contact)
    condition = _audience_condition(contact, campaign.audience)
    if campaign.griffie_copy == "separate":
        member = contact.alias("member")
        condition = or_(
            condition,
            and_(
                contact.c.active == true(),
                contact.c.role == Role.GRIFFIE.value,
                contact.c.municipality_id.in_(
                    select(member.c.municipality_id).where(_audience_condition(member, campaign.audience))
                ),
            ),
        )
    c = contact.c
    one_per_mailbox = (
        select(func.min(c.id).label("id")).where(condition, c.email_key.is_not(None)).group_by(c.email_key)
    )
    without_address = select(c.id.label("id")).where(condition, c.email_key.is_(None))
    ids = union_all(one_per_mailbox, without_address).subquery("audience_ids")
    return select(ids.c.id)


# The report module imported this under its first, private name.
_municipality_filter = municipality_filter
