"""What the review pages show, below the web: the cached check, the overview, recipients, one letter."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from outreach.errors import CampaignError
from outreach.letters.approval import require_approval
from outreach.models import Suppression
from outreach.registry.keys import email_hash
from outreach.review import decide
from outreach.review.checked import FAILED, INVALID, SUPPRESSED, ReviewCache
from outreach.review.letter import letter_view
from outreach.review.overview import NO_PARTY, build_overview
from outreach.review.recipients import RecipientFilter, filter_options, neighbours, recipient_page
from tests.factories import add_contact
from tests.fixtures_letters import TEMPLATES


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES / "2026", root / "2026")
    return root


@pytest.fixture
def audience(registry: Engine) -> Engine:
    """Raadsleden in Utrecht and Groningen: one suppressed, one with a broken address, one without a
    party (campaign 2026 copes), griffies for the Cc."""
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna", tussenvoegsel="van", achternaam="Dijk",
                    aanspreekvorm="mevrouw", party="D66")  # fmt: skip
        add_contact(session, "bert@utrecht.nl", voornaam="Bert", achternaam="Smit", party="CDA")
        add_contact(session, "griffie@utrecht.nl", role="griffie")
        add_contact(session, "cor@groningen.nl", cbs_code="GM0014", voorletters="C.", achternaam="Bos")
        add_contact(session, "griffie@groningen.nl", role="griffie", cbs_code="GM0014")
        add_contact(session, "afgemeld@utrecht.nl", achternaam="Weg", party="VVD")
        broken = add_contact(session, "kapot@utrecht.nl", achternaam="Kapot", party="VVD")
        broken.email_normalized = "kapot"
        session.add(Suppression(key_hash=email_hash("afgemeld@utrecht.nl"), reason="opt-out", source="t"))
        session.commit()
    return registry


def test_the_check_is_cached_until_the_folder_or_the_registry_changes(
    audience: Engine, templates: Path
) -> None:
    cache = ReviewCache(audience, templates)
    first = cache.get("2026")
    assert first.report.rendered == 3
    assert cache.get("2026") is first  # nothing changed: no second check
    with (templates / "2026" / "brief.txt.j2").open("a", encoding="utf-8") as fh:
        fh.write("Een nieuwe slotzin.\n")
    second = cache.get("2026")
    assert second is not first and second.fingerprint != first.fingerprint
    with Session(audience) as session:
        add_contact(session, "dirk@utrecht.nl", achternaam="Nieuw")
        session.commit()
    third = cache.get("2026")
    assert third is not second and third.report.rendered == 4


def test_problems_per_recipient(audience: Engine, templates: Path) -> None:
    (templates / "2026" / "brief.txt.j2").write_text(
        "{{ aanhef }},\n\nU bent lid van {{ contact.party }}.\n", encoding="utf-8"
    )
    checked = ReviewCache(audience, templates).get("2026")
    by_email = {r.email: checked.problems.get(r.contact_id) for r in checked.recipients}
    cor = by_email["cor@groningen.nl"]
    assert cor is not None and cor.kind == FAILED and "contact.party" in cor.reason
    afgemeld, kapot = by_email["afgemeld@utrecht.nl"], by_email["kapot"]
    assert afgemeld is not None and (afgemeld.kind, afgemeld.reason) == (SUPPRESSED, "opt-out")
    assert kapot is not None and kapot.kind == INVALID
    assert by_email["anna@utrecht.nl"] is None


def test_the_overview_counts_the_audience_and_lists_who_cannot_be_reached(
    audience: Engine, templates: Path
) -> None:
    overview = build_overview(audience, ReviewCache(audience, templates).get("2026"))
    assert overview.by_role == [("raadslid", 5)]
    assert dict(overview.by_province) == {"Utrecht": 4, "Groningen": 1}
    assert dict(overview.by_party) == {"VVD": 2, "CDA": 1, "D66": 1, NO_PARTY: 1}
    assert overview.municipalities == 2
    assert sorted((u.kind, u.reason) for u in overview.unsendable) == [
        ("invalid", "not an e-mail address"),
        ("suppressed", "opt-out"),
    ]
    settings = dict(overview.settings)
    assert settings["Sending window"] == "ma, di, wo, do, vr 08:00-18:00 (Europe/Amsterdam)"
    assert settings["From"] == "Het Vergeten Kind <wereldvanaandacht@hetvergetenkind.nl>"
    assert overview.status.state == "not approved"


def test_the_overview_shows_a_diff_of_what_changed_since_the_approval(
    audience: Engine, templates: Path
) -> None:
    cache = ReviewCache(audience, templates)
    checked = cache.get("2026")
    decide.approve(cache, "2026", by="Anna", seen=checked.fingerprint)
    letter = templates / "2026" / "brief.txt.j2"
    letter.write_text(
        letter.read_text(encoding="utf-8").replace("Geachte", "Beste", 1) + "PS nieuw\n", "utf-8"
    )
    (templates / "2026" / "handreiking-gezinshulp-eerst.pdf").write_bytes(b"%PDF-1.4 anders\n")
    overview = build_overview(audience, cache.get("2026"))
    assert overview.status.state == "changed"
    assert overview.baseline is not None and overview.baseline.approved_by == "Anna"
    changes = {c.name: c for c in overview.changes}
    assert set(changes) == {"brief.txt.j2", "handreiking-gezinshulp-eerst.pdf"}
    diff = changes["brief.txt.j2"].diff
    assert diff is not None and "+PS nieuw" in diff
    assert changes["handreiking-gezinshulp-eerst.pdf"].diff is None  # binary: named, not diffed
    with pytest.raises(CampaignError, match=r"brief\.txt\.j2 changed"):
        require_approval(audience, checked.campaign)


def test_approval_from_the_review_is_what_send_requires(audience: Engine, templates: Path) -> None:
    cache = ReviewCache(audience, templates)
    seen = cache.get("2026").fingerprint
    with pytest.raises(CampaignError, match="say who approves"):
        decide.approve(cache, "2026", by=" ", seen=seen)
    record = decide.approve(cache, "2026", by="Anna", seen=seen, comment="goed zo")
    assert record.fingerprint == seen and record.comment == "goed zo"
    require_approval(audience, cache.get("2026").campaign)


def test_approving_a_version_the_reviewer_did_not_see_is_refused(audience: Engine, templates: Path) -> None:
    cache = ReviewCache(audience, templates)
    seen = cache.get("2026").fingerprint
    (templates / "2026" / "campaign.toml").write_text(
        (templates / "2026" / "campaign.toml").read_text(encoding="utf-8") + "\n# edit\n", encoding="utf-8"
    )
    with pytest.raises(CampaignError, match="changed while you were reviewing it"):
        decide.approve(cache, "2026", by="Anna", seen=seen)
    with pytest.raises(CampaignError, match="has not been approved"):
        require_approval(audience, cache.get("2026").campaign)


def test_approval_is_refused_while_a_letter_fails(audience: Engine, templates: Path) -> None:
    (templates / "2026" / "brief.txt.j2").write_text("{{ contact.party }}\n", encoding="utf-8")
    cache = ReviewCache(audience, templates)
    with pytest.raises(CampaignError, match="1 letter\\(s\\) fail to render"):
        decide.approve(cache, "2026", by="Anna", seen=cache.get("2026").fingerprint)
    rejected = decide.reject(cache, "2026", by="Bert", reason="partij ontbreekt")
    assert rejected.decision == "rejected"
    with pytest.raises(CampaignError, match="a rejection needs a reason"):
        decide.reject(cache, "2026", by="Bert", reason="")


def test_recipients_filter_search_and_page(audience: Engine, templates: Path) -> None:
    checked = ReviewCache(audience, templates).get("2026")
    every = recipient_page(checked, RecipientFilter())
    assert every.total == 5 and every.pages == 1
    assert [
        r.recipient.email for r in recipient_page(checked, RecipientFilter(municipality="GM0014")).rows
    ] == ["cor@groningen.nl"]
    problems = recipient_page(checked, RecipientFilter(problem="any"))
    assert {r.recipient.email for r in problems.rows} == {"afgemeld@utrecht.nl", "kapot"}
    assert recipient_page(checked, RecipientFilter(problem="suppressed")).total == 1
    assert recipient_page(checked, RecipientFilter(party=NO_PARTY)).total == 1
    assert recipient_page(checked, RecipientFilter(province="Utrecht", party="VVD")).total == 2
    assert [r.recipient.email for r in recipient_page(checked, RecipientFilter(search="DIJK")).rows] == [
        "anna@utrecht.nl"
    ]
    assert recipient_page(checked, RecipientFilter(search="groningen.nl")).total == 1
    paged = recipient_page(checked, RecipientFilter(), page=2, per_page=2)
    assert (paged.page, paged.pages, paged.first, len(paged.rows)) == (2, 3, 3, 2)
    assert recipient_page(checked, RecipientFilter(), page=99, per_page=2).page == 3
    options = filter_options(checked)
    assert options.municipalities == [("GM0014", "Groningen"), ("GM0344", "Utrecht")]
    assert NO_PARTY in options.parties


def test_previous_and_next_follow_the_filtered_list(audience: Engine, templates: Path) -> None:
    checked = ReviewCache(audience, templates).get("2026")
    utrecht = RecipientFilter(municipality="GM0344")
    ids = [r.recipient.contact_id for r in recipient_page(checked, utrecht).rows]
    assert len(ids) == 4
    assert neighbours(checked, utrecht, ids[0]) == (None, ids[1], 1, 4)
    assert neighbours(checked, utrecht, ids[1]) == (ids[0], ids[2], 2, 4)
    assert neighbours(checked, utrecht, ids[3]) == (ids[2], None, 4, 4)
    groningen = next(r.contact_id for r in checked.recipients if r.cbs_code == "GM0014")
    assert neighbours(checked, utrecht, groningen) == (None, None, 0, 4)


def test_one_letter_has_its_headers_attachment_and_merge_data(audience: Engine, templates: Path) -> None:
    checked = ReviewCache(audience, templates).get("2026")
    anna = next(r for r in checked.recipients if r.email == "anna@utrecht.nl")
    view = letter_view(checked, anna)
    assert view.error is None and view.letter is not None
    headers = dict(view.headers)
    assert headers["To"] == "Anna van Dijk <anna@utrecht.nl>"
    assert headers["Cc"] == "Griffie Utrecht <griffie@utrecht.nl>"
    assert headers["Subject"].endswith("in Utrecht")
    assert headers["List-Unsubscribe"].startswith(
        "<mailto:wereldvanaandacht@hetvergetenkind.nl?subject=afmelden"
    )
    assert [(a.filename, a.content_type) for a in view.attachments] == [
        ("handreiking-gezinshulp-eerst.pdf", "application/pdf")
    ]
    assert (
        view.attachments[0].size == (templates / "2026" / "handreiking-gezinshulp-eerst.pdf").stat().st_size
    )
    merge = dict(view.merge_data)
    assert merge["aanhef"] == "Geachte mevrouw Van Dijk"
    assert merge["contact.party"] == "D66"
    assert merge["municipality.name"] == "Utrecht"
    assert "range" not in merge  # Jinja's own globals are not merge data
    assert "Geachte mevrouw Van Dijk" in view.letter.text


def test_a_letter_that_fails_shows_why_and_its_merge_data(audience: Engine, templates: Path) -> None:
    (templates / "2026" / "brief.txt.j2").write_text("{{ contact.party }}\n", encoding="utf-8")
    checked = ReviewCache(audience, templates).get("2026")
    cor = next(r for r in checked.recipients if r.email == "cor@groningen.nl")
    view = letter_view(checked, cor)
    assert view.letter is None and view.error is not None
    assert "field 'contact.party' is missing" in view.error
    assert dict(view.merge_data)["contact.achternaam"] == "Bos"
