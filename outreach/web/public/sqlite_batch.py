"""The writer's batch of opt-outs on SQLite as the driver's own SQL (``store.BatchStatements``).

The same four statements as ``store.CoreStatements``; through SQLAlchemy, building, caching and binding
them cost the writer thread four times what SQLite itself spent on them (docs/performance.md, *Web*), CPU a
running send on the same machine goes without. Datetimes are converted as SQLAlchemy's SQLite type does,
so both write the same text and read it back alike.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from outreach.models import DeliveryState
from outreach.sqlite_driver import Conversions
from outreach.tracking.events import CAMPAIGN, CONTACT, DELIVERY, EVENT, SUPPRESSION
from outreach.web.public.store import Letter, wanted_tokens

_EVENT_COLUMNS = (
    "kind",
    "contact_id",
    "delivery_id",
    "campaign_id",
    "occurred_at",
    "recorded_at",
    "source",
    "text",
    "dedupe_key",
)
_SUPPRESSION_COLUMNS = ("key_hash", "email_key", "reason", "source", "created_at")
_DATETIMES = {"occurred_at", "recorded_at", "created_at"}


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)


@lru_cache(maxsize=256)
def _letters_sql(count: int) -> str:
    return (
        "SELECT d.id, d.token, d.campaign_id, d.contact_id, c.slug, c.name, p.email_key, p.opted_in_at "
        f"FROM {DELIVERY.name} AS d JOIN {CAMPAIGN.name} AS c ON c.id = d.campaign_id "
        f"LEFT OUTER JOIN {CONTACT.name} AS p ON p.id = d.contact_id WHERE d.token IN ({_marks(count)})"
    )


@lru_cache(maxsize=256)
def _insert_sql(table: str, columns: tuple[str, ...], count: int, conflict: str, returning: str) -> str:
    row = f"({_marks(len(columns))})"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({conflict}) DO NOTHING RETURNING {returning}"
    )


@lru_cache(maxsize=256)
def _skip_sql(keys: int, states: int, one_campaign: bool) -> str:
    return (
        f"UPDATE {DELIVERY.name} SET state = ?, skip_reason = ?, next_attempt_at = NULL, updated_at = ? "
        f"WHERE contact_id IN (SELECT id FROM {CONTACT.name} WHERE email_key IN ({_marks(keys)})) "
        f"AND state IN ({_marks(states)})" + (" AND campaign_id = ?" if one_campaign else "")
    )


class DriverStatements:
    """``BatchStatements`` on a pysqlite connection inside the caller's transaction."""

    def __init__(self, conn: sqlite3.Connection, convert: Conversions) -> None:
        self.conn = conn
        self.stamp, self.parse = convert

    def letters(self, tokens: Sequence[str]) -> dict[str, Letter]:
        wanted = wanted_tokens(tokens)
        if not wanted:
            return {}
        rows = self.conn.execute(_letters_sql(len(wanted)), wanted).fetchall()
        return {
            token: Letter(
                delivery_id=delivery_id,
                campaign_id=campaign_id,
                campaign_slug=slug,
                campaign_name=name,
                contact_id=contact_id,
                email_key=email_key,
                suppression=None,
                campaign_opt_out=False,
                opted_in_at=None if opted_in_at is None else self.parse(opted_in_at),
            )
            for delivery_id, token, campaign_id, contact_id, slug, name, email_key, opted_in_at in rows
        }

    def add_events(self, rows: list[dict[str, Any]]) -> set[str]:
        sql = _insert_sql(EVENT.name, _EVENT_COLUMNS, len(rows), "dedupe_key", "dedupe_key")
        return {key for (key,) in self.conn.execute(sql, self._values(rows, _EVENT_COLUMNS))}

    def add_suppressions(self, rows: list[dict[str, Any]]) -> set[str]:
        sql = _insert_sql(SUPPRESSION.name, _SUPPRESSION_COLUMNS, len(rows), "key_hash", "email_key")
        return {key for (key,) in self.conn.execute(sql, self._values(rows, _SUPPRESSION_COLUMNS))}

    def skip(
        self, keys: list[str], campaign_id: int | None, states: list[str], reason: str, now: datetime
    ) -> None:
        values: list[Any] = [DeliveryState.SKIPPED.value, reason, self.stamp(now), *keys, *states]
        if campaign_id is not None:
            values.append(campaign_id)
        self.conn.execute(_skip_sql(len(keys), len(states), campaign_id is not None), values)

    def _values(self, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[Any]:
        stamp = self.stamp
        return [
            stamp(row[column]) if column in _DATETIMES else row[column] for row in rows for column in columns
        ]
