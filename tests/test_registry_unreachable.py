"""Office holders without an e-mail address (the government register lists many): they are contacts,
planning skips them with the reason, `check` and `report` count them, and `contacts show/export/forget`
name them by register id. One letter per mailbox, whichever offices it serves."""

from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.letters.review import check_campaign
from outreach.models import Contact, Delivery, Suppression
from outreach.registry.audience import audience_contact_ids
from outreach.registry.keys import email_hash, register_key
from outreach.sending.plan import plan_deliveries
from outreach.tracking.privacy import export_person, forget_person
from outreach.tracking.report import campaign_report
from tests.factories import add_contact, municipality
from tests.fixtures_sending import CampaignFactory


def _without_address(
    session: Session,
    register_id: str,
    cbs_code: str = "GM0344",
    *,
    role: str = "raadslid",
    achternaam: str = "Voorbeeld",
) -> Contact:
    muni = municipality(session, cbs_code)
    contact = Contact(
        municipality_id=muni.id,
        role=role,
        register_id=register_id,
        achternaam=achternaam,
        voorletters="S.",
        sort_name=achternaam.casefold(),
        source="register export 2026-04-20",
    )
    session.add(contact)
    session.flush()
    return contact


def _populate(engine: Engine) -> None:
    with Session(engine) as session:
        add_contact(session, "anna@utrecht.nl", achternaam="Dijk")
        _without_address(session, "1001")
        _without_address(session, "1002", cbs_code="GM0193", achternaam="Zonder")
        session.commit()


def _skip_reasons(engine: Engine) -> dict[str | None, tuple[str, str | None]]:
    with Session(engine) as session:
        rows = session.exec(
            select(Contact.register_id, Delivery.state, Delivery.skip_reason).join(
                Delivery, col(Delivery.contact_id) == col(Contact.id)
            )
        ).all()
    return {rid: (state, reason) for rid, state, reason in rows}


def test_planning_skips_a_contact_without_address_and_reports_count_them(
    engine: Engine, make_campaign: CampaignFactory
) -> None:
    _populate(engine)
    campaign = make_campaign()
    report = check_campaign(engine, campaign)
    assert (report.recipients, report.no_email, report.invalid, report.rendered) == (3, 2, 0, 1)

    planned = plan_deliveries(engine, campaign)
    assert (planned.created, planned.skipped) == (3, 2)
    assert _skip_reasons(engine) == {
        None: ("pending", None),
        "1001": ("skipped", "no e-mail address"),
        "1002": ("skipped", "no e-mail address"),
    }
    assert plan_deliveries(engine, campaign).created == 0

    result = campaign_report(engine, campaign.slug, by="municipality")
    assert {(r.group, r.letters, r.skipped, r.no_email) for r in result.rows} == {
        ("Utrecht", 2, 1, 1),
        ("Zwolle", 1, 1, 1),
    }
    assert result.totals.no_email == 2
    zwolle = next(m for m in result.uncovered if m.cbs_code == "GM0193")
    assert (zwolle.letters, zwolle.no_email) == (1, 1)


def test_check_and_report_commands_say_who_cannot_be_reached(
    engine: Engine, make_campaign: CampaignFactory, runner: CliRunner, db_url: str
) -> None:
    _populate(engine)
    campaign = make_campaign()
    checked = runner.invoke(app, ["--database", db_url, "check", "--campaign", campaign.slug])
    assert checked.exit_code == 0, checked.output
    assert "2 of the 3 in the audience cannot be reached by e-mail" in checked.stdout
    plan_deliveries(engine, campaign)
    shown = runner.invoke(app, ["--database", db_url, "report", "--campaign", campaign.slug, "--json"])
    assert shown.exit_code == 0, shown.output
    coverage = json.loads(shown.stdout)["coverage"]
    assert {
        "cbs_code": "GM0193",
        "name": "Zwolle",
        "province": "Overijssel",
        "letters": 1,
        "no_email": 1,
    } in (coverage["uncovered"])


def test_show_export_and_forget_name_a_contact_by_register_id(
    engine: Engine, make_campaign: CampaignFactory, runner: CliRunner, db_url: str
) -> None:
    _populate(engine)
    campaign = make_campaign()
    plan_deliveries(engine, campaign)

    shown = runner.invoke(app, ["--database", db_url, "contacts", "show", "register:1001"])
    assert shown.exit_code == 0, shown.output
    assert "Register id    1001" in shown.stdout and "none: no letter can be e-mailed" in shown.stdout
    listed = runner.invoke(app, ["--database", db_url, "contacts", "list", "--municipality", "Zwolle"])
    assert "- (no e-mail; register:1002)" in listed.stdout
    missing = runner.invoke(app, ["--database", db_url, "contacts", "show", "register:4242"])
    assert missing.exit_code == 1 and "no contact with register id 4242" in missing.output

    document = export_person(engine, "1001")
    assert document["email"] == "register:1001"
    assert [(c["register_id"], c["email"], c["achternaam"]) for c in document["contacts"]] == [
        ("1001", None, "Voorbeeld")
    ]
    assert [letter["skip_reason"] for letter in document["letters"]] == ["no e-mail address"]

    forgotten = forget_person(engine, "register:1001")
    assert (forgotten.email, forgotten.contacts, forgotten.letters) == ("register:1001", 1, 1)
    with Session(engine) as session:
        assert session.exec(select(Contact).where(Contact.register_id == "1001")).first() is None
        kept = session.exec(
            select(Suppression.reason).where(Suppression.key_hash == email_hash(register_key("1001")))
        ).all()
    assert kept == ["forgotten"]
    refused = runner.invoke(app, ["--database", db_url, "contacts", "export", "not-an-address"])
    assert refused.exit_code == 2 and "register:" in refused.output


def test_one_letter_per_mailbox_whatever_the_offices(engine: Engine, make_campaign: CampaignFactory) -> None:
    with Session(engine) as session:
        first = add_contact(session, "jan@utrecht.nl", role="raadslid", achternaam="Jansen").id
        add_contact(session, "Jan@Utrecht.nl", role="wethouder", achternaam="Jansen")
        add_contact(session, "griffie@utrecht.nl", role="griffier", achternaam="Griffioen")
        add_contact(session, "griffie@utrecht.nl", role="griffie")
        _without_address(session, "2001")
        _without_address(session, "2002", role="wethouder")
        session.commit()
    campaign = make_campaign()
    everyone = replace(
        campaign, audience=replace(campaign.audience, roles=("raadslid", "wethouder", "griffier", "griffie"))
    )
    with engine.connect() as conn:
        ids = list(conn.execute(audience_contact_ids(everyone)).scalars())
    assert len(ids) == 4 and first in ids  # jan once (his first office), the griffie once, two without
    planned = plan_deliveries(engine, everyone)
    assert (planned.created, plan_deliveries(engine, everyone).created) == (4, 0)
    with engine.connect() as conn:
        letters = conn.execute(select(func.count()).select_from(Delivery)).scalar_one()
    assert letters == 4
