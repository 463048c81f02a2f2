"""The decision history: approvals and rejections kept in order, four eyes, and what `send` accepts."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session
from typer.testing import CliRunner, Result

from outreach.cli import app
from outreach.errors import CampaignError
from outreach.letters.approval import (
    approval_status,
    decided_texts,
    decision_history,
    record_approval,
    record_rejection,
    require_approval,
)
from outreach.letters.campaign import CampaignConfig
from outreach.letters.campaign_file import load_campaign
from outreach.letters.recipients import table
from outreach.models import Approval
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES

CopyCampaign = Callable[[str], CampaignConfig]


def four_eyes(campaign_copy: CopyCampaign) -> CampaignConfig:
    campaign = campaign_copy("2026")
    toml = campaign.toml_path.read_text(encoding="utf-8")
    campaign.toml_path.write_text("approvals = 2\n" + toml, encoding="utf-8")
    return load_campaign(campaign.folder.parent, campaign.slug)


def test_a_rejection_voids_the_approval_before_it(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    record_approval(engine, campaign, "Anna")
    require_approval(engine, campaign)
    record_rejection(engine, campaign, "Bert", "De aanhef klopt niet voor griffiers")
    with pytest.raises(CampaignError) as info:
        require_approval(engine, campaign)
    assert info.value.message.startswith("campaign 2026 was rejected by Bert on ")
    assert info.value.message.endswith(": De aanhef klopt niet voor griffiers")
    record_approval(engine, campaign, "Anna", comment="aanhef nagekeken")
    require_approval(engine, campaign)
    history = decision_history(engine, campaign)
    assert [(d.decision, d.approved_by, d.comment) for d in history] == [
        ("approved", "Anna", None),
        ("rejected", "Bert", "De aanhef klopt niet voor griffiers"),
        ("approved", "Anna", "aanhef nagekeken"),
    ]


def test_a_rejection_needs_a_name_and_a_reason(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    with pytest.raises(CampaignError, match="needs a reason"):
        record_rejection(engine, campaign, "Bert", "   ")
    with pytest.raises(CampaignError, match="say who rejects"):
        record_rejection(engine, campaign, " ", "te lang")
    assert decision_history(engine, campaign) == []


def test_four_eyes_need_two_different_people(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = four_eyes(campaign_copy)
    record_approval(engine, campaign, "Anna de Vries")
    with pytest.raises(CampaignError) as info:
        require_approval(engine, campaign)
    assert info.value.message == (
        "campaign 2026 needs 2 approvals by different people; only Anna de Vries approved it so far"
    )
    record_approval(engine, campaign, "anna  DE vries")  # the same person, typed differently
    with pytest.raises(CampaignError, match="needs 2 approvals"):
        require_approval(engine, campaign)
    assert approval_status(engine, campaign).state == "partly approved"
    record_approval(engine, campaign, "Bert")
    require_approval(engine, campaign)
    assert approval_status(engine, campaign).describe().startswith("approved (by Anna de Vries, ")


def test_four_eyes_count_only_approvals_of_the_same_version(
    engine: Engine, campaign_copy: CopyCampaign
) -> None:
    campaign = four_eyes(campaign_copy)
    record_approval(engine, campaign, "Anna")
    with (campaign.folder / "brief.txt.j2").open("a", encoding="utf-8") as fh:
        fh.write("Nog een zin.\n")
    record_approval(engine, campaign, "Bert")
    with pytest.raises(CampaignError, match="only Bert approved it so far"):
        require_approval(engine, campaign)
    record_approval(engine, campaign, "Anna")
    require_approval(engine, campaign)


def test_an_approval_keeps_the_text_files_for_a_later_diff(
    engine: Engine, campaign_copy: CopyCampaign
) -> None:
    campaign = campaign_copy("2026")
    text = (campaign.folder / "brief.txt.j2").read_text(encoding="utf-8")
    record = record_approval(engine, campaign, "Anna")
    assert record.id is not None
    texts = decided_texts(engine, record.id)
    assert texts is not None
    assert texts["brief.txt.j2"] == text
    assert "campaign.toml" in texts
    assert "handreiking-gezinshulp-eerst.pdf" not in texts  # binary: only its hash is kept


def test_an_approval_from_before_m008_is_still_honoured(engine: Engine, campaign_copy: CopyCampaign) -> None:
    """Rows written by the previous release have no texts and default to 'approved'."""
    campaign = campaign_copy("2026")
    record = record_approval(engine, campaign, "Anna")
    with engine.begin() as conn:
        conn.execute(table(Approval).update().values(texts=None))
    require_approval(engine, campaign)
    assert record.id is not None and decided_texts(engine, record.id) is None


def run(runner: CliRunner, db_url: str, templates: Path, args: Sequence[str]) -> Result:
    return runner.invoke(app, ["--database", db_url, "--templates", str(templates), *args])


@pytest.fixture
def folder(registry: Engine, tmp_path: Path) -> Path:
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna", achternaam="Dijk", party="D66")
        add_contact(session, "griffie@utrecht.nl", role="griffie")
        session.commit()
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES / "2026", templates / "2026")
    return templates


def test_reject_and_approve_on_the_command_line_and_campaign_show_lists_them(
    runner: CliRunner, db_url: str, folder: Path, registry: Engine
) -> None:
    result = run(
        runner, db_url, folder, ["reject", "--campaign", "2026", "--by", "Bert", "--reason", "te lang"]
    )
    assert result.exit_code == 0, result.output
    assert "Rejected campaign 2026 by Bert" in result.stdout
    result = run(runner, db_url, folder, ["approve", "-c", "2026", "--by", "Anna", "--comment", "ingekort"])
    assert result.exit_code == 0, result.output
    shown = run(runner, db_url, folder, ["campaign", "show", "2026"])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    history = lines[lines.index("history") + 1 :]
    assert len(history) == 2
    assert " approved by Anna " in history[0] and history[0].endswith(": ingekort")  # newest first
    assert " rejected by Bert " in history[1] and history[1].endswith(": te lang")
    with registry.connect() as conn:
        rows = conn.execute(select(table(Approval).c.decision).order_by(table(Approval).c.id)).scalars().all()
    assert rows == ["rejected", "approved"]


def test_reject_without_a_reason_is_a_usage_error(runner: CliRunner, db_url: str, folder: Path) -> None:
    result = run(runner, db_url, folder, ["reject", "--campaign", "2026", "--by", "Bert", "--reason", " "])
    assert result.exit_code == 2
    assert "--reason" in result.stderr


def test_approve_on_a_four_eyes_campaign_says_another_person_is_needed(
    runner: CliRunner, db_url: str, folder: Path
) -> None:
    toml = folder / "2026" / "campaign.toml"
    toml.write_text("approvals = 2\n" + toml.read_text(encoding="utf-8"), encoding="utf-8")
    result = run(runner, db_url, folder, ["approve", "--campaign", "2026", "--by", "Anna"])
    assert result.exit_code == 0, result.output
    assert "Not ready to send yet: campaign 2026 needs 2 approvals by different people" in result.stdout
    sent = run(runner, db_url, folder, ["send", "--campaign", "2026", "--dry-run", "--yes"])
    assert sent.exit_code == 1
    assert "needs 2 approvals by different people; only Anna approved it so far" in sent.stderr
    run(runner, db_url, folder, ["approve", "--campaign", "2026", "--by", "Bert"])
    sent = run(runner, db_url, folder, ["send", "--campaign", "2026", "--dry-run", "--yes"])
    # A dry run leaves the letters pending (exit 1 says the campaign is not complete), but it ran.
    assert "Dry run: wrote 1 letters to outbox/2026" in sent.stdout, sent.output


def test_approvals_must_be_a_small_whole_number(write_campaign: Callable[..., CampaignConfig]) -> None:
    from tests.fixtures_letters import MINIMAL_TOML

    assert write_campaign(toml="approvals = 2\n" + MINIMAL_TOML).approvals == 2
    for bad, message in (("0", "positive whole number"), ("1.5", "whole number"), ("9", "at most 5")):
        with pytest.raises(CampaignError, match=message):
            write_campaign(toml=f"approvals = {bad}\n" + MINIMAL_TOML)


def test_campaign_show_json_has_the_history_as_documents(
    runner: CliRunner, db_url: str, folder: Path
) -> None:
    import json

    run(runner, db_url, folder, ["reject", "--campaign", "2026", "--by", "Bert", "--reason", "te lang"])
    result = run(runner, db_url, folder, ["campaign", "show", "2026", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["approvals_required"] == 1
    assert shown["approval"].startswith("rejected (by Bert, ")
    (decision,) = shown["history"]
    assert (
        decision["decision"] == "rejected" and decision["by"] == "Bert" and decision["comment"] == "te lang"
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", decision["at"])
    assert re.fullmatch(r"[0-9a-f]{64}", decision["fingerprint"])
