"""Planning: one delivery per contact, created once; undeliverable ones skipped with the first reason that
applies, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from outreach.db import open_database
from outreach.models import Contact, Delivery, Suppression
from outreach.registry.keys import email_hash, email_key
from outreach.registry.municipalities import load_municipalities
from outreach.sending.plan import plan_deliveries
from tests.fixtures_sending import CampaignFactory, add_raadsleden


def plan_and_check(engine: Engine, make: CampaignFactory) -> None:
    campaign = make()
    addresses = add_raadsleden(engine, 6)
    first = plan_deliveries(engine, campaign)
    assert (first.created, first.skipped, first.total) == (6, 0, 6)

    suppressed_and_gone, no_address, gone, fine = addresses[:4]
    with Session(engine) as session:
        for address in (suppressed_and_gone, fine):
            key = email_key(address)
            session.add(
                Suppression(key_hash=email_hash(key), email_key=key, reason="opt-out", source="manual")
            )
        session.commit()
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE contact SET active = false WHERE email_normalized IN (:a, :b)"),
            {"a": suppressed_and_gone, "b": gone},
        )
        conn.execute(
            text("UPDATE contact SET email_normalized = '' WHERE email_normalized = :a"), {"a": no_address}
        )
        # A letter that already went out is never re-judged.
        conn.execute(
            text(
                "UPDATE delivery SET state = 'sent' WHERE contact_id = "
                "(SELECT id FROM contact WHERE email_normalized = :a)"
            ),
            {"a": fine},
        )
    add_raadsleden(engine, 2, start=6)

    again = plan_deliveries(engine, campaign)
    assert (again.created, again.skipped, again.total) == (2, 3, 8)
    with Session(engine) as session:
        rows = session.exec(
            select(Contact.email, Delivery.state, Delivery.skip_reason).join(
                Delivery, col(Delivery.contact_id) == col(Contact.id)
            )
        ).all()
    found = {address: (state, reason) for address, state, reason in rows}
    assert found[suppressed_and_gone] == ("skipped", "suppressed: opt-out")
    assert found[no_address] == ("skipped", "invalid address")
    assert found[gone] == ("skipped", "no longer in office")
    assert found[fine] == ("sent", None)
    assert [found[a] for a in addresses[4:]] == [("pending", None)] * 2
    assert len(found) == 8

    third = plan_deliveries(engine, campaign)
    assert (third.created, third.skipped, third.total) == (0, 0, 8)


def test_planning_on_sqlite(engine: Engine, make_campaign: CampaignFactory) -> None:
    plan_and_check(engine, make_campaign)


@pytest.mark.postgres
def test_planning_on_postgresql(pg_url: str, campaign_templates: Path) -> None:
    engine = open_database(pg_url)
    load_municipalities(engine)
    try:
        plan_and_check(engine, CampaignFactory(campaign_templates, engine))
    finally:
        engine.dispose()
