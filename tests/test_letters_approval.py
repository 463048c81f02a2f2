"""Approval: the fingerprint covers every byte of the campaign folder; sending refuses any change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlmodel import Session

from outreach.errors import CampaignError
from outreach.letters import review
from outreach.letters.approval import (
    changes_since,
    ensure_campaign_row,
    fingerprint,
    manifest,
    record_approval,
    require_approval,
)
from outreach.letters.campaign import CampaignConfig
from outreach.letters.recipients import table
from outreach.letters.review import approve_campaign
from outreach.models import Approval
from tests.factories import add_contact

CopyCampaign = Callable[[str], CampaignConfig]


def test_manifest_lists_every_file_but_hidden_ones(campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    (campaign.folder / ".brief.txt.j2.swp").write_bytes(b"editor junk")
    (campaign.folder / "__pycache__").mkdir()
    (campaign.folder / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert sorted(manifest(campaign.folder)) == [
        "brief.html.j2",
        "brief.txt.j2",
        "campaign.toml",
        "handreiking-gezinshulp-eerst.pdf",
    ]


@pytest.mark.parametrize(
    "name", ["campaign.toml", "brief.txt.j2", "brief.html.j2", "handreiking-gezinshulp-eerst.pdf"]
)
def test_the_fingerprint_changes_with_any_byte_of_any_file(campaign_copy: CopyCampaign, name: str) -> None:
    campaign = campaign_copy("2026")
    before = fingerprint(manifest(campaign.folder))
    path = campaign.folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    after = manifest(campaign.folder)
    assert fingerprint(after) != before
    assert fingerprint(after) == fingerprint(manifest(campaign.folder))  # and is stable


def test_changes_since_names_changed_added_and_removed_files() -> None:
    approved = {"a.txt": "1", "b.txt": "2", "c.txt": "3"}
    current = {"a.txt": "1", "b.txt": "X", "d.pdf": "4"}
    assert changes_since(approved, current) == ["b.txt changed", "c.txt removed", "d.pdf added"]


def test_require_approval_refuses_an_unapproved_campaign(engine: Engine, campaign_copy: CopyCampaign) -> None:
    with pytest.raises(CampaignError, match="campaign 2026 has not been approved"):
        require_approval(engine, campaign_copy("2026"))


def test_require_approval_passes_then_names_the_changed_file(
    engine: Engine, campaign_copy: CopyCampaign
) -> None:
    campaign = campaign_copy("2026")
    record_approval(engine, campaign, "Anna Reviewer")
    require_approval(engine, campaign)
    with (campaign.folder / "brief.txt.j2").open("a", encoding="utf-8") as fh:
        fh.write("\nEen extra zin.\n")
    with pytest.raises(CampaignError) as info:
        require_approval(engine, campaign)
    assert "changed since Anna Reviewer approved it" in info.value.message
    assert "brief.txt.j2 changed" in info.value.message
    assert "campaign.toml" not in info.value.message


def test_a_new_attachment_file_is_a_change(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    record_approval(engine, campaign, "Anna")
    (campaign.folder / "extra.pdf").write_bytes(b"%PDF-1.4\n")
    with pytest.raises(CampaignError, match=r"extra\.pdf added"):
        require_approval(engine, campaign)


def test_approving_again_after_review_clears_the_change(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    record_approval(engine, campaign, "Anna")
    (campaign.folder / "brief.txt.j2").write_text("{{ aanhef }},\n\nKorter.\n", encoding="utf-8")
    record_approval(engine, campaign, "Bert")
    require_approval(engine, campaign)
    with engine.connect() as conn:
        approvers = list(
            conn.execute(select(table(Approval).c.approved_by).order_by(table(Approval).c.id)).scalars()
        )
    assert approvers == ["Anna", "Bert"]


def test_approve_refuses_a_campaign_whose_letters_fail(registry: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    (campaign.folder / "brief.txt.j2").write_text("{{ aanhef }} {{ contact.voornaam }}\n", encoding="utf-8")
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna")
        add_contact(session, "bert@utrecht.nl")
        session.commit()
    with pytest.raises(CampaignError) as info:
        approve_campaign(registry, campaign, "Anna")
    assert "1 letter(s) fail to render" in info.value.message
    assert "bert@utrecht.nl" in info.value.message
    with pytest.raises(CampaignError, match="has not been approved"):
        require_approval(registry, campaign)


def test_ensure_campaign_row_is_idempotent(engine: Engine, campaign_copy: CopyCampaign) -> None:
    campaign = campaign_copy("2026")
    with engine.begin() as conn:
        first = ensure_campaign_row(conn, campaign)
        second = ensure_campaign_row(conn, campaign)
    assert first == second


def test_a_file_edited_during_the_check_voids_the_approval(
    registry: Engine, campaign_copy: CopyCampaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    campaign = campaign_copy("2026")
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl")
        session.commit()
    real_check = review.check_campaign

    def check_while_someone_edits(*args: Any, **kwargs: Any) -> review.CheckReport:
        report = real_check(*args, **kwargs)
        with (campaign.folder / "brief.txt.j2").open("a", encoding="utf-8") as fh:
            fh.write("Een zin die niemand zag.\n")
        return report

    monkeypatch.setattr(review, "check_campaign", check_while_someone_edits)
    with pytest.raises(CampaignError, match=r"changed while it was being checked: brief\.txt\.j2 changed"):
        approve_campaign(registry, campaign, "Anna")
    with pytest.raises(CampaignError, match="has not been approved"):
        require_approval(registry, campaign)
