"""Templates cannot run away: the rendered size of a letter and the work of a render are capped, and the
error names the recipient and the template (issue 11, item 11). Every case here stops within a fraction
of a second; before the caps, each ran for minutes at several GB."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from outreach.cli import app
from outreach.errors import TemplateError
from outreach.letters import limits
from outreach.letters.recipients import Recipient
from outreach.letters.render import CampaignTemplates
from tests.factories import add_contact
from tests.fixtures_letters import NOW, CampaignWriter

ANNA = Recipient(
    contact_id=1, role="raadslid", email="anna@utrecht.nl", municipality="Utrecht", cbs_code="GM0344"
)
TOKEN = "abcdefghijklmnop"

RUNAWAY = {
    "string-times-a-billion": ("{{ 'x' * 10**9 }}", "'x' * 1000000000"),
    "list-times-a-billion": ("{{ ([1] * 10**9) | length }}", "would make 1,000,000,000 items"),
    "huge-power": ("{{ 10 ** 100000000 }}", "10 ** 100000000"),
    "nested-ranges-with-output": (
        "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
        "loops ran more than",
    ),
    "nested-ranges-without-output": (
        "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        "loops ran more than",
    ),
    "loop-over-a-list": (
        "{% set l = range(100000) | list %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
        "loops ran more than",
    ),
    "doubling-a-string": (
        "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "characters",
    ),
    "adding-strings": (
        "{% set ns = namespace(s='xxxxxxxxxx') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}{{ ns.s | length }}",
        "characters",
    ),
    "center-filter": ("{{ 'x' | center(10**9) }}", "1,000,000,000"),
    "ljust-method": ("{{ 'x'.ljust(10**9) }}", "1,000,000,000"),
    "replace-filter": ("{{ ('x' * 100000) | replace('x', 'y' * 100000) }}", "characters"),
    "replace-method": ("{{ ('x' * 100000).replace('x', 'y' * 100000) }}", "characters"),
    "recursive-macro": (
        "{% macro m(n) %}{{ m(n) }}{{ m(n) }}{% endmacro %}{{ m(1) }}",
        "",
    ),
    "format-width": ("{{ '%1000000000s' | format('x') }}", "characters"),
}


@pytest.mark.parametrize("case", sorted(RUNAWAY))
def test_a_runaway_template_is_stopped_naming_recipient_and_template(
    write_campaign: CampaignWriter, case: str
) -> None:
    template, detail = RUNAWAY[case]
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": "{{ aanhef }},\n" + template + "\n"}))
    with pytest.raises(TemplateError) as info:
        templates.render(ANNA, token=TOKEN, now=NOW)
    message = info.value.message
    assert message.startswith("campaign test: anna@utrecht.nl (raadslid, Utrecht): brief.txt.j2:2: "), message
    assert detail in message


def test_the_size_cap_is_per_letter_and_generous(write_campaign: CampaignWriter) -> None:
    # A long letter (a table of all 342 municipalities, say) is far below the cap.
    text = (
        "{{ aanhef }},\n"
        "{% for i in range(5000) %}Regel {{ i }} van een lange bijlage in de brief.\n{% endfor %}"
    )
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": text}))
    letter = templates.render(ANNA, token=TOKEN, now=NOW)
    assert letter.text.count("\n") > 5000
    assert len(letter.text) < limits.MAX_LETTER_CHARS


def test_the_caps_hold_in_the_subject_and_the_html(write_campaign: CampaignWriter) -> None:
    toml = (
        'name = "Testbrief"\nsubject = "{{ \'x\' * 10**9 }}"\ntext = "brief.txt.j2"\n\n'
        '[from]\nname = "Het Vergeten Kind"\naddress = "brieven@hetvergetenkind.nl"\n\n'
        '[audience]\nroles = ["raadslid"]\n'
    )
    templates = CampaignTemplates(write_campaign(toml=toml))
    with pytest.raises(TemplateError, match=r"campaign.toml \[subject\]:1: "):
        templates.render(ANNA, token=TOKEN, now=NOW)


def test_check_reports_the_runaway_letter_per_recipient(
    runner: CliRunner, db_url: str, registry: Engine, write_campaign: CampaignWriter, tmp_path: Path
) -> None:
    write_campaign(files={"brief.txt.j2": "{{ aanhef }},\n{{ 'x' * 10**9 }}\n"})
    with Session(registry) as session:
        add_contact(session, "anna@utrecht.nl", voornaam="Anna", achternaam="Dijk")
        add_contact(session, "bert@utrecht.nl", voornaam="Bert", achternaam="Smit")
        session.commit()
    templates = tmp_path / "templates"
    result = runner.invoke(
        app, ["--database", db_url, "--templates", str(templates), "check", "--campaign", "test"]
    )
    assert result.exit_code == 1
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    assert len(failures) == 2
    assert all("brief.txt.j2:2" in line and "'x' * 1000000000" in line for line in failures)
    assert any("anna@utrecht.nl" in line for line in failures)
