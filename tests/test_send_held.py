"""A letter that cannot be composed is held, shown, and planned again after a new approval (issue 11: 1)."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Engine, text
from typer.testing import CliRunner

from outreach.cli import app
from outreach.letters.approval import record_approval
from outreach.letters.campaign_file import load_campaign
from tests.fixtures_sending import CampaignFactory, add_raadsleden
from tests.smtpd import SmtpServer

NEEDS_FIRST_NAME = "Beste {{ contact.voornaam }},\n\nOver de jeugdzorg.\n"
FIXED = "Geachte heer, mevrouw,\n\nOver de jeugdzorg.\n"


def delivery(engine: Engine, address: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT d.state, d.last_error FROM delivery d JOIN contact c ON c.id = d.contact_id "
                "WHERE c.email_normalized = :a"
            ),
            {"a": address},
        ).one()
    return str(row[0]), row[1]


def test_a_letter_that_cannot_be_composed_is_held_shown_and_sent_after_a_new_approval(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    campaign = make_campaign(approve=False)
    letter = campaign.folder / "brief.txt.j2"
    letter.write_text(NEEDS_FIRST_NAME)
    present = add_raadsleden(engine, 2)
    with engine.begin() as conn:
        conn.execute(text("UPDATE contact SET voornaam = 'Anne'"))
    record_approval(engine, load_campaign(campaign.folder.parent, campaign.slug), "Test Reviewer")
    late = add_raadsleden(engine, 1, start=100)[0]  # imported after approval, without a first name
    server = smtpd()
    env = {
        "OUTREACH_DATABASE_URL": db_url,
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(server.port),
        "OUTREACH_SMTP_TLS": "none",
    }

    first = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert first.exit_code == 1, first.output
    assert "held 1" in first.stdout
    assert any(late in line and "cannot render" in line for line in first.stderr.splitlines())
    state, error = delivery(engine, late)
    assert state == "held" and "contact.voornaam" in (error or "")
    assert [delivery(engine, a)[0] for a in present] == ["sent", "sent"]
    assert not server.handler.received_by(late)

    status = runner.invoke(app, ["status", "-c", "testbrief"], env=env)
    assert "Complete." not in status.stdout
    assert f"{late} [held] cannot render" in status.stdout
    assert "could not be composed" in status.stdout and "approve" in status.stdout
    document = json.loads(runner.invoke(app, ["status", "-c", "testbrief", "--json"], env=env).stdout)
    assert document["complete"] is False and document["counts"]["held"] == 1

    # Nothing changed: another run does not try again, and still does not call the campaign done.
    again = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert again.exit_code == 1
    assert delivery(engine, late)[0] == "held"

    # The template is fixed and approved again: the held letter is planned again and goes out.
    letter.write_text(FIXED)
    record_approval(engine, load_campaign(campaign.folder.parent, campaign.slug), "Test Reviewer")
    fixed = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert fixed.exit_code == 0, fixed.output
    assert "1 letters that could not be composed before are planned again" in fixed.stdout
    assert delivery(engine, late) == ("sent", None)
    assert len(server.handler.received_by(late)) == 1
    assert [len(server.handler.received_by(a)) for a in present] == [1, 1]
    status = runner.invoke(app, ["status", "-c", "testbrief"], env=env)
    assert status.stdout.rstrip().endswith("Complete.")


def test_a_held_letter_is_planned_again_when_its_contact_was_corrected(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    campaign = make_campaign(approve=False)
    (campaign.folder / "brief.txt.j2").write_text(NEEDS_FIRST_NAME)
    record_approval(engine, load_campaign(campaign.folder.parent, campaign.slug), "Test Reviewer")
    late = add_raadsleden(engine, 1)[0]
    server = smtpd()
    env = {
        "OUTREACH_DATABASE_URL": db_url,
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(server.port),
        "OUTREACH_SMTP_TLS": "none",
    }
    assert runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env).exit_code == 1
    assert delivery(engine, late)[0] == "held"
    with engine.begin() as conn:  # as an import that adds the first name would
        conn.execute(text("UPDATE contact SET voornaam = 'Anne', updated_at = :now"), {"now": _later()})
    result = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert delivery(engine, late)[0] == "sent"
    assert server.handler.received_by(late)[0].content.count(b"Beste Anne") == 1


def _later() -> object:
    from datetime import timedelta

    from outreach.models import utcnow

    return utcnow() + timedelta(seconds=1)
