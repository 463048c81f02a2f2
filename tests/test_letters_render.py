"""Rendering: strict and sandboxed templates, errors that name recipient, template, line and field."""

from __future__ import annotations

import pytest

from outreach.errors import TemplateError
from outreach.letters.campaign_file import load_campaign
from outreach.letters.compose import LetterComposer
from outreach.letters.recipients import Recipient
from outreach.letters.render import CampaignTemplates
from outreach.models import Role
from tests.fixtures_letters import MINIMAL_TOML, NOW, TEMPLATES, CampaignWriter

ANNA = Recipient(
    contact_id=1, role="raadslid", email="anna@utrecht.nl", municipality="Utrecht", cbs_code="GM0344"
)


def test_a_missing_field_names_recipient_template_line_and_field(write_campaign: CampaignWriter) -> None:
    text = "{{ aanhef }},\n\nregel drie\nU zit in de fractie van {{ contact.party }}.\n"
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": text}))
    with pytest.raises(TemplateError) as info:
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)
    message = info.value.message
    assert "anna@utrecht.nl (raadslid, Utrecht)" in message
    assert "brief.txt.j2:4" in message
    assert "contact.party" in message
    assert "campaign test" in message


def test_a_misspelt_variable_is_an_error_not_a_gap(write_campaign: CampaignWriter) -> None:
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": "{{ aanhef }},\n{{ gemeente }}\n"}))
    with pytest.raises(TemplateError, match=r"brief.txt.j2:2: variable 'gemeente' is undefined"):
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)


def test_a_missing_field_in_the_subject_names_the_subject(write_campaign: CampaignWriter) -> None:
    toml = MINIMAL_TOML.replace("{{ municipality.name }}", "{{ contact.portfolio }}")
    templates = CampaignTemplates(write_campaign(toml=toml))
    with pytest.raises(
        TemplateError, match=r"campaign.toml \[subject\]:1: field 'contact.portfolio' is missing"
    ):
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)


def test_is_defined_guards_an_optional_field(write_campaign: CampaignWriter) -> None:
    text = "{% if contact.party is defined %}Fractie {{ contact.party }}{% else %}Geen fractie{% endif %}\n"
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": text}))
    assert templates.render(ANNA, token="abcdefghijklmnop", now=NOW).text.startswith("Geen fractie\n")
    with_party = Recipient(
        contact_id=2, role="raadslid", email="b@utrecht.nl", municipality="Utrecht", party="CDA"
    )
    assert templates.render(with_party, token="abcdefghijklmnop", now=NOW).text.startswith("Fractie CDA\n")


def test_the_sandbox_blocks_python_internals(write_campaign: CampaignWriter) -> None:
    text = "{{ contact.__class__.__mro__[1].__subclasses__() }}\n"
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": text}))
    with pytest.raises(TemplateError) as info:
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)
    assert "anna@utrecht.nl" in info.value.message


def test_date_filters(write_campaign: CampaignWriter) -> None:
    text = "{{ datum }} | {{ now | datum_lang }} | {{ now | datum }}\n"
    templates = CampaignTemplates(write_campaign(files={"brief.txt.j2": text}))
    rendered = templates.render(ANNA, token="abcdefghijklmnop", now=NOW).text
    assert rendered.startswith("maandag 26 januari 2026 | maandag 26 januari 2026 | 26 januari 2026\n")


@pytest.mark.parametrize(
    ("slug", "role", "fields", "aanhef"),
    [
        (
            "2026",
            Role.RAADSLID,
            {"aanspreekvorm": "heer", "tussenvoegsel": "van der", "achternaam": "Berg"},
            "Geachte heer Van der Berg",
        ),
        ("2026", Role.RAADSLID, {"party": "GroenLinks-PvdA"}, "Geacht raadslid"),
        ("2026", Role.RAADSLID, {}, "Geacht raadslid"),
        ("wethouders-jeugd", Role.WETHOUDER, {"portfolio": "Jeugd, Onderwijs"}, "Geachte wethouder"),
        (
            "wethouders-jeugd",
            Role.WETHOUDER,
            {"aanspreekvorm": "mevrouw", "achternaam": "Yılmaz"},
            "Geachte mevrouw Yılmaz",
        ),
        ("wethouders-jeugd", Role.GRIFFIE, {}, "Geachte griffie"),
    ],
)
def test_both_campaigns_render_for_every_role_in_their_audience(
    slug: str, role: str, fields: dict[str, str], aanhef: str
) -> None:
    campaign = load_campaign(TEMPLATES, slug)
    person = Recipient(
        contact_id=7,
        role=role,
        email="persoon@gemeente.nl",
        municipality="Súdwest-Fryslân",
        cbs_code="GM1900",
        province="Fryslân",
        griffie_email="griffie@gemeente.nl" if role != Role.GRIFFIE else None,
        **fields,  # type: ignore[arg-type]
    )
    letter = LetterComposer(campaign).compose(person, token="abcdefghijklmnop", now=NOW)
    assert f"{aanhef}," in letter.text
    assert letter.html is not None and f"{aanhef}," in letter.html
    assert "Súdwest-Fryslân" in letter.subject
    assert "Waarom ontvangt u dit bericht?" in letter.text


def test_an_error_in_an_included_template_names_that_template(write_campaign: CampaignWriter) -> None:
    files = {
        "brief.txt.j2": "{{ aanhef }},\n\n{% include 'voet.txt.j2' %}\n",
        "voet.txt.j2": "Met vriendelijke groet,\n{{ contact.voornaam }}\n",
    }
    templates = CampaignTemplates(write_campaign(files=files))
    with pytest.raises(TemplateError, match=r"voet\.txt\.j2:2: field 'contact\.voornaam' is missing"):
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)


def test_an_include_outside_the_campaign_folder_is_refused(write_campaign: CampaignWriter) -> None:
    templates = CampaignTemplates(
        write_campaign(files={"brief.txt.j2": "{% include '../../etc/passwd' %}\n"})
    )
    with pytest.raises(TemplateError, match="not found"):
        templates.render(ANNA, token="abcdefghijklmnop", now=NOW)
