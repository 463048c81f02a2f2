"""Dutch dates without the system locale: servers run in C or en_US, letters are in Dutch."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

AMSTERDAM = ZoneInfo("Europe/Amsterdam")

WEEKDAYS = ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag")
MONTHS = (
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
)


def amsterdam_date(moment: datetime) -> date:
    """The calendar date in the Netherlands at ``moment`` (naive means UTC, as in the database)."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return aware.astimezone(AMSTERDAM).date()


def long_date(day: date | datetime) -> str:
    """'donderdag 25 januari 2024'. A datetime is first converted to the Dutch calendar date."""
    if isinstance(day, datetime):
        day = amsterdam_date(day)
    return f"{WEEKDAYS[day.weekday()]} {day.day} {MONTHS[day.month - 1]} {day.year}"


def short_date(day: date | datetime) -> str:
    """'25 januari 2024'."""
    if isinstance(day, datetime):
        day = amsterdam_date(day)
    return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
