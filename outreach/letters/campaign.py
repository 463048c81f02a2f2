"""What a campaign is: the validated contents of its folder (``templates/letters/<slug>/campaign.toml``
plus its templates and attachments), as frozen dataclasses. Reading and validating the folder is
``outreach.letters.campaign_file``; the format is documented in docs/campaigns.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
GriffieCopy = Literal["none", "cc", "separate"]
Salutation = Literal["formal", "informal"]
CAMPAIGN_FILE = "campaign.toml"
MAX_APPROVALS = 5  # `approvals = N`: more reviewers than this is a typo, not a policy

_DAY_ORDER = ("ma", "di", "wo", "do", "vr", "za", "zo")


@dataclass(frozen=True)
class SendingWindow:
    """Days and hours (Europe/Amsterdam) in which letters may go out; ``end`` is exclusive."""

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    def _local(self, dt: datetime) -> datetime:
        aware = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
        return aware.astimezone(AMSTERDAM)

    def is_open(self, dt_utc: datetime) -> bool:
        """Whether ``dt_utc`` (naive UTC as in the database, or aware) falls inside the window."""
        local = self._local(dt_utc)
        return local.weekday() in self.days and self.start <= local.time().replace(tzinfo=None) < self.end

    def next_open(self, dt_utc: datetime) -> datetime:
        """``dt_utc`` itself when the window is open, else the next moment it opens.

        Returns naive UTC for a naive argument and aware UTC for an aware one.
        """
        if self.is_open(dt_utc):
            return dt_utc
        local = self._local(dt_utc)
        for offset in range(8):
            day: date = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            # Round-trip through UTC so that a start inside a DST gap lands on a real instant.
            opens = datetime.combine(day, self.start, tzinfo=AMSTERDAM).astimezone(UTC)
            if opens > local:
                return opens if dt_utc.tzinfo is not None else opens.replace(tzinfo=None)
        raise AssertionError("a window with at least one day opens within a week")  # pragma: no cover

    def describe(self) -> str:
        days = ", ".join(_DAY_ORDER[d] for d in sorted(self.days))
        return f"{days} {self.start:%H:%M}-{self.end:%H:%M} (Europe/Amsterdam)"


@dataclass(frozen=True)
class SendingConfig:
    """What the sender needs from the campaign; None means 'use the sender's default'."""

    rate: float | None = None  # messages per second, all domains together
    domain_rate: float | None = None  # messages per second to one recipient domain
    domain_connections: int = 2  # concurrent SMTP sessions carrying mail for one recipient domain
    max_per_connection: int = 100  # messages per SMTP session before it is closed and reopened
    window: SendingWindow | None = None
    verp_local: str | None = None  # "bounces" -> envelope sender bounces+<token>@<message domain>
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    dkim_key_file: Path | None = None
    # Destinations are mail servers too (outreach/sending/mx.py): recipient domains behind one MX provider
    # (Exchange Online) share these limits and the slow-down when it signals overload.
    mx_groups: bool = True  # look up each recipient domain's MX once per run and group by provider
    group_connections: int = 20  # letters in flight at once per MX group (Postfix's default per destination)
    group_rate: float | None = None  # letters per second per MX group


@dataclass(frozen=True)
class Audience:
    """Who the campaign addresses. Empty filters mean 'no restriction'; roles are required."""

    roles: tuple[str, ...]
    provinces: tuple[str, ...] = ()  # names ("Fryslân") or CBS codes ("PV21")
    municipalities: tuple[str, ...] = ()  # CBS codes ("GM0344") or names/aliases ("Den Haag")
    parties: tuple[str, ...] = ()  # fractie names, compared case-insensitively
    portfolio: tuple[str, ...] = ()  # words one of which the portfolio must contain ("jeugd")


@dataclass(frozen=True)
class PrivacyConfig:
    notice: bool = True
    address_source: str = (
        "de openbare gegevens van uw gemeente, zoals de website en het raadsinformatiesysteem"
    )
    text: str | None = None  # template file replacing the built-in notice (text)
    html: str | None = None  # template file replacing the built-in notice (HTML)


@dataclass(frozen=True)
class Signer:
    """Who signs the letter: a person's name and function carry more weight than a team name."""

    name: str
    function: str = ""


@dataclass(frozen=True)
class LetterConfig:
    """``[letter]``: the formal letter rendered to PDF per recipient; files inside the campaign folder."""

    template: str  # Jinja HTML, same sandbox and variables as the e-mail templates
    stylesheet: str | None = None  # CSS (paged media) applied to the letter
    logo: str | None = None  # image for the letterhead: {{ letter.logo }}
    signature: str | None = None  # image of the signature: {{ letter.signature }}


@dataclass(frozen=True)
class CampaignConfig:
    slug: str
    name: str
    folder: Path
    from_name: str
    from_address: str
    reply_to: str
    message_domain: str
    audience: Audience
    griffie_copy: GriffieCopy
    sending: SendingConfig
    subject: str  # Jinja source
    text_template: str  # file name inside folder
    html_template: str | None = None
    attachments: tuple[Path, ...] = ()
    unsubscribe_mailto: str | None = None
    unsubscribe_url: str | None = None  # Jinja source; {{ token }} is the delivery's token
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    salutation: Salutation = "formal"
    griffie_copy_label: str = ""  # "de raadsleden": whom the griffie's separate copy was sent to
    signature: str = ""  # informational: who signs, shown by `campaign show`
    approvals: int = 1  # how many different people must approve before `send` (2: four eyes)
    web_base_url: str | None = None  # settings' [web] base_url: {{ optin_url }}, default unsubscribe URL
    signer: Signer | None = None  # [signer]: name and function, {{ signer.name }}, {{ signer.function }}
    letter: LetterConfig | None = None  # [letter]: a PDF letter per recipient, attached to the e-mail
    place: str = ""  # [from] place: the sender's town for the date line ("Utrecht, 1 december 2026")
    kenmerk_prefix: str = ""  # "HVK": the first part of every delivery's kenmerk

    @property
    def toml_path(self) -> Path:
        return self.folder / CAMPAIGN_FILE


def with_web_base_url(campaign: CampaignConfig, base_url: str | None) -> CampaignConfig:
    """The campaign as `outreach serve` at ``base_url`` answers it: ``{{ optin_url }}`` is
    ``<base_url>/aanmelden/<token>`` and, unless campaign.toml sets ``[unsubscribe] url``, the
    unsubscribe link (List-Unsubscribe, RFC 8058 one-click) is ``<base_url>/afmelden/<token>``."""
    if not base_url:
        return campaign
    return dataclasses.replace(
        campaign,
        web_base_url=base_url,
        unsubscribe_url=campaign.unsubscribe_url or base_url + "/afmelden/{{ token }}",
    )
