"""Importing the government register export (exportOO.xml): the shared sample and generated exports;
re-syncing a newer export; idempotence; files that are not a (complete) export."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import sqlmodel
from sqlalchemy import Engine, func, select
from sqlmodel import Session, SQLModel
from typer.testing import CliRunner

from outreach.cli import app
from outreach.errors import ImportFileError
from outreach.models import Contact, Municipality
from outreach.registry.importer import import_contacts
from outreach.registry.register_result import RegisterResult
from outreach.registry.register_sync import import_register
from outreach.sending.plan import plan_deliveries
from outreach.tracking.privacy import forget_person
from tests.fixtures_registry import WriteCsv
from tests.fixtures_sending import CampaignFactory
from tests.register_export import Org, Person, write_export

# A copy of ../shared/data/roo/sample-exportOO.xml (the register's structure; people and addresses are
# fictional), so that a fresh clone tests without the shared folder.
SAMPLE = Path(__file__).resolve().parent / "data" / "registry" / "sample-exportOO.xml"
TODAY = date(2026, 4, 25)  # a few days after the sample's last datumMutatie


def contacts(engine: Engine) -> dict[str, Contact]:
    """Register contacts by register id."""
    with Session(engine) as session:
        rows = session.exec(sqlmodel.select(Contact)).all()
    return {c.register_id or f"#{c.id}": c for c in rows}


def snapshot(engine: Engine) -> list[tuple[object, ...]]:
    table = SQLModel.metadata.tables["contact"]
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))]


def gemeente(code: str, name: str, *functies: tuple[str, list[Person]], **fields: object) -> Org:
    return Org(id=f"1{code[2:]}", name=f"Gemeente {name}", code=code, functies=list(functies), **fields)  # type: ignore[arg-type]


# --- the shared sample -------------------------------------------------------------------------------


@pytest.fixture
def sample_import(registry_engine: Engine) -> RegisterResult:
    return import_register(registry_engine, SAMPLE, today=TODAY)


def test_the_sample_imports_every_office_holder_of_the_active_gemeenten(
    registry_engine: Engine, sample_import: RegisterResult
) -> None:
    result = sample_import
    assert (result.gemeenten, result.joined, result.left, result.changed) == (2, 9, 0, 0)
    assert result.version == "2.6.9" and result.warnings == []
    found = contacts(registry_engine)
    # Burgemeester: name parts from one string; the source gives "Mw.", so the salutation may use it.
    proef = found["28990201"]
    assert (proef.aanspreekvorm, proef.title, proef.voorletters, proef.tussenvoegsel, proef.achternaam) == (
        "mevrouw",
        "drs.",
        "A.B.",
        "de",
        "Proef",
    )
    assert (proef.role, proef.party, proef.email, proef.term_start) == (
        "burgemeester",
        "D66",
        "burgemeester@voorbeeldstad.example.nl",
        date(2021, 9, 1),
    )
    assert proef.source == "register export 2026-04-20"
    # The wethouder who is also locoburgemeester is one contact with a mark, not two.
    testmans = found["28990202"]
    assert (testmans.role, testmans.locoburgemeester) == ("wethouder", True)
    assert "28990205" not in found
    # A person without an address is a contact too.
    janssen = found["28990203"]
    assert (janssen.email, janssen.email_key, janssen.office_key, janssen.achternaam) == (
        None,
        None,
        None,
        "Voorbeeld-Janssen",
    )
    # Left after the election (end date passed), the merged gemeente, the Woo-contactpersoon: not imported.
    assert "28990204" not in found and "18990221" not in found and "28990208" not in found
    assert result.passed_over["ended gemeente"] == 1
    assert result.passed_over["office holder of an ended gemeente"] == 1
    assert result.passed_over["functie not imported: Woo-contactpersoon"] == 1
    assert result.passed_over["end date passed, never in the registry"] == 1
    # Waarnemend by rol, with an end date still ahead; griffie from the griffier's entry and an onderdeel.
    tijdelijk = found["28990211"]
    assert (tijdelijk.role, tijdelijk.waarnemend, tijdelijk.term_end, tijdelijk.title) == (
        "burgemeester",
        True,
        date(2026, 8, 14),
        "mr.",
    )
    griffies = {c.register_id: c.email for c in found.values() if c.role == "griffie"}
    assert griffies == {
        "GM0193-griffie": "griffie@voorbeeldstad.example.nl",
        "GM1979-griffie": "griffie@proefwolde.example.nl",
    }
    with Session(registry_engine) as session:
        zwolle = session.exec(sqlmodel.select(Municipality).where(Municipality.cbs_code == "GM0193")).one()
    assert (zwolle.postal_address_line, zwolle.postal_code, zwolle.postal_city) == (
        "Postbus 100",
        "9990 AA",
        "VOORBEELDSTAD",
    )
    assert result.without_email == 4  # Voorbeeld-Janssen, Raadsman, Tijdelijk, van der Steekproef


def test_importing_the_same_export_again_changes_nothing(
    registry_engine: Engine, sample_import: RegisterResult
) -> None:
    before = snapshot(registry_engine)
    again = import_register(registry_engine, SAMPLE, today=TODAY)
    assert (again.joined, again.left, again.changed, again.unchanged) == (0, 0, 0, sample_import.joined)
    assert again.changes == [] and again.municipalities_updated == 0
    assert snapshot(registry_engine) == before


def test_dry_run_writes_nothing_and_json_is_one_document(
    registry_engine: Engine, runner: CliRunner, db_url: str
) -> None:
    before = snapshot(registry_engine)
    shown = runner.invoke(app, ["--database", db_url, "contacts", "import", str(SAMPLE), "--dry-run"])
    assert shown.exit_code == 0, shown.output
    assert "Dry run: nothing was written" in shown.stdout
    assert "joined   Zwolle (GM0193)  wethouder  Dhr. J.K. Testmans  [register 28990202]" in shown.stdout
    assert snapshot(registry_engine) == before
    with registry_engine.connect() as conn:
        postal = SQLModel.metadata.tables["municipality"].c.postal_code
        assert conn.execute(select(func.count()).where(postal.is_not(None))).scalar_one() == 0
    dumped = runner.invoke(
        app, ["--database", db_url, "contacts", "import", str(SAMPLE), "--dry-run", "--json"]
    )
    document = json.loads(dumped.stdout)
    assert document["dry_run"] is True and document["kind"] == "register export"
    assert document["by_role"]["wethouder"]["joined"] >= 2
    assert any(c["register_id"] == "28990203" and c["kind"] == "joined" for c in document["changes"])
    assert snapshot(registry_engine) == before


# --- generated exports: every case of the format -----------------------------------------------------


def test_names_parties_roles_marks_and_encoded_addresses(registry_engine: Engine, tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "exportOO.xml",
        [
            gemeente(
                "gm0344",
                "Utrecht",
                (
                    "Burgemeester waarnemend",
                    [Person("1", "Dhr. mr. J.K. van der Berg-de Vries", party="Geen")],
                ),
                (
                    "Raadslid",
                    [
                        Person(
                            "2", "Mw. A. de Wit", party="D66", email="a.dewit@utrecht.nl", encode_email=True
                        )
                    ],
                ),
                ("Fractievoorzitter", [Person("3", "Mw. A. de Wit", party="D66")]),
                ("Locoburgemeester", [Person("4", "Dhr. Z. Nergens")]),
                ("Gemeentesecretaris", [Person("5", "Dhr. S. Ecretaris")]),
                ("Raadsgriffier", [Person("6", "Dhr. G. Riffier", email="g.riffier@utrecht.nl")]),
            ),
            Org(id="900", name="Provincie Utrecht", type="Provincie"),
            Org(id="901", name="Waterschap Stichtse Rijnlanden", type="Waterschap"),
            Org(id="902", name="Waterschap Vallei en Veluwe", type="Waterschap"),
            gemeente("gm9999", "Nergenshuizen", ("Raadslid", [Person("7", "Dhr. N. Iemand")])),
        ],
    )
    result = import_register(registry_engine, export, today=TODAY)
    found = contacts(registry_engine)
    berg = found["1"]
    assert (berg.role, berg.waarnemend, berg.party) == ("burgemeester", True, None)
    assert (berg.aanspreekvorm, berg.title, berg.voorletters, berg.tussenvoegsel, berg.achternaam) == (
        "heer",
        "mr.",
        "J.K.",
        "van der",
        "Berg-de Vries",
    )
    wit = found["2"]
    assert (wit.email, wit.fractievoorzitter, wit.locoburgemeester) == ("a.dewit@utrecht.nl", True, False)
    assert set(found) == {"1", "2", "6"}  # no griffie mailbox: the griffier's address is their own
    assert result.passed_over["other body: Waterschap"] == 2
    assert result.passed_over["other body: Provincie"] == 1
    assert result.passed_over["functie not imported: Gemeentesecretaris"] == 1
    assert result.passed_over["locoburgemeester/fractievoorzitter without another office"] == 1
    assert result.unknown_codes == ["Gemeente Nergenshuizen (gm9999)"]
    assert any("locoburgemeester Dhr. Z. Nergens" in note for note in result.anomalies["Utrecht"])


def test_anomalies_are_reported_per_municipality_and_never_stop_the_import(
    registry_engine: Engine, tmp_path: Path
) -> None:
    wethouders = [Person(f"w{n}", f"Dhr. W. Ethouder{n}") for n in range(10)]
    export = write_export(
        tmp_path / "exportOO.xml",
        [
            gemeente(
                "gm0363",
                "Amsterdam",
                ("Burgemeester", [Person("b1", "Mw. F. Halsema")]),
                ("Burgemeester waarnemend", [Person("b2", "Dhr. T. Ijdelijk")]),
                ("Wethouder", wethouders),
                ("Raadslid", [Person("r1", "Jan Jansen")]),
                verified="2025-03-01",
            ),
            gemeente("gm0599", "Rotterdam", ("Raadslid", [Person("r2", "Mw. K. Lein")])),
        ],
    )
    result = import_register(registry_engine, export, today=TODAY)
    notes = result.anomalies["Amsterdam"]
    assert any(n.startswith("2 burgemeesters:") for n in notes)
    assert "10 wethouders (more than 9: stale entries?)" in notes
    assert "raadslid 'Jan Jansen': a name without initials" in notes
    assert any("last verified on 2025-03-01, over a year ago" in n for n in notes)
    assert "Rotterdam" not in result.anomalies
    assert result.joined == 14


@pytest.mark.parametrize(("version", "warned"), [("2.4.3", False), ("2.6.1", False), ("2.7.0", True)])
def test_schema_versions_are_read_alike_and_an_unseen_one_is_a_warning(
    registry_engine: Engine, tmp_path: Path, version: str, warned: bool
) -> None:
    export = write_export(
        tmp_path / "exportOO.xml",
        [
            gemeente(
                "gm0014", "Groningen", ("Raadslid", [Person("1", "Mw. G. Roningen", email="g@groningen.nl")])
            )
        ],
        version=version,
    )
    result = import_register(registry_engine, export, today=TODAY)
    assert result.joined == 1 and result.version == version
    assert bool(result.warnings) is warned
    if warned:
        assert "schema version 2.7.0 has not been seen before" in result.warnings[0]


def test_code_from_the_tooi_id_and_an_ended_gemeente(registry_engine: Engine, tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "exportOO.xml",
        [
            Org(
                id="1",
                name="Gemeente Eemsdelta",
                code="gm1979",
                code_in_tooi_only=True,
                functies=[("Raadslid", [Person("1", "Dhr. E. Ems")])],
            ),
            Org(
                id="2",
                name="Gemeente Delfzijl",
                code="gm0010",
                end="2021-01-01",
                functies=[("Raadslid", [Person("2", "Dhr. D. Elf"), Person("3", "Dhr. Z. Ijl")])],
            ),
            Org(
                id="3",
                name="Gemeente Later",
                code="gm0014",
                end="2027-01-01",
                functies=[("Raadslid", [Person("4", "Dhr. L. Ater")])],
            ),
        ],
    )
    result = import_register(registry_engine, export, today=TODAY)
    assert set(contacts(registry_engine)) == {"1", "4"}  # an end date still ahead is no end yet
    assert (
        result.passed_over["ended gemeente"],
        result.passed_over["office holder of an ended gemeente"],
    ) == (1, 2)


# --- files that are not a complete export -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"exportOO\.xml:\d+: not a complete XML file: the file ends before the XML is complete"),
        (
            b"<html><body><p>Service unavailable</body></html>",
            r"not the register export \(its root element is <html>",
        ),
        (b"< this is not XML >\n", r"exportOO\.xml:1: not a complete XML file: not well-formed"),
        (
            b'<?xml version="1.0"?><catalogus><boek/></catalogus>',
            r"not the register export \(its root element is <catalogus>",
        ),
    ],
)
def test_a_truncated_or_foreign_file_is_one_error_and_nothing_is_written(
    registry_engine: Engine,
    sample_import: RegisterResult,
    tmp_path: Path,
    runner: CliRunner,
    db_url: str,
    content: bytes | None,
    message: str,
) -> None:
    before = snapshot(registry_engine)
    broken = tmp_path / "exportOO.xml"
    broken.write_bytes(content if content is not None else SAMPLE.read_bytes()[:7000])
    with pytest.raises(ImportFileError, match=message):
        import_register(registry_engine, broken, today=TODAY)
    shown = runner.invoke(app, ["--database", db_url, "contacts", "import", str(broken)])
    assert shown.exit_code == 1
    assert len(shown.stderr.strip().splitlines()) <= 2 and "Traceback" not in shown.output
    assert shown.stderr.startswith(f"Error: {broken}")
    assert snapshot(registry_engine) == before


# --- re-sync ----------------------------------------------------------------------------------------


def _first_export(tmp_path: Path) -> Path:
    return write_export(
        tmp_path / "export-maart.xml",
        [
            gemeente(
                "gm0344",
                "Utrecht",
                (
                    "Burgemeester",
                    [Person("1", "Mw. S. Dijksma", party="PvdA", email="burgemeester@utrecht.nl")],
                ),
                (
                    "Wethouder",
                    [
                        Person("2", "Dhr. L. Oud", party="VVD", email="l.oud@utrecht.nl"),
                        Person("3", "Mw. E. Einde", party="CDA", end="2026-06-30"),
                    ],
                ),
                (
                    "Raadslid",
                    [
                        Person("4", "Dhr. P. Artij", party="D66"),
                        Person("5", "Mw. A. Dres", party="GL", email="a.dres@utrecht.nl"),
                        Person("6", "Mw. H. Andwerk", party="CU"),
                    ],
                ),
                mutated="2026-03-01",
            )
        ],
    )


def _second_export(tmp_path: Path) -> Path:
    return write_export(
        tmp_path / "export-mei.xml",
        [
            gemeente(
                "gm0344",
                "Utrecht",
                (
                    "Burgemeester",
                    [Person("1", "Mw. S. Dijksma", party="PvdA", email="burgemeester@utrecht.nl")],
                ),
                # 2 is gone; 3 has an end date now passed; 7 joined
                (
                    "Wethouder",
                    [
                        Person("3", "Mw. E. Einde", party="CDA", end="2026-04-01"),
                        Person("7", "Dhr. N. Ieuw", party="VVD"),
                    ],
                ),
                # 4 changed party; 5's address changed in the register; 6 still without one
                (
                    "Raadslid",
                    [
                        Person("4", "Dhr. P. Artij", party="Geen"),
                        Person("5", "Mw. A. Dres", party="GL", email="dres@utrecht.nl"),
                        Person("6", "Mw. H. Andwerk", party="CU"),
                    ],
                ),
                mutated="2026-04-20",
            )
        ],
    )


def test_a_newer_export_updates_every_office_by_register_id(
    registry_engine: Engine, tmp_path: Path, write_csv: WriteCsv, make_campaign: CampaignFactory
) -> None:
    first = import_register(registry_engine, _first_export(tmp_path), today=date(2026, 3, 2))
    assert first.joined == 6
    # Staff found raadslid Andwerk's address and imported it by hand.
    hand = write_csv(
        [
            ["Naam", "Functie", "Gemeente", "E-mail"],
            ["Mw. H. Andwerk", "Raadslid", "Utrecht", "h.andwerk@utrecht.nl"],
        ]
    )
    import_contacts(registry_engine, hand)

    result = import_register(registry_engine, _second_export(tmp_path), today=TODAY)
    found = contacts(registry_engine)
    changes = {(c.kind, c.register_id): c for c in result.changes}
    assert set(changes) == {
        ("left", "2"),
        ("left", "3"),
        ("joined", "7"),
        ("changed", "4"),
        ("changed", "5"),
        ("changed", "6"),
    }
    assert changes[("changed", "4")].fields == (("party", "D66", "-"),)
    assert changes[("changed", "5")].fields == (("email", "a.dres@utrecht.nl", "dres@utrecht.nl"),)
    assert (found["2"].active, found["2"].term_end) == (False, date(2026, 4, 20))  # gone: the export's date
    assert (found["3"].active, found["3"].term_end) == (False, date(2026, 4, 1))  # its own end date
    assert found["4"].party is None and found["5"].email == "dres@utrecht.nl"
    assert found["5"].office_key == "dres@utrecht.nl|GM0344|raadslid"
    # The hand-imported address of a person the register lists without one is kept, on one contact.
    andwerk = [c for c in found.values() if c.achternaam == "Andwerk"]
    assert [(c.register_id, c.email, c.active) for c in sorted(andwerk, key=lambda c: not c.active)] == [
        ("6", "h.andwerk@utrecht.nl", True),
        (None, None, False),
    ]
    assert found["7"].source == "register export 2026-04-20"
    assert result.by_role["wethouder"] == {"left": 2, "joined": 1}
    # Who left is in no audience any more; nothing was deleted.
    everyone = make_campaign(extra="")
    planned = plan_deliveries(registry_engine, everyone)
    with registry_engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(SQLModel.metadata.tables["contact"])
        ).scalar_one()
    assert total == 8
    assert planned.total == 3  # raadsleden 4, 5 and 6 (the campaign writes to raadsleden)

    # The same export again: nothing to do, the hand-imported address still there.
    again = import_register(registry_engine, _second_export(tmp_path), today=TODAY)
    assert (again.joined, again.left, again.changed) == (0, 0, 0)
    assert contacts(registry_engine)["6"].email == "h.andwerk@utrecht.nl"


def test_a_hand_imported_office_is_taken_over_and_its_address_kept(
    registry_engine: Engine, tmp_path: Path, write_csv: WriteCsv
) -> None:
    hand = write_csv(
        [
            ["Naam", "Functie", "Gemeente", "E-mail"],
            ["Mw. H. Andwerk", "Raadslid", "Utrecht", "h.andwerk@utrecht.nl"],
            ["Mw. A. Dres", "Raadslid", "Utrecht", "a.dres@utrecht.nl"],
        ]
    )
    import_contacts(registry_engine, hand)
    result = import_register(registry_engine, _first_export(tmp_path), today=date(2026, 3, 2))
    found = contacts(registry_engine)
    assert found["6"].email == "h.andwerk@utrecht.nl"  # by name: the register has no address
    assert found["5"].email == "a.dres@utrecht.nl"  # by address
    assert len(found) == 6
    notes = {c.register_id: c.note for c in result.changes}
    assert notes["6"] is not None and notes["6"].startswith("took over the hand-imported contact")


def test_a_forgotten_office_holder_stays_out(registry_engine: Engine, sample_import: RegisterResult) -> None:
    forget_person(registry_engine, "register:28990203")
    again = import_register(registry_engine, SAMPLE, today=TODAY)
    assert "28990203" not in contacts(registry_engine)
    assert again.passed_over["erased earlier (contacts forget)"] == 1
    assert again.joined == 0 and again.left == 0


@pytest.mark.postgres
def test_import_and_resync_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    from outreach.db import open_database
    from outreach.registry.municipalities import load_municipalities

    engine = open_database(pg_url)
    try:
        load_municipalities(engine)
        assert import_register(engine, _first_export(tmp_path), today=date(2026, 3, 2)).joined == 6
        result = import_register(engine, _second_export(tmp_path), today=TODAY)
        assert (result.joined, result.left, result.changed) == (1, 2, 2)
        assert import_register(engine, _second_export(tmp_path), today=TODAY).changes == []
        found = contacts(engine)
        assert (found["2"].active, found["5"].email, found["4"].party) == (False, "dres@utrecht.nl", None)
    finally:
        engine.dispose()


def test_json_summary_of_a_council_list_import(
    registry_engine: Engine, write_csv: WriteCsv, runner: CliRunner, db_url: str
) -> None:
    hand = write_csv(
        [
            ["Naam", "Functie", "Gemeente", "E-mail"],
            ["Mw. H. Andwerk", "Raadslid", "Utrecht", "h.andwerk@utrecht.nl"],
        ]
    )
    shown = runner.invoke(app, ["--database", db_url, "contacts", "import", str(hand), "--json"])
    assert shown.exit_code == 0, shown.output
    document = json.loads(shown.stdout)
    assert (document["kind"], document["inserted"], document["rows_read"]) == ("csv", 1, 1)
    refused = runner.invoke(app, ["--database", db_url, "contacts", "import", str(SAMPLE), "--sheet", "x"])
    assert refused.exit_code == 2 and "--sheet does not apply to a register export" in refused.output


def test_a_hand_imported_griffie_mailbox_is_taken_over_and_the_unreachable_listed(
    registry_engine: Engine, write_csv: WriteCsv, runner: CliRunner, db_url: str
) -> None:
    hand = write_csv(
        [
            ["Naam", "Functie", "Gemeente", "E-mail"],
            ["Griffie Zwolle", "Griffie", "Zwolle", "griffie@voorbeeldstad.example.nl"],
        ]
    )
    import_contacts(registry_engine, hand)
    import_register(registry_engine, SAMPLE, today=TODAY)
    griffies = [c for c in contacts(registry_engine).values() if c.role == "griffie"]
    assert sorted((c.register_id or "", c.email or "") for c in griffies) == [
        ("GM0193-griffie", "griffie@voorbeeldstad.example.nl"),
        ("GM1979-griffie", "griffie@proefwolde.example.nl"),
    ]
    listed = runner.invoke(app, ["--database", db_url, "contacts", "list", "--without-email", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(v["register_id"] for v in json.loads(listed.stdout)) == [
        "28990203",
        "28990207",
        "28990211",
        "28990212",
    ]


def test_the_command_line_loads_the_register_reader_only_when_it_reads_one() -> None:
    """`outreach send` starts quickly: the CLI's start-up must not import the register's sync, whose
    address checks need email-validator (about 0.1-0.2 s)."""
    import subprocess
    import sys

    watched = (
        "email_validator",
        "outreach.registry.register_sync",
        "outreach.registry.register_held",
        "outreach.registry.register",
    )
    probe = f"import sys, outreach.cli; print(sorted(m for m in {watched!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
