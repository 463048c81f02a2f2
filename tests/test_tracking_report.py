"""`outreach report`: numbers per campaign and per role, party, province, municipality; coverage."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database, session_scope
from outreach.errors import NotFoundError
from outreach.letters.campaign import Audience
from outreach.models import Campaign, DeliveryState, Event, EventKind
from outreach.tracking.report import build_report, campaign_report
from tests.factories import add_contact, load_reference
from tests.fixtures_tracking import add_campaign, add_delivery

SLUG = "jeugdzorg-2026"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_database(url)
    load_reference(engine)
    yield engine
    engine.dispose()


def _event(
    session: Session,
    campaign: Campaign,
    delivery_id: int | None,
    kind: EventKind,
    bounce: tuple[str, str] | None = None,
) -> None:
    event = Event(kind=kind.value, delivery_id=delivery_id, campaign_id=campaign.id, source="manual")
    if bounce is not None:
        event.bounce_type, event.status_code = bounce
    session.add(event)


def seed(engine: Engine) -> None:
    """Seven letters in two provinces, with every outcome the report distinguishes."""
    with session_scope(engine) as session:
        campaign = add_campaign(session, SLUG, "Jeugdzorg 2026")
        other = add_campaign(session, "ander", "Andere campagne")

        def letter(email: str, role: str, cbs: str, party: str | None, state: DeliveryState) -> int:
            contact = add_contact(session, email, role=role, cbs_code=cbs, party=party)
            delivery = add_delivery(session, campaign, contact, state=state)
            assert delivery.id is not None
            return delivery.id

        a = letter("a@utrecht.nl", "wethouder", "GM0344", None, DeliveryState.SENT)
        b = letter("b@utrecht.nl", "raadslid", "GM0344", "VVD", DeliveryState.SENT)
        c = letter("c@utrecht.nl", "raadslid", "GM0344", "D66", DeliveryState.FAILED)
        d = letter("d@amersfoort.nl", "raadslid", "GM0307", "VVD", DeliveryState.SENT)
        letter("e@amersfoort.nl", "raadslid", "GM0307", "VVD", DeliveryState.SKIPPED)
        letter("f@zwolle.nl", "raadslid", "GM0193", "D66", DeliveryState.PENDING)
        g = letter("g@deventer.nl", "wethouder", "GM0150", None, DeliveryState.SENT)
        _event(session, campaign, a, EventKind.REPLY)
        _event(session, campaign, b, EventKind.AUTO_REPLY)
        _event(session, campaign, c, EventKind.BOUNCE, ("hard", "5.1.1"))
        _event(session, campaign, d, EventKind.OPT_OUT)
        _event(session, campaign, g, EventKind.REPLY)
        _event(session, campaign, g, EventKind.REPLY)  # a second reply: still one answered letter
        _event(session, campaign, g, EventKind.BOUNCE, ("soft", "4.2.2"))
        _event(session, campaign, None, EventKind.NOTE)  # on the campaign, not on a letter
        # Another campaign's letter and response are not counted.
        stranger = add_contact(session, "h@utrecht.nl", role="raadslid", cbs_code="GM0344")
        elsewhere = add_delivery(session, other, stranger)
        _event(session, other, elsewhere.id, EventKind.REPLY)


def _numbers(row: object) -> tuple[int, ...]:
    names = (
        "letters",
        "sent",
        "failed",
        "skipped",
        "bounced",
        "replied",
        "auto_replied",
        "opted_out",
        "delivered",
    )
    return tuple(getattr(row, n) for n in names)


def test_totals(db: Engine) -> None:
    seed(db)
    report = campaign_report(db, SLUG)
    #                               letters sent failed skipped bounced replied auto opted delivered
    assert _numbers(report.totals) == (7, 5, 1, 1, 2, 2, 1, 1, 4)
    assert report.totals.response_rate == 0.5
    assert report.rows == [] and report.name == "Jeugdzorg 2026"


def test_grouped_by_role_party_province_municipality(db: Engine) -> None:
    seed(db)
    by_role = {r.group: r for r in campaign_report(db, SLUG, by="role").rows}
    assert _numbers(by_role["wethouder"]) == (2, 2, 0, 0, 1, 2, 0, 0, 2)
    assert by_role["wethouder"].response_rate == 1.0
    assert _numbers(by_role["raadslid"]) == (5, 3, 1, 1, 1, 0, 1, 1, 2)
    assert by_role["raadslid"].response_rate == 0.0

    by_party = {r.group: r.letters for r in campaign_report(db, SLUG, by="party").rows}
    assert by_party == {None: 2, "D66": 2, "VVD": 3}

    by_province = {r.group: (r.letters, r.replied) for r in campaign_report(db, SLUG, by="province").rows}
    assert by_province == {"Overijssel": (2, 1), "Utrecht": (5, 1)}

    rows = campaign_report(db, SLUG, by="municipality").rows
    assert [(r.code, r.group, r.letters, r.delivered) for r in rows] == [
        ("GM0307", "Amersfoort", 2, 1),
        ("GM0150", "Deventer", 1, 1),
        ("GM0344", "Utrecht", 3, 2),
        ("GM0193", "Zwolle", 1, 0),
    ]
    # The groups add up to the totals.
    assert sum(r.letters for r in rows) == 7 and sum(r.replied for r in rows) == 2


def test_coverage_lists_municipalities_without_a_delivered_letter(db: Engine) -> None:
    seed(db)
    everywhere = campaign_report(db, SLUG)
    assert everywhere.scope == "all municipalities"
    assert everywhere.municipalities_in_scope == 342
    assert everywhere.covered == 3  # Utrecht, Amersfoort, Deventer
    zwolle = next(m for m in everywhere.uncovered if m.cbs_code == "GM0193")
    assert (zwolle.name, zwolle.province, zwolle.letters) == ("Zwolle", "Overijssel", 1)

    audience = Audience(roles=("raadslid", "wethouder"), provinces=("Utrecht", "PV23"))
    scoped = campaign_report(db, SLUG, audience=audience)
    with db.connect() as conn:
        municipality = SQLModel.metadata.tables["municipality"]
        query = select(func.count()).select_from(municipality)
        in_provinces = conn.execute(
            query.where(municipality.c.province.in_(["Utrecht", "Overijssel"]))
        ).scalar_one()
    assert scoped.scope == "the campaign's audience"
    assert scoped.municipalities_in_scope == in_provinces
    assert len(scoped.uncovered) == in_provinces - 3
    assert {m.province for m in scoped.uncovered} == {"Utrecht", "Overijssel"}


def test_unknown_campaign_and_grouping(db: Engine) -> None:
    with pytest.raises(NotFoundError, match="campaign 'bestaat-niet'"):
        campaign_report(db, "bestaat-niet")
    seed(db)
    with pytest.raises(NotFoundError, match="cannot group"):
        campaign_report(db, SLUG, by="gender")


def test_build_report_without_a_campaign_folder_covers_all_municipalities(
    engine: Engine, tmp_path: object
) -> None:
    load_reference(engine)
    seed(engine)

    report = build_report(engine, SLUG, by="role", templates=Path(str(tmp_path)) / "geen-map")
    assert report.scope == "all municipalities" and report.totals.letters == 7


def test_cli_report_formats(engine: Engine, db_url: str, runner: CliRunner) -> None:
    load_reference(engine)
    seed(engine)
    base = ["--database", db_url, "report", "--campaign", SLUG]

    as_json = runner.invoke(app, [*base, "--by", "province", "--json"])
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["totals"]["replied"] == 2 and document["totals"]["response_rate"] == 0.5
    assert [r["group"] for r in document["rows"]] == ["Overijssel", "Utrecht"]
    assert document["coverage"]["covered"] == 3
    assert {
        "cbs_code": "GM0193",
        "name": "Zwolle",
        "province": "Overijssel",
        "letters": 1,
        "no_email": 0,
    } in document["coverage"]["uncovered"]

    as_csv = runner.invoke(app, [*base, "--by", "municipality", "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["municipality"] for r in rows] == ["Amersfoort", "Deventer", "Utrecht", "Zwolle", "total"]
    assert rows[2]["cbs_code"] == "GM0344" and rows[2]["response_rate"] == "0.5"
    assert rows[3]["response_rate"] == ""  # nothing delivered in Zwolle: no rate rather than 0
    assert rows[-1]["letters"] == "7"

    human = runner.invoke(app, [*base, "--by", "role"])
    assert human.exit_code == 0, human.output
    assert "wethouder" in human.stdout and "50.0%" in human.stdout
    assert "a letter was delivered in 3 of 342 municipalities" in human.stdout
    assert "GM0193  Zwolle, Overijssel (1 letter(s) planned, none delivered)" in human.stdout
    assert "No letter planned in 338 municipalities (the list: --json)." in human.stdout

    both = runner.invoke(app, [*base, "--json", "--csv"])
    assert both.exit_code == 2 and "cannot be combined" in both.stderr
    bad_group = runner.invoke(app, [*base, "--by", "geslacht"])
    assert bad_group.exit_code == 2
    missing = runner.invoke(app, ["--database", db_url, "report", "--campaign", "bestaat-niet"])
    assert missing.exit_code == 1 and missing.stderr.startswith("Error: campaign 'bestaat-niet'")
