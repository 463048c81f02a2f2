"""The check of a campaign, kept per fingerprint so that pages never render 12,000 letters per request.

A ``CheckedCampaign`` is what `outreach check` computes (the same ``check_campaign``, the same composer)
plus what a reviewer browses: the audience in order and each recipient's problem. ``ReviewCache`` keeps
the latest one per campaign and checks again only when the folder's fingerprint or the registry
changed (contacts or suppressions added, edited or removed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar, cast

from sqlalchemy import Engine, func, select

from outreach.letters.approval import FolderSnapshot, snapshot_folder
from outreach.letters.campaign import CampaignConfig, with_web_base_url
from outreach.letters.campaign_file import campaign_folder, load_campaign
from outreach.letters.compose import LetterComposer
from outreach.letters.recipients import Recipient, table
from outreach.letters.review import CheckReport, audience, check_campaign, composer_for
from outreach.models import Contact, Suppression, utcnow
from outreach.registry.keys import fold

# Problem kinds of one recipient; "" is a letter that renders and will be sent.
FAILED, SUPPRESSED, INVALID = "failed", "suppressed", "invalid"

RegistryMark = tuple[object, ...]
T = TypeVar("T")


def registry_mark(engine: Engine) -> RegistryMark:
    """A cheap summary that changes whenever the audience could have: an import (new or updated
    contacts), an erasure or purge (fewer contacts), an opt-out or bounce (a new suppression)."""
    contact, suppression = table(Contact).c, table(Suppression).c
    with engine.connect() as conn:
        contacts = conn.execute(
            select(func.count(), func.max(contact.id), func.max(contact.updated_at))
        ).one()
        suppressions = conn.execute(select(func.count(), func.max(suppression.id))).one()
    return (*contacts, *suppressions)


@dataclass(frozen=True)
class Problem:
    kind: str  # FAILED, SUPPRESSED or INVALID
    reason: str  # the template error, the suppression reason, or what is wrong with the address


@dataclass
class CheckedCampaign:
    """A campaign as checked at one fingerprint: the report, the audience, each recipient's problem."""

    campaign: CampaignConfig
    snapshot: FolderSnapshot  # the folder as read before the check
    mark: RegistryMark
    report: CheckReport
    recipients: list[Recipient]  # audience order: municipality, role, surname
    composer: LetterComposer  # compiled once; composes one letter on request
    checked_at: datetime
    seconds: float  # how long the check took
    problems: dict[int, Problem] = field(default_factory=dict)  # contact id -> problem
    position: dict[int, int] = field(default_factory=dict)  # contact id -> index in recipients
    search_keys: list[str] = field(default_factory=list)  # folded "name address", as recipients
    # What pages derive from the check alone (counts, filter options), computed once per check.
    memo: dict[str, object] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return self.snapshot.fingerprint

    def __post_init__(self) -> None:
        for index, recipient in enumerate(self.recipients):
            self.position[recipient.contact_id] = index
            self.search_keys.append(fold(f"{recipient.name} {recipient.email}"))
            if recipient.suppressed:
                self.problems[recipient.contact_id] = Problem(SUPPRESSED, recipient.suppressed)
            elif recipient.email_problem:
                self.problems[recipient.contact_id] = Problem(INVALID, recipient.email_problem)
        for failure in self.report.failures:
            if failure.contact_id is not None:
                self.problems[failure.contact_id] = Problem(FAILED, failure.problem)

    def remember(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()``, once per check: the result depends on nothing but this check."""
        if key not in self.memo:
            self.memo[key] = compute()
        return cast(T, self.memo[key])

    def recipient(self, contact_id: int) -> Recipient | None:
        index = self.position.get(contact_id)
        return None if index is None else self.recipients[index]


def check(
    engine: Engine,
    templates_dir: Path,
    slug: str,
    *,
    mark: RegistryMark | None = None,
    web_base_url: str | None = None,
) -> CheckedCampaign:
    """Read the folder, load the campaign and check every letter (what `outreach check` does, with the
    same composer: the campaign's kenmerk, the PDF store, the unsubscribe link of `outreach serve`)."""
    started = time.perf_counter()
    snapshot = snapshot_folder(campaign_folder(templates_dir, slug))
    mark = registry_mark(engine) if mark is None else mark
    campaign = with_web_base_url(load_campaign(templates_dir, slug), web_base_url)
    composer = composer_for(engine, campaign)
    recipients = audience(engine, campaign)
    report = check_campaign(engine, campaign, recipients=recipients, composer=composer)
    return CheckedCampaign(
        campaign=campaign,
        snapshot=snapshot,
        mark=mark,
        report=report,
        recipients=recipients,
        composer=composer,
        checked_at=utcnow(),
        seconds=time.perf_counter() - started,
    )


class ReviewCache:
    """The latest check of each campaign, redone only when its fingerprint or the registry changed.

    Safe for the threads of a web server: one check runs at a time per cache, and a request that
    arrives while it runs waits for its result instead of starting another.
    """

    def __init__(self, engine: Engine, templates_dir: Path, *, web_base_url: str | None = None) -> None:
        self.engine = engine
        self.templates_dir = templates_dir
        self.web_base_url = web_base_url
        self._checked: dict[str, CheckedCampaign] = {}
        self._lock = threading.Lock()

    def get(self, slug: str) -> CheckedCampaign:
        """The campaign as checked now; raises CampaignError/NotFoundError when it does not load."""
        with self._lock:
            fingerprint = snapshot_folder(campaign_folder(self.templates_dir, slug)).fingerprint
            mark = registry_mark(self.engine)
            cached = self._checked.get(slug)
            if cached is not None and cached.fingerprint == fingerprint and cached.mark == mark:
                return cached
            checked = check(self.engine, self.templates_dir, slug, mark=mark, web_base_url=self.web_base_url)
            self._checked[slug] = checked
            return checked
