"""The audience SELECT and the recipient snapshot, on SQLite and on the real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, insert, literal, select
from sqlmodel import Session

from outreach.db import open_database
from outreach.letters.campaign import CampaignConfig
from outreach.letters.recipients import load_recipients, table
from outreach.models import Campaign, Delivery, Suppression
from outreach.registry.audience import audience_contact_ids
from outreach.registry.keys import email_hash, email_key
from tests.factories import add_contact, load_reference
from tests.fixtures_letters import MINIMAL_TOML, CampaignWriter


def populate(engine: Engine) -> dict[str, int]:
    """A small registry across three municipalities; returns contact ids by e-mail."""
    with Session(engine) as session:
        contacts = [
            add_contact(session, "anna@utrecht.nl", cbs_code="GM0344", party="D66", achternaam="Dijk"),
            add_contact(session, "bert@utrecht.nl", cbs_code="GM0344", party="CDA"),
            add_contact(session, "griffie@utrecht.nl", role="griffie", cbs_code="GM0344"),
            add_contact(
                session, "weth@utrecht.nl", role="wethouder", cbs_code="GM0344", portfolio="Jeugd, Zorg"
            ),
            add_contact(
                session, "weth2@utrecht.nl", role="wethouder", cbs_code="GM0344", portfolio="Financiën"
            ),
            add_contact(session, "cor@denhaag.nl", cbs_code="GM0518", party="d66"),
            add_contact(session, "griffie@denhaag.nl", role="griffie", cbs_code="GM0518"),
            add_contact(session, "dirk@groningen.nl", cbs_code="GM0014", party="PvdA"),
            add_contact(session, "griffie@groningen.nl", role="griffie", cbs_code="GM0014"),
            add_contact(session, "weg@utrecht.nl", cbs_code="GM0344", active=False),
            add_contact(session, "afgemeld@utrecht.nl", cbs_code="GM0344"),
        ]
        session.add(
            Suppression(key_hash=email_hash(email_key("afgemeld@utrecht.nl")), reason="opt-out", source="t")
        )
        session.commit()
        return {c.email or "": int(c.id or 0) for c in contacts}


def selected(engine: Engine, campaign: CampaignConfig, ids: dict[str, int]) -> set[str]:
    by_id = {v: k for k, v in ids.items()}
    with engine.connect() as conn:
        return {by_id[i] for i in conn.execute(audience_contact_ids(campaign)).scalars()}


def audience_toml(audience: str) -> str:
    return MINIMAL_TOML.replace('[audience]\nroles = ["raadslid"]\n', audience)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, engine: Engine) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield engine
        return
    url: str = request.getfixturevalue("pg_url")
    pg = open_database(url)
    yield pg
    pg.dispose()


@pytest.mark.parametrize(
    ("audience", "expected"),
    [
        (
            '[audience]\nroles = ["raadslid"]\n',
            {
                "anna@utrecht.nl",
                "bert@utrecht.nl",
                "cor@denhaag.nl",
                "dirk@groningen.nl",
                "afgemeld@utrecht.nl",
            },
        ),
        ('[audience]\nroles = ["raadslid"]\nprovinces = ["Groningen"]\n', {"dirk@groningen.nl"}),
        ('[audience]\nroles = ["raadslid"]\nprovinces = ["PV28"]\n', {"cor@denhaag.nl"}),
        ('[audience]\nroles = ["raadslid"]\nmunicipalities = ["Den Haag"]\n', {"cor@denhaag.nl"}),
        ('[audience]\nroles = ["raadslid"]\nmunicipalities = ["gm0014"]\n', {"dirk@groningen.nl"}),
        ('[audience]\nroles = ["raadslid"]\nparties = ["D66"]\n', {"anna@utrecht.nl", "cor@denhaag.nl"}),
        ('[audience]\nroles = ["wethouder"]\nportfolio = ["jeugd"]\n', {"weth@utrecht.nl"}),
        ('[audience]\nroles = ["wethouder"]\nportfolio = ["jeu_d", "%"]\n', set()),  # no LIKE wildcards
        (
            '[audience]\nroles = ["griffie"]\nprovinces = ["utrecht", "groningen"]\n',
            {"griffie@utrecht.nl", "griffie@groningen.nl"},
        ),
    ],
)
def test_audience_filters(
    any_engine: Engine, write_campaign: CampaignWriter, audience: str, expected: set[str]
) -> None:
    load_reference(any_engine)
    ids = populate(any_engine)
    campaign = write_campaign(toml=audience_toml(audience))
    assert selected(any_engine, campaign, ids) == expected


def test_separate_copies_add_the_griffie_of_each_audience_municipality(
    any_engine: Engine, write_campaign: CampaignWriter
) -> None:
    load_reference(any_engine)
    ids = populate(any_engine)
    toml = audience_toml('[audience]\nroles = ["raadslid"]\nparties = ["D66"]\n')
    campaign = write_campaign(
        toml=toml.replace('name = "Testbrief"', 'name = "Testbrief"\ngriffie_copy = "separate"')
    )
    # D66 sits in Utrecht and Den Haag: their griffies get a copy, Groningen's does not.
    assert selected(any_engine, campaign, ids) == {
        "anna@utrecht.nl",
        "cor@denhaag.nl",
        "griffie@utrecht.nl",
        "griffie@denhaag.nl",
    }


def test_the_audience_select_feeds_an_insert_into_delivery(
    any_engine: Engine, write_campaign: CampaignWriter
) -> None:
    load_reference(any_engine)
    ids = populate(any_engine)
    campaign = write_campaign()
    with any_engine.begin() as conn:
        result = conn.execute(insert(table(Campaign)).values(slug="test", name="Test"))
        campaign_id = result.inserted_primary_key[0]  # type: ignore[index]
        audience = audience_contact_ids(campaign).subquery()
        conn.execute(
            insert(table(Delivery)).from_select(
                ["campaign_id", "contact_id", "state", "attempts", "created_at", "updated_at"],
                select(
                    literal(campaign_id),
                    audience.c.id,
                    literal("pending"),
                    literal(0),
                    func.now(),
                    func.now(),
                ),
            )
        )
        planned = set(conn.execute(select(table(Delivery).c.contact_id)).scalars())
    assert planned == {ids[e] for e in selected(any_engine, campaign, ids)}
    assert ids["weg@utrecht.nl"] not in planned
    assert ids["afgemeld@utrecht.nl"] in planned  # suppressed: planning marks it skipped


def test_recipients_carry_municipality_griffie_and_suppression(
    any_engine: Engine, write_campaign: CampaignWriter
) -> None:
    load_reference(any_engine)
    ids = populate(any_engine)
    with any_engine.connect() as conn:
        recipients = load_recipients(
            conn, [ids["anna@utrecht.nl"], ids["afgemeld@utrecht.nl"], ids["griffie@utrecht.nl"], 999999]
        )
    assert set(recipients) == {ids["anna@utrecht.nl"], ids["afgemeld@utrecht.nl"], ids["griffie@utrecht.nl"]}
    anna = recipients[ids["anna@utrecht.nl"]]
    assert (anna.municipality, anna.cbs_code, anna.province) == ("Utrecht", "GM0344", "Utrecht")
    assert anna.griffie_email == "griffie@utrecht.nl"
    assert anna.party == "D66" and anna.achternaam == "Dijk"
    assert anna.suppressed is None and anna.sendable
    assert recipients[ids["afgemeld@utrecht.nl"]].suppressed == "opt-out"
    assert not recipients[ids["afgemeld@utrecht.nl"]].sendable
    assert recipients[ids["griffie@utrecht.nl"]].griffie_email is None  # not a copy to itself


def test_a_suppressed_griffie_is_never_copied(engine: Engine) -> None:
    load_reference(engine)
    ids = populate(engine)
    with Session(engine) as session:
        session.add(Suppression(key_hash=email_hash("griffie@denhaag.nl"), reason="opt-out", source="t"))
        session.commit()
    with engine.connect() as conn:
        recipients = load_recipients(conn, [ids["cor@denhaag.nl"]])
    assert recipients[ids["cor@denhaag.nl"]].griffie_email is None


def test_load_recipients_accepts_the_audience_select(engine: Engine, write_campaign: CampaignWriter) -> None:
    load_reference(engine)
    ids = populate(engine)
    campaign = write_campaign()
    with Session(engine) as session:
        recipients = load_recipients(session, audience_contact_ids(campaign))
    assert {r.email for r in recipients.values()} == selected(engine, campaign, ids)


def test_load_recipients_splits_long_id_lists(engine: Engine) -> None:
    load_reference(engine)
    ids = populate(engine)
    many = [*range(100_000, 125_000), ids["anna@utrecht.nl"]]
    with engine.connect() as conn:
        assert list(load_recipients(conn, many)) == [ids["anna@utrecht.nl"]]


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("", "no e-mail address"),
        ("anna", "not an e-mail address"),
        ("anna @utrecht.nl", "space or control character"),
        ("anna@utrecht.nl\r\nBcc: x@y.nl", "space or control character"),
        ("ännä@utrecht.nl", "SMTPUTF8"),
    ],
)
def test_unusable_addresses_are_flagged(engine: Engine, address: str, problem: str) -> None:
    load_reference(engine)
    with Session(engine) as session:
        contact = add_contact(session, "placeholder@utrecht.nl")
        contact.email_normalized = address
        session.commit()
        contact_id = int(contact.id or 0)
    with engine.connect() as conn:
        recipient = load_recipients(conn, [contact_id])[contact_id]
    assert recipient.email_problem is not None and problem in recipient.email_problem
    assert not recipient.sendable
