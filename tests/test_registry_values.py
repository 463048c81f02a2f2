"""Single cells: names, roles, salutations, dates, control characters, e-mail addresses."""

from __future__ import annotations

from datetime import date

import pytest
from email_validator import EmailNotValidError, validate_email

from outreach.models import Role
from outreach.registry.emails import AddressChecker, InvalidAddress
from outreach.registry.names import NameParts, normalize_tussenvoegsel, normalize_voorletters, split_full_name
from outreach.registry.values import clean, control_character, parse_aanspreekvorm, parse_date, parse_role


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (
            "dhr. H.J. van der Berg",
            NameParts(voorletters="H.J.", tussenvoegsel="van der", achternaam="Berg", aanspreekvorm="heer"),
        ),
        (
            "Bemelmans, P.J.F. (Peer-Jan)",
            NameParts(voorletters="P.J.F.", voornaam="Peer-Jan", achternaam="Bemelmans"),
        ),
        ("Jan van der Berg", NameParts(voornaam="Jan", tussenvoegsel="van der", achternaam="Berg")),
        (
            "Mevr. drs. A. de Vries-van Dam",
            NameParts(
                title="drs.",
                voorletters="A.",
                tussenvoegsel="de",
                achternaam="Vries-van Dam",
                aanspreekvorm="mevrouw",
            ),
        ),
        ("Berg, J. van der", NameParts(voorletters="J.", tussenvoegsel="van der", achternaam="Berg")),
        ("Berg van der, J.", NameParts(voorletters="J.", tussenvoegsel="van der", achternaam="Berg")),
        ("van der Berg, H.J.", NameParts(voorletters="H.J.", tussenvoegsel="van der", achternaam="Berg")),
        ("Anouk in ’t Veld", NameParts(voornaam="Anouk", tussenvoegsel="in 't", achternaam="Veld")),
        ("Jan Peter Balkenende", NameParts(voornaam="Jan Peter", achternaam="Balkenende")),
        ("De Vries", NameParts(tussenvoegsel="de", achternaam="Vries")),
        ("HJ Jansen", NameParts(voorletters="H.J.", achternaam="Jansen")),
        ("A.B. Jansen MSc", NameParts(title="MSc", voorletters="A.B.", achternaam="Jansen")),
        (
            "mr. dr. K. van Oosten (Karin)",
            NameParts(
                title="mr. dr.", voorletters="K.", voornaam="Karin", tussenvoegsel="van", achternaam="Oosten"
            ),
        ),
        ("Zoë Çelik", NameParts(voornaam="Zoë", achternaam="Çelik")),
    ],
)
def test_split_full_name(text: str, parts: NameParts) -> None:
    assert split_full_name(text) == parts


def test_a_name_never_implies_a_gender() -> None:
    assert split_full_name("Maria Jansen").aanspreekvorm is None
    assert split_full_name("mr. J. Jansen").aanspreekvorm is None  # mr. is the law degree


@pytest.mark.parametrize(
    ("given", "expected"),
    [("HJ", "H.J."), ("H. J.", "H.J."), ("h.j.", "h.j."), ("Th.A.", "Th.A."), ("Jan", "Jan")],
)
def test_voorletters(given: str, expected: str) -> None:
    assert normalize_voorletters(given) == expected


def test_tussenvoegsel_is_lower_case_when_it_is_one() -> None:
    assert normalize_tussenvoegsel("Van der") == "van der"
    assert normalize_tussenvoegsel("In ’T") == "in 't"
    assert normalize_tussenvoegsel("Mac") == "Mac"  # not a Dutch particle: kept as given


