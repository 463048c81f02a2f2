"""The recipients table: the checked audience filtered, searched and cut into pages on the server."""

from __future__ import annotations

from dataclasses import dataclass

from outreach.letters.recipients import Recipient
from outreach.registry.keys import fold
from outreach.review.checked import CheckedCampaign, Problem
from outreach.review.overview import NO_PARTY

PER_PAGE = 50
# "problem" filter values: any problem, or one kind of them.
PROBLEM_FILTERS = ("any", "failed", "suppressed", "invalid")


@dataclass(frozen=True)
class RecipientFilter:
    """What the reviewer narrowed the list to; empty strings mean 'all'."""

    municipality: str = ""  # CBS code
    role: str = ""
    party: str = ""  # a fractie, or NO_PARTY for those without one
    province: str = ""
    problem: str = ""  # "" or one of PROBLEM_FILTERS
    search: str = ""  # part of the name or the address, case- and accent-insensitive

    def matches(self, recipient: Recipient, problem: Problem | None, needle: str, key: str) -> bool:
        if self.municipality and recipient.cbs_code != self.municipality:
            return False
        if self.role and recipient.role != self.role:
            return False
        if self.party and (recipient.party or NO_PARTY) != self.party:
            return False
        if self.province and recipient.province != self.province:
            return False
        if self.problem and (problem is None or (self.problem != "any" and problem.kind != self.problem)):
            return False
        return not needle or needle in key

    def as_query(self) -> dict[str, str]:
        """The filter's non-empty fields, for links that keep it (pages, previous/next)."""
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class Row:
    recipient: Recipient
    problem: Problem | None


@dataclass(frozen=True)
class Options:
    """The values the filters can take in this audience, for the select boxes."""

    municipalities: list[tuple[str, str]]  # (CBS code, name), by name
    roles: list[str]
    parties: list[str]
    provinces: list[str]


@dataclass(frozen=True)
class RecipientPage:
    rows: list[Row]
    total: int  # recipients matching the filter
    page: int  # 1-based, clamped to the pages there are
    pages: int
    per_page: int

    @property
    def first(self) -> int:
        """The 1-based number of the first row on this page (0 on an empty page)."""
        return (self.page - 1) * self.per_page + 1 if self.rows else 0


def matching(checked: CheckedCampaign, filters: RecipientFilter) -> list[Recipient]:
    """The recipients the filter lets through, in audience order."""
    needle = fold(filters.search.strip())
    problems = checked.problems
    return [
        r
        for r, key in zip(checked.recipients, checked.search_keys, strict=True)
        if filters.matches(r, problems.get(r.contact_id), needle, key)
    ]


def recipient_page(
    checked: CheckedCampaign, filters: RecipientFilter, page: int = 1, per_page: int = PER_PAGE
) -> RecipientPage:
    found = matching(checked, filters)
    pages = max(1, -(-len(found) // per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    rows = [Row(r, checked.problems.get(r.contact_id)) for r in found[start : start + per_page]]
    return RecipientPage(rows=rows, total=len(found), page=page, pages=pages, per_page=per_page)


def filter_options(checked: CheckedCampaign) -> Options:
    return checked.remember("filter_options", lambda: _options(checked))


def _options(checked: CheckedCampaign) -> Options:
    recipients = checked.recipients
    municipalities = {r.cbs_code: r.municipality or r.cbs_code for r in recipients if r.cbs_code}
    return Options(
        municipalities=sorted(municipalities.items(), key=lambda item: fold(item[1] or "")),
        roles=sorted({r.role for r in recipients}),
        parties=sorted({r.party or NO_PARTY for r in recipients}, key=str.casefold),
        provinces=sorted({r.province for r in recipients if r.province}),
    )


def neighbours(
    checked: CheckedCampaign, filters: RecipientFilter, contact_id: int
) -> tuple[int | None, int | None, int, int]:
    """(previous id, next id, 1-based position, total) of ``contact_id`` in the filtered list; position 0
    when the contact is not in it (the filter changed, or the letter was opened by its address)."""
    found = matching(checked, filters)
    for index, recipient in enumerate(found):
        if recipient.contact_id == contact_id:
            previous = found[index - 1].contact_id if index > 0 else None
            following = found[index + 1].contact_id if index + 1 < len(found) else None
            return previous, following, index + 1, len(found)
    return None, None, 0, len(found)
