"""`outreach print`: the paper letters of everyone without an e-mail address, recorded exactly once."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database
from outreach.errors import CampaignError
from outreach.letters.approval import record_approval
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.printing import print_letters, safe_cell
from outreach.models import Contact, Delivery, DeliveryState, Municipality
from outreach.sending.status import campaign_status
from outreach.tracking.report import campaign_report
from tests.factories import add_contact, load_reference, municipality
from tests.fixtures_letters import TEMPLATES


def _paper_only(
    session: Session, register_id: str, cbs_code: str, achternaam: str, *, known: bool = True
) -> Contact:
    contact = Contact(
        municipality_id=municipality(session, cbs_code).id,
        role="wethouder",
        portfolio="Jeugd en Onderwijs",
        register_id=register_id,
        aanspreekvorm="mevrouw" if known else None,
        voorletters="S." if known else None,
        achternaam=achternaam,
        sort_name=achternaam.casefold(),
        source="register export 2026-04-20",
    )
    session.add(contact)
    session.flush()
    return contact


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, db_url: str) -> Iterator[Engine]:
    """The registry with the 342 municipalities, on SQLite and on PostgreSQL."""
    url = db_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    engine = open_database(url)
    load_reference(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def campaign(registry: Engine) -> CampaignConfig:
    """The shipped wethouders campaign, approved, with two wethouders by e-mail and three on paper."""
    with Session(registry) as session:
        add_contact(session, "a.dekker@utrecht.nl", role="wethouder", portfolio="Jeugd", achternaam="Dekker")
        add_contact(session, "b.smit@zwolle.nl", role="wethouder", cbs_code="GM0193", portfolio="Jeugd")
        _paper_only(session, "2001", "GM0344", "Bakker")
        _paper_only(session, "2002", "GM0193", "=HYPERLINK(1)", known=False)  # a formula must not reach Excel
        _paper_only(session, "2003", "GM0014", "Visser")
        groningen = session.exec(select(Municipality).where(Municipality.cbs_code == "GM0014")).one()
        groningen.postal_address_line, groningen.postal_code, groningen.postal_city = (
            "Postbus 30026",
            "9700 RM",
            "Groningen",
        )
        session.commit()
    config = load_campaign(TEMPLATES, "wethouders-jeugd")
    record_approval(registry, config, "Freke")
    return config


def _names_on_pages(pdf: Path) -> list[str]:
    texts = [page.extract_text() or "" for page in PdfReader(pdf).pages]
    return [line for text in texts for line in text.splitlines() if line.startswith("Geachte")]


def _states(engine: Engine) -> dict[str | None, str]:
    with Session(engine) as session:
        rows = session.exec(
            select(Contact.achternaam, Contact.register_id, Delivery.state).join(
                Delivery, col(Delivery.contact_id) == col(Contact.id)
            )
        ).all()
    return {rid or name: state for name, rid, state in rows}


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")), delimiter=";"))


def test_print_holds_exactly_those_without_email_and_marks_each_once(
    registry: Engine, campaign: CampaignConfig, tmp_path: Path
) -> None:
    result = print_letters(registry, campaign, tmp_path / "drukker", workers=1)
    assert result.letters == 3 and result.without_email == 3
    assert result.pdf is not None and result.addresses is not None
    assert sorted(_names_on_pages(result.pdf)) == [
        "Geachte mevrouw Bakker,",
        "Geachte mevrouw Visser,",
        "Geachte wethouder,",
    ]
    states = _states(registry)
    assert {states["2001"], states["2002"], states["2003"]} == {DeliveryState.PRINTED.value}
    # The griffies (separate copies) and the wethouders with an address wait for e-mail.
    assert {s for k, s in states.items() if k not in ("2001", "2002", "2003")} <= {"pending"}

    rows = _csv_rows(result.addresses)
    assert rows[0][:3] == ["nr", "kenmerk", "paginas"]
    by_name = {row[3]: row for row in rows[1:]}
    # The name line "=HYPERLINK(1)" would be a formula in Excel: neutralised with a leading quote.
    assert set(by_name) == {"Mevrouw S. Bakker", "'=HYPERLINK(1)", "Mevrouw S. Visser"}
    assert by_name["Mevrouw S. Visser"][3:8] == [
        "Mevrouw S. Visser",
        "Wethouder",
        "Gemeente Groningen",
        "Postbus 30026",
        "9700 RM  GRONINGEN",
    ]
    assert all(row[1].startswith("HVK/") for row in rows[1:])

    again = print_letters(registry, campaign, tmp_path / "drukker2", workers=1)
    assert again.letters == 0 and again.pdf is None
    assert not (tmp_path / "drukker2").exists() or not list((tmp_path / "drukker2").iterdir())

    reprint = print_letters(registry, campaign, tmp_path / "opnieuw", reprint=True, workers=1)
    assert reprint.letters == 3 and reprint.reprint
    assert _states(registry) == states


def test_printed_letters_count_as_delivered_in_status_and_report(
    registry: Engine, campaign: CampaignConfig, tmp_path: Path
) -> None:
    print_letters(registry, campaign, tmp_path / "out", workers=1)
    status = campaign_status(registry, campaign.slug)
    assert status.counts["printed"] == 3
    report = campaign_report(registry, campaign.slug)
    assert (report.totals.printed, report.totals.no_email) == (3, 0)


def test_print_all_takes_every_letter_not_sent_yet_but_never_a_sent_one(
    registry: Engine, campaign: CampaignConfig, tmp_path: Path
) -> None:
    print_letters(registry, campaign, tmp_path / "a", workers=1)
    with registry.begin() as conn:
        dekker = conn.execute(select(Contact.id).where(Contact.achternaam == "Dekker")).scalar_one()
        conn.execute(
            update(Delivery).where(col(Delivery.contact_id) == dekker).values(state=DeliveryState.SENT.value)
        )
    result = print_letters(registry, campaign, tmp_path / "b", everyone=True, workers=1)
    states = _states(registry)
    assert states["Dekker"] == DeliveryState.SENT.value  # e-mailed: not printed again
    # Smit and the griffies' copies: everyone still waiting, none of the three printed before.
    assert result.letters == sum(1 for k, s in states.items() if s == "printed") - 3
    assert result.without_email == 0


def test_safe_cells_neutralise_formulas() -> None:
    assert [safe_cell(v) for v in ("=1+1", "+31", "-2", "@SUM", "Bakker", 3, None)] == [
        "'=1+1",
        "'+31",
        "'-2",
        "'@SUM",
        "Bakker",
        "3",
        "",
    ]


def test_print_needs_an_approved_campaign_with_a_letter(
    registry: Engine,
    tmp_path: Path,
    campaign: CampaignConfig,
    campaign_copy: Callable[[str], CampaignConfig],
) -> None:
    with pytest.raises(CampaignError, match="has no letter to print"):
        print_letters(registry, load_campaign(TEMPLATES, "2026"), tmp_path)
    changed = campaign_copy("wethouders-jeugd")
    (changed.folder / "brief.css").write_text("/* edited */", encoding="utf-8")
    with pytest.raises(CampaignError, match=r"changed since Freke approved it.*brief\.css changed"):
        print_letters(registry, changed, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_cli_print(registry: Engine, runner: CliRunner, campaign: CampaignConfig, tmp_path: Path) -> None:
    db_url = registry.url.render_as_string(hide_password=False)
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["--database", db_url, "print", "--campaign", campaign.slug, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "Printed 3 letters" in result.output
    assert len(list(out.glob("wethouders-jeugd-*-brieven.pdf"))) == 1
    again = runner.invoke(app, ["--database", db_url, "print", "-c", campaign.slug, "--out", str(out)])
    assert again.exit_code == 0 and "Nothing to print" in again.output
