"""The state writer's group commits, on SQLite and on PostgreSQL: every transition lands exactly as
recorded, a mark on a row another worker holds is refused, and an outcome and a new ``sending`` mark of
the same delivery in one group (a retry with no delay) are applied in that order."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from outreach.db import open_database
from outreach.models import DeliveryState, utcnow
from outreach.registry.municipalities import load_municipalities
from outreach.sending.claim import DELIVERY, D
from outreach.sending.plan import plan_deliveries
from outreach.sending.writer import StateWriter, Transition
from outreach.sending.writer.sqlite import SqliteCommitter
from tests.fixtures_sending import CampaignFactory, add_raadsleden


def rows(engine: Engine) -> dict[int, dict[str, object]]:
    with engine.connect() as conn:
        found = conn.execute(select(DELIVERY).order_by(D.id)).mappings().all()
    return {int(row["id"]): dict(row) for row in found}


@dataclass
class Outcome:
    ids: tuple[int, int, int, int]
    theirs: int
    marks: list[bool]
    again: list[bool]
    sent_at: datetime


async def scenario(engine: Engine, campaign_id: int) -> Outcome:
    lease = timedelta(minutes=2)
    writer = StateWriter(
        engine, campaign_id=campaign_id, worker="w1", lease=lease, message_domain="example.org"
    )
    other = StateWriter(
        engine, campaign_id=campaign_id, worker="w2", lease=lease, message_domain="example.org"
    )
    writer.start()
    other.start()
    try:
        mine = await writer.claim(4, utcnow())
        theirs = await other.claim(1, utcnow())
        a, b, c, d = (row.id for row in mine)
        marks = await asyncio.gather(writer.mark_sending(a), writer.mark_sending(b), writer.mark_sending(c))
        sent_at = utcnow().replace(microsecond=0)
        retry_at = sent_at + timedelta(minutes=5)
        writer.record(Transition(a, DeliveryState.SENT, code=250, sent_at=sent_at))
        writer.record(Transition(c, DeliveryState.FAILED, code=550, error="no such user"))
        await writer.flush()
        # b's outcome and its next try in one group (a retry with no delay), d for the first time, and a
        # row of w2: one group commit, as the writer's loop makes it.
        deferred = Transition(
            b, DeliveryState.DEFERRED, code=451, error="try again", next_attempt_at=retry_at, keep_claim=True
        )
        marked = await writer._commit([deferred], [b, d, theirs[0].id], False)
        again = [row in marked for row in (b, d, theirs[0].id)]
        return Outcome((a, b, c, d), theirs[0].id, list(marks), again, sent_at)
    finally:
        await writer.close()
        await other.close()


def check(engine: Engine, campaign_id: int) -> None:
    result = asyncio.run(scenario(engine, campaign_id))
    a, b, c, d = result.ids
    assert result.marks == [True, True, True]
    assert result.again == [True, True, False]  # w2's row is not w1's to send
    state = rows(engine)
    assert (state[a]["state"], state[a]["last_code"], state[a]["sent_at"]) == ("sent", 250, result.sent_at)
    assert (state[a]["claimed_by"], state[a]["lease_until"]) == (None, None)
    assert (state[b]["state"], state[b]["attempts"], state[b]["last_code"]) == ("sending", 2, 451)
    assert state[b]["last_error"] == "try again" and state[b]["claimed_by"] == "w1"
    assert (state[c]["state"], state[c]["last_code"], state[c]["last_error"]) == (
        "failed",
        550,
        "no such user",
    )
    assert (state[c]["claimed_by"], state[c]["attempts"]) == (None, 1)
    assert (state[d]["state"], state[d]["attempts"]) == ("sending", 1)
    theirs = state[result.theirs]
    assert (theirs["state"], theirs["claimed_by"], theirs["attempts"]) == ("pending", "w2", 0)
    assert all(
        row["token"] and row["message_id"] for row in state.values() if row["claimed_by"] or row["sent_at"]
    )


def test_group_commits_on_sqlite(make_campaign: CampaignFactory, engine: Engine) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 6)
    check(engine, plan_deliveries(engine, campaign).campaign_id)


@pytest.mark.postgres
def test_group_commits_on_postgresql(pg_url: str, campaign_templates: object) -> None:
    engine = open_database(pg_url)
    try:
        load_municipalities(engine)
        campaign = CampaignFactory(Path(str(campaign_templates)), engine)()
        add_raadsleden(engine, 6)
        check(engine, plan_deliveries(engine, campaign).campaign_id)
    finally:
        engine.dispose()


def test_on_sqlite_the_writer_checkpoints_the_wal_itself(
    make_campaign: CampaignFactory, engine: Engine
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 300)
    campaign_id = plan_deliveries(engine, campaign).campaign_id

    async def one_commit_per_letter() -> StateWriter:
        writer = StateWriter(
            engine,
            campaign_id=campaign_id,
            worker="w1",
            lease=timedelta(minutes=2),
            message_domain="example.org",
        )
        writer.start()
        try:
            for row in await writer.claim(300, utcnow()):
                assert await writer.mark_sending(row.id)
                writer.record(Transition(row.id, DeliveryState.SENT, code=250, sent_at=utcnow()))
            await writer.flush()
        finally:
            await writer.close()
        return writer

    writer = asyncio.run(one_commit_per_letter())
    assert writer.commits >= 300
    assert isinstance(writer.committer, SqliteCommitter)
    checkpointer = writer.committer.checkpointer
    assert checkpointer is not None and checkpointer.checkpoints >= 1  # at least the one when it stops
    # Every commit is already in the database file itself: a copy of that file alone, without its WAL,
    # has all 300 letters sent.
    database = Path(str(engine.url.database))
    copy = database.with_name("without-wal.db")
    shutil.copyfile(database, copy)
    alone = sqlite3.connect(copy)
    try:
        assert alone.execute("SELECT state, count(*) FROM delivery GROUP BY state").fetchall() == [
            ("sent", 300)
        ]
    finally:
        alone.close()
    # The writer's connection went back to the pool as it came: checkpointing as SQLite does by default
    # and waiting for the write lock (its inline commits do not wait: a pooled connection that kept that
    # failed the next send's BEGIN IMMEDIATE at once with "database is locked"). Every pooled connection
    # at once, so the writer's is among them whatever order the pool hands them out in.
    pooled = [engine.connect() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        assert pooled
        for conn in pooled:
            raw = conn.connection.driver_connection
            assert raw is not None
            assert raw.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
            assert raw.execute("PRAGMA busy_timeout").fetchone() == (30_000,)
    finally:
        for conn in pooled:
            conn.close()
