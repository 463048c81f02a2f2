"""Loading campaign folders: the shipped campaigns, validation errors, the sending window."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from outreach.errors import CampaignError, NotFoundError, TemplateError
from outreach.letters.campaign import SendingWindow
from outreach.letters.campaign_file import list_campaign_slugs, load_campaign
from outreach.letters.render import CampaignTemplates
from tests.fixtures_letters import MINIMAL_TOML, TEMPLATES, CampaignWriter


def test_the_2026_campaign_loads_with_its_settings() -> None:
    campaign = load_campaign(TEMPLATES, "2026")
    assert campaign.slug == "2026"
    assert campaign.folder == TEMPLATES / "2026"
    assert campaign.audience.roles == ("raadslid",)
    assert campaign.griffie_copy == "cc"
    assert campaign.message_domain == "hetvergetenkind.nl"
    assert [p.name for p in campaign.attachments] == ["handreiking-gezinshulp-eerst.pdf"]
    assert campaign.attachments[0].read_bytes().startswith(b"%PDF-")
    assert campaign.html_template == "brief.html.j2"
    assert campaign.privacy.notice is True
    assert campaign.sending.verp_local == "bounces"
    assert campaign.sending.window is not None
    assert campaign.sending.window.days == frozenset(range(5))


def test_the_wethouders_campaign_targets_the_youth_portfolio_with_separate_griffie_copies() -> None:
    campaign = load_campaign(TEMPLATES, "wethouders-jeugd")
    assert campaign.audience.roles == ("wethouder",)
    assert campaign.audience.portfolio == ("jeugd",)
    assert campaign.griffie_copy == "separate"
    assert campaign.reply_to == campaign.from_address  # defaulted
    assert campaign.sending.window is not None
    assert campaign.sending.window.describe() == "di, wo, do 09:00-16:00 (Europe/Amsterdam)"


def test_list_campaign_slugs_finds_both_shipped_campaigns() -> None:
    assert {"2026", "wethouders-jeugd"} <= set(list_campaign_slugs(TEMPLATES))


def test_an_unknown_campaign_names_the_known_ones() -> None:
    with pytest.raises(NotFoundError) as info:
        load_campaign(TEMPLATES, "2027")
    assert "2027" in info.value.message
    assert info.value.hint is not None and "2026" in info.value.hint


def test_a_slug_cannot_climb_out_of_the_templates_folder() -> None:
    with pytest.raises(NotFoundError):
        load_campaign(TEMPLATES, "../letters")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('roles = ["raadslid"]', 'roles = ["raadsleden"]'), "audience.roles: unknown role 'raadsleden'"),
        (('roles = ["raadslid"]', "roles = []"), "audience.roles: is required"),
        (('name = "Testbrief"', 'naam = "Testbrief"'), "naam: unknown key"),
        (('address = "brieven@hetvergetenkind.nl"', 'address = "brieven"'), "from.address: 'brieven' is not"),
        (
            ('text = "brief.txt.j2"', 'text = "ontbreekt.txt.j2"'),
            "text: template 'ontbreekt.txt.j2' not found",
        ),
        (('text = "brief.txt.j2"', 'text = "../../secret.txt"'), "lies outside the campaign folder"),
        (
            ('name = "Testbrief"', 'name = "Testbrief"\ngriffie_copy = "bcc"'),
            "griffie_copy: 'bcc' is not one of",
        ),
        (('name = "Testbrief"', 'name = "Testbrief"\nattachments = ["geen.pdf"]'), "attachment 'geen.pdf'"),
        (('name = "Testbrief"', 'name = "Testbrief"\nsalutation = "joviaal"'), "salutation: 'joviaal'"),
        (('name = "Test', 'name = "Test"brief"'), "not valid TOML"),
        (
            ('name = "Het Vergeten Kind"', 'name = "Het Vergeten\\r\\nBcc: x@y.nl"'),
            "from.name: contains a control character",
        ),
    ],
)
def test_campaign_toml_errors_name_file_and_key(
    write_campaign: CampaignWriter, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    assert old in MINIMAL_TOML
    with pytest.raises(CampaignError) as info:
        write_campaign(toml=MINIMAL_TOML.replace(old, new, 1))
    assert expected in info.value.message
    assert "campaign.toml" in info.value.message


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ('[unsubscribe]\nurl = "http://example.nl/afmelden"\n', "unsubscribe.url: must start with https://"),
        ("[sending]\nrate = -1\n", "sending.rate: must be a positive number"),
        ("[sending]\ndomain_connections = 1.5\n", "sending.domain_connections"),
        ('[sending]\nverp_local = "bounces@x"\n', "sending.verp_local"),
        ('[sending]\ndkim_selector = "s1"\n', "sending.dkim_key_file: is required when signing with DKIM"),
        ('[sending.window]\ndays = ["maandag", "feestdag"]\n', "sending.window.days: 'feestdag'"),
        ('[sending.window]\nstart = "18:00"\nend = "08:00"\n', "sending.window.end: 08:00 must be later"),
        ('[sending.window]\nstart = "acht uur"\n', "sending.window.start"),
    ],
)
def test_section_errors_name_the_key(write_campaign: CampaignWriter, section: str, expected: str) -> None:
    with pytest.raises(CampaignError) as info:
        write_campaign(toml=MINIMAL_TOML + "\n" + section)
    assert expected in info.value.message


def test_griffie_cannot_be_both_audience_and_copy(write_campaign: CampaignWriter) -> None:
    toml = MINIMAL_TOML.replace('roles = ["raadslid"]', 'roles = ["raadslid", "griffie"]')
    toml = toml.replace('name = "Testbrief"', 'name = "Testbrief"\ngriffie_copy = "cc"')
    with pytest.raises(CampaignError, match="already in the audience"):
        write_campaign(toml=toml)


def test_a_template_syntax_error_names_file_and_line(write_campaign: CampaignWriter) -> None:
    campaign = write_campaign(
        files={"brief.txt.j2": "{{ aanhef }},\n\nregel twee\n{% if x %}\nnooit gesloten\n"}
    )
    with pytest.raises(TemplateError) as info:
        CampaignTemplates(campaign)
    assert "brief.txt.j2:" in info.value.message
    assert "campaign test" in info.value.message


def test_defaults_of_a_minimal_campaign(write_campaign: CampaignWriter) -> None:
    campaign = write_campaign()
    assert campaign.griffie_copy == "none"
    assert campaign.reply_to == "brieven@hetvergetenkind.nl"
    assert campaign.message_domain == "hetvergetenkind.nl"
    assert campaign.sending.window is None
    assert campaign.sending.rate is None
    assert campaign.unsubscribe_mailto is None and campaign.unsubscribe_url is None


# ------------------------------------------------------------------------------------ sending window

WORKDAYS = SendingWindow(days=frozenset(range(5)), start=time(8, 0), end=time(18, 0))


@pytest.mark.parametrize(
    ("utc", "is_open"),
    [
        (datetime(2026, 1, 26, 7, 0), True),  # Monday 08:00 CET: opens, inclusive
        (datetime(2026, 1, 26, 6, 59), False),  # Monday 07:59 CET
        (datetime(2026, 1, 26, 17, 0), False),  # Monday 18:00 CET: end is exclusive
        (datetime(2026, 1, 26, 16, 59), True),
        (datetime(2026, 1, 31, 10, 0), False),  # Saturday
        (datetime(2026, 7, 6, 6, 0), True),  # Monday 08:00 CEST (UTC+2)
        (datetime(2026, 7, 6, 16, 30), False),  # Monday 18:30 CEST
        (datetime(2026, 1, 26, 7, 30, tzinfo=UTC), True),  # aware input
    ],
)
def test_window_is_open_in_amsterdam_time(utc: datetime, is_open: bool) -> None:
    assert WORKDAYS.is_open(utc) is is_open


def test_next_open_after_friday_evening_is_monday_morning() -> None:
    friday_evening = datetime(2026, 1, 30, 18, 0)  # 19:00 CET
    assert WORKDAYS.next_open(friday_evening) == datetime(2026, 2, 2, 7, 0)


def test_next_open_early_in_the_morning_is_the_same_day() -> None:
    assert WORKDAYS.next_open(datetime(2026, 1, 27, 3, 0)) == datetime(2026, 1, 27, 7, 0)


def test_next_open_when_open_is_now() -> None:
    now = datetime(2026, 1, 27, 10, 0)
    assert WORKDAYS.next_open(now) == now


def test_next_open_across_the_spring_dst_change() -> None:
    # Clocks go forward on Sunday 29 March 2026: Saturday evening CET, Monday 08:00 is already CEST.
    saturday = datetime(2026, 3, 28, 20, 0)
    assert WORKDAYS.next_open(saturday) == datetime(2026, 3, 30, 6, 0)


def test_next_open_keeps_an_aware_argument_aware() -> None:
    result = WORKDAYS.next_open(datetime(2026, 1, 31, 12, 0, tzinfo=UTC))
    assert result == datetime(2026, 2, 2, 7, 0, tzinfo=UTC)
    assert result.tzinfo is not None


def test_window_days_accept_ranges_and_english(write_campaign: CampaignWriter) -> None:
    campaign = write_campaign(
        toml=MINIMAL_TOML + '\n[sending.window]\ndays = ["fri-mon"]\nstart = "09:30"\nend = "12:00"\n'
    )
    window = campaign.sending.window
    assert window is not None
    assert window.days == frozenset({4, 5, 6, 0})
    assert window.start == time(9, 30)