@pytest.mark.parametrize(
    ("text", "role", "portfolio"),
    [
        ("Raadslid", Role.RAADSLID, None),
        ("gemeenteraadslid", Role.RAADSLID, None),
        ("Fractievoorzitter", Role.RAADSLID, None),
        ("Wethouder", Role.WETHOUDER, None),
        ("Wethouder Jeugd", Role.WETHOUDER, "Jeugd"),
        ("wethouder - Jeugd, Onderwijs", Role.WETHOUDER, "Jeugd, Onderwijs"),
        ("Wethouder (Jeugd en Zorg)", Role.WETHOUDER, "Jeugd en Zorg"),
        ("Wethouder van Jeugd", Role.WETHOUDER, "Jeugd"),
        ("Wethouder en loco-burgemeester, Jeugd", Role.WETHOUDER, "Jeugd"),
        ("Burgemeester", Role.BURGEMEESTER, None),
        ("Waarnemend burgemeester", Role.BURGEMEESTER, None),
        ("Loco-burgemeester", Role.LOCO_BURGEMEESTER, None),
        ("locoburgemeester", Role.LOCO_BURGEMEESTER, None),
        ("Griffier", Role.GRIFFIER, None),
        ("Plv. griffier", Role.GRIFFIER, None),
        ("Griffie", Role.GRIFFIE, None),
        ("Burgerraadslid", Role.BURGERRAADSLID, None),
        ("Burgerlid", Role.BURGERRAADSLID, None),
        ("Commissielid", Role.COMMISSIELID, None),
        ("Fractieassistent", Role.FRACTIEASSISTENT, None),
        ("Gemeentesecretaris", Role.SECRETARIS, None),
        ("Councillor", Role.RAADSLID, None),
    ],
)
def test_roles(text: str, role: Role, portfolio: str | None) -> None:
    assert parse_role(text) == (role, portfolio)


def test_non_members_are_not_raadslid_and_unknown_roles_are_none() -> None:
    assert parse_role("Burgerraadslid") != (Role.RAADSLID, None)
    assert parse_role("Bestuurder") is None
    assert parse_role("Raadsliden") is None  # a plural is a heading, not a role


@pytest.mark.parametrize(
    ("text", "gender_column", "expected"),
    [
        ("Geachte mevrouw", False, "mevrouw"),
        ("Geachte heer", False, "heer"),
        ("De heer", False, "heer"),
        ("Mevr.", False, "mevrouw"),
        ("Geachte heer/mevrouw", False, None),
        ("Geachte wethouder", False, None),
        ("mr.", False, None),
        ("M", False, None),
        ("V", True, "mevrouw"),
        ("M", True, "heer"),
        ("X", True, None),
    ],
)
def test_aanspreekvorm_only_when_given(text: str, gender_column: bool, expected: str | None) -> None:
    assert parse_aanspreekvorm(text, gender_column=gender_column) == expected


def test_dates() -> None:
    assert parse_date("31-03-2030") == date(2030, 3, 31)
    assert parse_date("2030-03-31") == date(2030, 3, 31)
    assert parse_date("31/03/2030") == date(2030, 3, 31)
    assert parse_date("maart 2030") is None


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("a\rb", "carriage return (CR)"),
        ("a\nb", "line feed (LF)"),
        ("a\x00b", "NUL"),
        ("a\tb", "tab"),
        ("a\u2028b", "control character U+2028"),
        ("a\x85b", "control character U+0085"),
        ("a\x7fb", "control character U+007F"),
    ],
)
def test_control_characters_are_named(value: str, name: str) -> None:
    assert control_character(value) == name


def test_clean_collapses_web_whitespace_but_keeps_text() -> None:
    assert control_character("Zoë van der Berg") is None
    assert clean("  Jan\u00a0 van  Dijk ") == "Jan van Dijk"
    assert clean("Zoë") == "Zoë"


ADDRESSES = [
    "jan.jansen@utrecht.example.nl",
    "Jan.Jansen@Utrecht.Example.NL",
    "POSTMASTER@example.nl",
    "Info@Gemeente.example.nl",
    "o'brien+raad@example.nl",
    "zoë@example.nl",
    "jan@bücher.example",
    "jan@xn--bcher-kva.example",
    '"jan jansen"@example.nl',
    "a" * 64 + "@example.nl",
    "a" * 240 + "@example.nl",
    "x@" + "d" * 63 + "." + "e" * 63 + "." + "f" * 63 + "." + "g" * 50 + ".nl",
    "jan..jansen@example.nl",
    ".jan@example.nl",
    "jan@example",
    "jan@@example.nl",
    "jan@exam_ple.nl",
    "jan@-example.nl",
    "jan@localhost",
    "jan@example.nl.",
    "jan jansen@example.nl",
    "@example.nl",
    "jan@",
    "jan",
    "jan@[127.0.0.1]",
    "Jan <jan@example.nl>",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_address_checker_agrees_with_email_validator(address: str) -> None:
    checker = AddressChecker()
    checker.normalize("warm.up@example.nl")  # the domain cache is what the fast path relies on
    try:
        expected: str | None = validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError:
        expected = None
    for _ in range(2):  # first sight of a domain, then from the cache
        if expected is None:
            with pytest.raises(InvalidAddress):
                checker.normalize(address)
        else:
            assert checker.normalize(address) == expected
