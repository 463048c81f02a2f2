"""The review commands through the real CLI: campaign list/show, check, preview, approve."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner, Result

from outreach.cli import app
from outreach.db import open_database
from outreach.letters.approval import require_approval
from outreach.letters.campaign_file import load_campaign
from outreach.models import Suppression
from outreach.registry.keys import email_hash
from tests.factories import add_contact, load_reference
from tests.fixtures_letters import TEMPLATES


def run(runner: CliRunner, db_url: str, args: Sequence[str], templates: Path | None = None) -> Result:
    base = ["--database", db_url]
    if templates is not None:
        base += ["--templates", str(templates)]
    return runner.invoke(app, [*base, *args])


@pytest.fixture
def people(registry: Engine) -> Engine:
    """Raadsleden and wethouders in two municipalities, their griffies, one suppressed, one invalid."""
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna", tussenvoegsel="van", achternaam="Dijk",
                    aanspreekvorm="mevrouw", party="D66")  # fmt: skip
        add_contact(session, "bert@utrecht.nl", voornaam="Bert", achternaam="Smit", party="CDA")
        add_contact(session, "griffie@utrecht.nl", role="griffie")
        add_contact(session, "weth@utrecht.nl", role="wethouder", portfolio="Jeugd en onderwijs")
        add_contact(session, "cor@groningen.nl", cbs_code="GM0014", voorletters="C.", achternaam="Bos")
        add_contact(session, "griffie@groningen.nl", role="griffie", cbs_code="GM0014")
        add_contact(session, "weth@groningen.nl", role="wethouder", cbs_code="GM0014", portfolio="Jeugdzorg")
        add_contact(session, "afgemeld@utrecht.nl")
        broken = add_contact(session, "kapot@utrecht.nl")
        broken.email_normalized = "kapot"
        session.add(Suppression(key_hash=email_hash("afgemeld@utrecht.nl"), reason="opt-out", source="t"))
        session.commit()
    return registry


def test_campaign_list_shows_both_campaigns(runner: CliRunner, db_url: str, engine: Engine) -> None:
    result = run(runner, db_url, ["campaign", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {c["slug"]: c for c in json.loads(result.stdout)}
    assert listed["2026"]["audience"] == "raadslid"
    assert listed["2026"]["approval"] == "not approved"
    assert listed["wethouders-jeugd"]["griffie_copy"] == "separate"


def test_campaign_list_reports_a_broken_campaign_and_continues(
    runner: CliRunner, db_url: str, engine: Engine, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES / "2026", templates / "2026")
    (templates / "kapot").mkdir()
    (templates / "kapot" / "campaign.toml").write_text('name = "x"\n', encoding="utf-8")
    result = run(runner, db_url, ["campaign", "list"], templates)
    assert result.exit_code == 0
    assert "kapot\tINVALID:" in result.stdout
    assert result.stdout.startswith("2026\tWeek van Het Vergeten Kind 2026")


def test_campaign_show_counts_the_audience(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["campaign", "show", "2026", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["recipients"], shown["suppressed"], shown["invalid"]) == (5, 1, 1)
    assert shown["window"] == "ma, di, wo, do, vr 08:00-18:00 (Europe/Amsterdam)"


def test_unknown_campaign_is_an_error_line(runner: CliRunner, db_url: str, engine: Engine) -> None:
    result = run(runner, db_url, ["check", "--campaign", "bestaat-niet"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: campaign 'bestaat-niet': no campaign.toml")
    assert "Traceback" not in result.output


def test_check_passes_for_both_shipped_campaigns(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["check", "--campaign", "2026", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert (report["recipients"], report["suppressed"], report["invalid"], report["rendered"]) == (5, 1, 1, 3)
    assert report["cc_griffie"] == 3

    result = run(runner, db_url, ["check", "--campaign", "wethouders-jeugd"])
    assert result.exit_code == 0, result.output
    assert (
        "4 recipients, 0 suppressed, 0 without an e-mail address, 0 invalid, 4 letters rendered"
        in result.stdout
    )
    assert "2 separate griffie copies" in result.stdout


def test_check_names_every_recipient_with_a_missing_field(
    runner: CliRunner, db_url: str, people: Engine, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES / "2026", templates / "2026")
    letter = templates / "2026" / "brief.txt.j2"
    letter.write_text(
        letter.read_text(encoding="utf-8").replace(
            "{{ aanhef }},", "{{ aanhef }},\nFractie {{ contact.party }}"
        ),
        encoding="utf-8",
    )
    result = run(runner, db_url, ["check", "--campaign", "2026"], templates)
    assert result.exit_code == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(failures) == 1  # Cor Bos has no party; Anna and Bert do
    assert failures[0].startswith("FAIL cor@groningen.nl: ")
    assert "brief.txt.j2:4: field 'contact.party' is missing" in failures[0]
    assert "1 failures" in result.stdout
    assert "Failures by problem:\n       1  brief.txt.j2:4: field 'contact.party' is missing" in result.stdout
    assert "Error: campaign 2026 is not ready" in result.stderr


def test_check_with_nobody_in_the_audience_fails(runner: CliRunner, db_url: str, registry: Engine) -> None:
    result = run(runner, db_url, ["check", "--campaign", "2026"])
    assert result.exit_code == 1
    assert "nobody in the registry matches the audience" in result.stdout


def test_preview_one_contact_prints_headers_and_text(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["preview", "--campaign", "2026", "--contact", "ANNA@utrecht.nl"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "To: Anna van Dijk <anna@utrecht.nl>" in out
    assert "Cc: Griffie Utrecht <griffie@utrecht.nl>" in out
    assert "Subject: Gezinshulp eerst: minder kinderen onnodig uit huis in Utrecht" in out
    assert "Attachment: handreiking-gezinshulp-eerst.pdf (application/pdf)" in out
    assert "Geachte mevrouw Van Dijk," in out


def test_preview_of_a_suppressed_contact_says_it_will_not_be_sent(
    runner: CliRunner, db_url: str, people: Engine
) -> None:
    result = run(runner, db_url, ["preview", "--campaign", "2026", "--contact", "afgemeld@utrecht.nl"])
    assert result.exit_code == 0
    assert "will not be sent: opt-out" in result.stderr


def test_preview_of_someone_outside_the_audience(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["preview", "--campaign", "2026", "--contact", "weth@utrecht.nl"])
    assert result.exit_code == 1
    assert "weth@utrecht.nl is not in the audience of campaign 2026" in result.stderr


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links.extend(v for k, v in attrs if k == "href" and v)


def test_preview_out_writes_eml_html_and_index(
    runner: CliRunner, db_url: str, people: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "preview"
    result = run(runner, db_url, ["preview", "--campaign", "2026", "--out", str(out)])
    assert result.exit_code == 0, result.output
    emls = sorted(out.glob("*.eml"))
    pages = sorted(out.glob("0*.html"))
    assert len(emls) == len(pages) == 3  # the sendable raadsleden
    for eml in emls:
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message.get_content_type() == "multipart/mixed"
        assert message["Message-ID"].endswith("@hetvergetenkind.nl>")
    parser = _Collector()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    assert {link for link in parser.links} == {p.name for p in emls} | {p.name for p in pages}
    page = _Collector()
    page.feed(pages[0].read_text(encoding="utf-8"))
    assert "body" in page.tags and "table" in page.tags


def test_preview_out_with_limit(runner: CliRunner, db_url: str, people: Engine, tmp_path: Path) -> None:
    out = tmp_path / "preview"
    out.mkdir()
    (out / "00007-old@example.nl.eml").write_bytes(b"from an earlier preview")
    (out / "notities.txt").write_text("not ours", encoding="utf-8")
    result = run(
        runner, db_url, ["preview", "--campaign", "wethouders-jeugd", "--out", str(out), "--limit", "1"]
    )
    assert result.exit_code == 0, result.output
    assert len(list(out.glob("*.eml"))) == 1
    assert not (out / "00007-old@example.nl.eml").exists()
    assert (out / "notities.txt").exists()


def test_approve_records_and_send_side_check_passes(
    runner: CliRunner, db_url: str, people: Engine, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES / "2026", templates / "2026")
    result = run(runner, db_url, ["approve", "--campaign", "2026", "--by", "Anna Reviewer"], templates)
    assert result.exit_code == 0, result.output
    assert "Approved campaign 2026 by Anna Reviewer" in result.stdout
    require_approval(people, load_campaign(templates, "2026"))
    listed = run(runner, db_url, ["campaign", "list"], templates)
    assert "approved (by Anna Reviewer" in listed.stdout
    (templates / "2026" / "handreiking-gezinshulp-eerst.pdf").write_bytes(b"%PDF-1.4 anders\n")
    listed = run(runner, db_url, ["campaign", "list"], templates)
    assert "changed (approved by Anna Reviewer" in listed.stdout
    assert "handreiking-gezinshulp-eerst.pdf changed" in listed.stdout


def test_approve_with_an_empty_name_is_a_usage_error(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["approve", "--campaign", "2026", "--by", "  "])
    assert result.exit_code == 2
    assert "--by" in result.stderr


def test_campaign_show_prints_settings_as_text(runner: CliRunner, db_url: str, people: Engine) -> None:
    result = run(runner, db_url, ["campaign", "show", "wethouders-jeugd"])
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines["griffie_copy"] == "separate"
    assert lines["audience"] == "wethouder; portfolio: jeugd"
    assert lines["recipients"] == "4"  # two wethouders with jeugd, and the griffie of each municipality
    assert lines["attachments"] == "-"
    assert lines["approval"] == "not approved"


def test_check_and_approve_on_postgresql(runner: CliRunner, pg_url: str, tmp_path: Path) -> None:
    engine = open_database(pg_url)
    try:
        load_reference(engine)
        with Session(engine) as session:
            add_contact(session, "anna@utrecht.nl", voornaam="Anna", party="D66")
            add_contact(session, "griffie@utrecht.nl", role="griffie")
            session.commit()
        templates = tmp_path / "templates"
        shutil.copytree(TEMPLATES / "2026", templates / "2026")
        result = run(runner, pg_url, ["check", "--campaign", "2026", "--json"], templates)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["rendered"] == 1
        result = run(runner, pg_url, ["approve", "--campaign", "2026", "--by", "Bert"], templates)
        assert result.exit_code == 0, result.output
        require_approval(engine, load_campaign(templates, "2026"))
    finally:
        engine.dispose()
