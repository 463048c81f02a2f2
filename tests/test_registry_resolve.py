"""Municipality resolution: every one of the 342 by name and code, aliases, diacritics, Bergen."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from outreach.registry.keys import fold
from outreach.registry.municipalities import default_reference_file, read_reference
from outreach.registry.resolve import MunicipalityResolver, Unresolved


@pytest.fixture
def resolver(registry_engine: Engine) -> MunicipalityResolver:
    with registry_engine.connect() as conn:
        return MunicipalityResolver.load(conn)


REFERENCE = read_reference(default_reference_file())


def test_all_342_resolve_by_official_name_and_every_code_spelling(resolver: MunicipalityResolver) -> None:
    assert len(REFERENCE) == 342
    for row in REFERENCE:
        code, name = row["gemeentecode"], row["gemeentenaam"]
        assert resolver.resolve(name=name).cbs_code == code, name
        assert resolver.resolve(name=name.upper()).cbs_code == code, name
        assert resolver.resolve(name=fold(name)).cbs_code == code, name  # no accents, lower case
        number = int(code[2:])
        for spelling in (code, code.lower(), code[2:], str(number), f"  {code}   "):
            assert resolver.resolve(code=spelling).cbs_code == code, spelling


def test_every_unambiguous_alias_resolves(resolver: MunicipalityResolver) -> None:
    for row in REFERENCE:
        if row["alias"] and row["alias"] != "Bergen":
            assert resolver.resolve(name=row["alias"]).cbs_code == row["gemeentecode"], row["alias"]


@pytest.mark.parametrize(
    ("written", "code"),
    [
        ("'s-Gravenhage", "GM0518"),
        ("Den Haag", "GM0518"),
        ("’s-Gravenhage", "GM0518"),  # a curly apostrophe from Word
        ("s-Gravenhage", "GM0518"),
        ("'s-Hertogenbosch", "GM0796"),
        ("Den Bosch", "GM0796"),
        ("Nuenen, Gerwen en Nederwetten", "GM0820"),
        ("nuenen gerwen en nederwetten", "GM0820"),
        ("Súdwest-Fryslân", "GM1900"),
        ("Sudwest Fryslan", "GM1900"),
        ("Tietjerksteradeel", "GM0737"),
        ("Gemeente Utrecht", "GM0344"),
        ("Utrecht (gemeente)", "GM0344"),
        ("Bergen (NH.)", "GM0373"),
        ("Bergen (N.H.)", "GM0373"),
        ("bergen l", "GM0893"),
        ("0363", "GM0363"),  # a code in the Gemeente column
    ],
)
def test_spellings_seen_in_real_lists(resolver: MunicipalityResolver, written: str, code: str) -> None:
    assert resolver.resolve(name=written).cbs_code == code


def test_bare_bergen_is_ambiguous_and_names_both_candidates(resolver: MunicipalityResolver) -> None:
    with pytest.raises(Unresolved) as caught:
        resolver.resolve(name="Bergen")
    message = str(caught.value)
    assert "Bergen (NH.) (GM0373, Noord-Holland)" in message
    assert "Bergen (L.) (GM0893, Limburg)" in message
    assert "Provincie" in message
    assert caught.value.kind == "ambiguous municipality"


@pytest.mark.parametrize(
    ("province", "code"),
    [
        ("Noord-Holland", "GM0373"),
        ("NH", "GM0373"),
        ("PV27", "GM0373"),
        ("Limburg", "GM0893"),
        ("L", "GM0893"),
    ],
)
def test_a_province_settles_bergen(resolver: MunicipalityResolver, province: str, code: str) -> None:
    assert resolver.resolve(name="Bergen", province=province).cbs_code == code


def test_unknown_name_suggests_the_nearest(resolver: MunicipalityResolver) -> None:
    with pytest.raises(Unresolved, match=r"unknown municipality 'Amsterdm'; did you mean 'Amsterdam'"):
        resolver.resolve(name="Amsterdm")
    with pytest.raises(Unresolved, match=r"did you mean 'Zwolle'"):
        resolver.resolve(name="Zwole")
    with pytest.raises(Unresolved, match=r"^unknown municipality 'Atlantis'$"):
        resolver.resolve(name="Atlantis")


def test_contradictions_are_named(resolver: MunicipalityResolver) -> None:
    with pytest.raises(Unresolved, match=r"Gemeentecode 'GM0363' is Amsterdam .* but Gemeente 'Utrecht'"):
        resolver.resolve(code="GM0363", name="Utrecht")
    with pytest.raises(Unresolved, match=r"Utrecht \(GM0344\) lies in Utrecht, not in Fryslân"):
        resolver.resolve(name="Utrecht", province="Friesland")
    with pytest.raises(Unresolved, match=r"no municipality has CBS code GM9999"):
        resolver.resolve(code="9999")
    with pytest.raises(Unresolved, match=r"is not a CBS code"):
        resolver.resolve(code="Utrecht")
    with pytest.raises(Unresolved, match=r"unknown province 'Holland'"):
        resolver.resolve(name="Utrecht", province="Holland")
