"""The import: what ends up in the registry, what is reported, and what is never touched."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from outreach.db import open_database
from outreach.errors import DatabaseError, ImportFileError
from outreach.models import Contact, Municipality, Suppression
from outreach.registry.importer import ImportResult, default_rejects_path, import_contacts
from outreach.registry.keys import email_hash, email_key, office_key
from outreach.registry.municipalities import load_municipalities
from tests.fixtures_registry import REGISTRY_DATA, WriteCsv, WriteXlsx, contact_count, contacts_by_email

HEADER = [
    "Voornaam",
    "Tussenvoegsel",
    "Achternaam",
    "Functie",
    "Fractie",
    "E-mail",
    "Gemeente",
    "Portefeuille",
]


def copy(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    target.write_bytes((REGISTRY_DATA / name).read_bytes())
    return target


def rejects_of(result: ImportResult) -> list[dict[str, str]]:
    assert result.rejects_path is not None
    with result.rejects_path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh, delimiter=result.delimiter or ";"))


def assert_adds_up(result: ImportResult, rows: int) -> None:
    assert result.rows_read == rows
    assert result.inserted + result.updated + result.unchanged + result.duplicate + result.rejected == rows


def municipality_code(engine: Engine, contact: Contact) -> str:
    with Session(engine) as session:
        found = session.get(Municipality, contact.municipality_id)
        assert found is not None
        return found.cbs_code


def test_windows_1252_council_list(registry_engine: Engine, tmp_path: Path) -> None:
    result = import_contacts(registry_engine, copy("raad-cp1252.csv", tmp_path))
    assert_adds_up(result, 9)
    assert (result.inserted, result.rejected, result.rejects_path) == (9, 0, None)
    people = contacts_by_email(registry_engine)
    anais = people["a.vanderberg@utrecht.example.nl"]
    assert (anais.voornaam, anais.tussenvoegsel, anais.achternaam, anais.sort_name) == (
        "Anaïs",
        "van der",
        "Berg",
        "berg",
    )
    assert (anais.role, anais.party, anais.source) == ("raadslid", "GroenLinks-PvdA", "raad-cp1252.csv")
    assert municipality_code(registry_engine, anais) == "GM0344"
    renee = people["renee.devries@utrecht.example.nl"]
    assert (renee.role, renee.portfolio) == ("wethouder", "Jeugd")  # from "Wethouder Jeugd"
    assert people["j.muller@utrecht.example.nl"].portfolio == "Financiën"
    assert people["g.vandam@utrecht.example.nl"].tussenvoegsel == "van"  # "Van" in the file
    assert people["g.vandam@utrecht.example.nl"].role == "raadslid"  # "Gemeenteraadslid"
    assert people["b.lefevre@utrecht.example.nl"].role == "burgerraadslid"  # not a raadslid
    assert municipality_code(registry_engine, people["s.dewal@sudwestfryslan.example.nl"]) == "GM1900"
    griffie = people["griffie@utrecht.example.nl"]
    assert (griffie.role, griffie.achternaam, griffie.voornaam) == ("griffie", None, None)
    assert griffie.office_key == office_key("griffie@utrecht.example.nl", "GM0344", "griffie")
    assert griffie.email_hash == email_hash(email_key("griffie@utrecht.example.nl"))


def test_single_name_column_codes_and_a_line_break_in_a_name(registry_engine: Engine, tmp_path: Path) -> None:
    result = import_contacts(registry_engine, copy("griffies-utf8-bom.csv", tmp_path))
    assert_adds_up(result, 5)
    assert (result.inserted, result.rejected) == (4, 1)
    assert result.ignored_columns == ["Adres"]
    people = contacts_by_email(registry_engine)
    berg = people["hj.vanderberg@denhaag.example.nl"]
    assert (berg.voorletters, berg.tussenvoegsel, berg.achternaam, berg.aanspreekvorm) == (
        "H.J.",
        "van der",
        "Berg",
        "heer",
    )
    assert municipality_code(registry_engine, berg) == "GM0518"
    peer = people["p.bemelmans@maastricht.example.nl"]
    assert (peer.voorletters, peer.voornaam, peer.achternaam, peer.portfolio) == (
        "P.J.F.",
        "Peer-Jan",
        "Bemelmans",
        "Jeugd en Onderwijs",
    )
    devries = people["a.devries@nuenen.example.nl"]
    assert (devries.title, devries.achternaam, devries.aanspreekvorm, devries.role) == (
        "drs.",
        "Vries-van Dam",
        "mevrouw",
        "griffier",
    )
    assert municipality_code(registry_engine, devries) == "GM0820"
    assert municipality_code(registry_engine, people["anouk.intveld@zwolle.example.nl"]) == "GM0193"
    [reject] = rejects_of(result)
    assert reject["row"] == "6"
    assert reject["reason"] == "line feed (LF) in column A (Naam)"
    assert reject["Naam"] == "Jan\nJansen"  # the original cells, for staff to correct
    assert result.rejects_path == tmp_path / "griffies-utf8-bom.rejects.csv"


def test_bergen_is_settled_by_province_and_rejected_without(registry_engine: Engine, tmp_path: Path) -> None:
    result = import_contacts(registry_engine, copy("bergen-utf8.csv", tmp_path))
    assert (result.inserted, result.rejected, result.header_row) == (2, 1, 2)
    people = contacts_by_email(registry_engine)
    assert municipality_code(registry_engine, people["k.zonneveld@bergen-nh.example.nl"]) == "GM0373"
    assert municipality_code(registry_engine, people["r.peeters@bergen-l.example.nl"]) == "GM0893"
    [reject] = rejects_of(result)
    assert reject["row"] == "5"
    assert "ambiguous" in reject["reason"] and "GM0373" in reject["reason"] and "GM0893" in reject["reason"]


def test_utf16_tab_separated(registry_engine: Engine, tmp_path: Path) -> None:
    result = import_contacts(registry_engine, copy("excel-unicode-tekst.txt", tmp_path))
    assert (result.inserted, result.encoding, result.delimiter) == (2, "utf-16", "\t")
    assert contacts_by_email(registry_engine)["o.celik@rotterdam.example.nl"].achternaam == "Çelik"


def test_reimport_updates_changes_and_leaves_the_rest(registry_engine: Engine, write_csv: WriteCsv) -> None:
    first = write_csv(
        [
            HEADER,
            ["Jan", "van", "Dijk", "Raadslid", "VVD", "jan.vandijk@utrecht.example.nl", "Utrecht", ""],
            ["Els", "", "Mulder", "Wethouder", "D66", "els.mulder@utrecht.example.nl", "Utrecht", "Jeugd"],
            ["Piet", "", "Bos", "Raadslid", "CDA", "piet.bos@utrecht.example.nl", "Utrecht", ""],
        ],
        name="raad-2025.csv",
    )
    import_contacts(registry_engine, first)
    before = contacts_by_email(registry_engine)
    second = write_csv(
        [
            HEADER,
            ["Jan", "van", "Dijk", "Raadslid", "VVD", "Jan.VanDijk@Utrecht.example.nl", "Utrecht", ""],
            [
                "Els",
                "",
                "Mulder",
                "Wethouder",
                "",
                "els.mulder@utrecht.example.nl",
                "Utrecht",
                "Jeugd, Onderwijs",
            ],
            ["Piet", "", "Bos", "Raadslid", "CDA", "piet.bos@utrecht.example.nl", "Utrecht", ""],
            ["Piet", "", "Bos", "Wethouder", "CDA", "piet.bos@utrecht.example.nl", "Utrecht", "Wonen"],
        ],
        name="raad-2026.csv",
    )
    result = import_contacts(registry_engine, second, source="griffie Utrecht, maart 2026")
    assert_adds_up(result, 4)
    # Jan: the address differs only in case, but the given spelling is kept, so that is a change.
    assert (result.inserted, result.updated, result.unchanged) == (1, 2, 1)
    after = contacts_by_email(registry_engine)
    els = after["els.mulder@utrecht.example.nl"]
    assert els.portfolio == "Jeugd, Onderwijs"
    assert els.party == "D66"  # an empty cell never erases what is known
    assert els.source == "griffie Utrecht, maart 2026"
    assert els.imported_at == before["els.mulder@utrecht.example.nl"].imported_at
    assert els.updated_at > before["els.mulder@utrecht.example.nl"].updated_at
    piet = before["piet.bos@utrecht.example.nl"]
    with Session(registry_engine) as session:
        query = select(Contact).where(col(Contact.email_key) == "piet.bos@utrecht.example.nl")
        pieten = session.exec(query).all()
    assert sorted(p.role for p in pieten) == ["raadslid", "wethouder"]  # one person, two offices
    unchanged = next(p for p in pieten if p.role == "raadslid")
    assert (unchanged.source, unchanged.updated_at) == ("raad-2025.csv", piet.updated_at)
    jan = after["jan.vandijk@utrecht.example.nl"]
    assert (jan.email, jan.email_normalized) == (
        "Jan.VanDijk@Utrecht.example.nl",
        "Jan.VanDijk@utrecht.example.nl",
    )
    assert contact_count(registry_engine) == 4


def test_duplicates_in_the_file_are_reported_not_imported_twice(
    registry_engine: Engine, write_csv: WriteCsv
) -> None:
    path = write_csv(
        [
            HEADER,
            ["Jan", "", "Jansen", "Raadslid", "VVD", "jan.jansen@zwolle.example.nl", "Zwolle", ""],
            ["", "", "", "Griffie", "", "griffie@zwolle.example.nl", "Zwolle", ""],
            ["Jan", "", "Jansen", "Raadslid", "VVD", "JAN.JANSEN@zwolle.example.nl", "GM0193", ""],
            ["Wim", "", "Griffioen", "Griffier", "", "griffie@zwolle.example.nl", "Zwolle", ""],
        ]
    )
    result = import_contacts(registry_engine, path)
    assert_adds_up(result, 4)
    assert (result.inserted, result.duplicate, result.rejected) == (3, 1, 0)
    [duplicate] = rejects_of(result)
    assert (duplicate["row"], duplicate["reason"]) == (
        "4",
        "duplicate of row 2: same e-mail, municipality and functie",
    )


def test_control_characters_reject_the_row_and_only_that_row(
    registry_engine: Engine, write_csv: WriteCsv
) -> None:
    rows = [
        HEADER,
        ["Jan", "", "Jansen\rBcc: x@evil.example", "Raadslid", "", "jan@zwolle.example.nl", "Zwolle", ""],
        ["Piet", "", "Bos", "Raadslid", "VVD\x00", "piet@zwolle.example.nl", "Zwolle", ""],
        ["Els", "", "Smit", "Raadslid", "CDA", "els@zwolle.example.nl", "Zwolle", "Jeugd\u2028Zorg"],
        ["Ans", "", "Vos", "Raadslid", "SP", "ans@zwolle.example.nl", "Zwolle", ""],
    ]
    path = write_csv(rows, encoding="utf-8")
    result = import_contacts(registry_engine, path)
    assert (result.inserted, result.rejected) == (1, 3)
    reasons = [r["reason"] for r in rejects_of(result)]
    assert reasons == [
        "carriage return (CR) in column C (Achternaam)",
        "NUL in column E (Fractie)",
        "control character U+2028 in column H (Portefeuille)",
    ]
    assert list(contacts_by_email(registry_engine)) == ["ans@zwolle.example.nl"]


def test_every_kind_of_bad_row_has_a_reason(registry_engine: Engine, write_csv: WriteCsv) -> None:
    header = ["Naam", "Functie", "E-mail", "Gemeente", "Einde termijn"]
    path = write_csv(
        [
            header,
            ["Jan Jansen", "Raadslid", "", "Utrecht", ""],
            ["Jan Jansen", "Raadslid", "jan@@utrecht.example.nl", "Utrecht", ""],
            ["Jan Jansen", "Raadslid", "a@utrecht.example.nl; b@utrecht.example.nl", "Utrecht", ""],
            ["Jan Jansen", "Bestuurder", "jan@utrecht.example.nl", "Utrecht", ""],
            ["Jan Jansen", "", "jan@utrecht.example.nl", "Utrecht", ""],
            ["Jan Jansen", "Raadslid", "jan@utrecht.example.nl", "", ""],
            ["Jan Jansen", "Raadslid", "jan@utrecht.example.nl", "Utrech", ""],
            ["Jan Jansen", "Raadslid", "jan@utrecht.example.nl", "Utrecht", "volgend jaar"],
            ["Jan Jansen", "Raadslid", "jan@utrecht.example.nl", "Utrecht", "31-03-2030", "", "extra"],
            ["Jan Jansen", "Raadslid", "mailto:jan@utrecht.example.nl", "Utrecht", "31-03-2030"],
            [" ", "", "", "", ""],
        ]
    )
    result = import_contacts(registry_engine, path)
    assert_adds_up(result, 10)
    assert (result.inserted, result.rejected, result.blank) == (1, 9, 1)
    reasons = {r["row"]: r["reason"] for r in rejects_of(result)}
    assert reasons["2"] == "no e-mail address"
    assert reasons["3"].startswith("invalid e-mail address 'jan@@utrecht.example.nl': ")
    assert reasons["4"].startswith("more than one e-mail address in 'a@utrecht.example.nl; b@utrecht")
    assert reasons["5"].startswith("unknown Functie 'Bestuurder'; expected one of raadslid, wethouder")
    assert reasons["6"] == "no Functie"
    assert reasons["7"] == "no municipality for a raadslid: the Gemeente cell is empty"
    assert reasons["8"] == "unknown municipality 'Utrech'; did you mean 'Utrecht'?"
    assert reasons["9"] == "Einde termijn 'volgend jaar' is not a date like 31-03-2030"
    assert reasons["10"].startswith("7 fields but the header has 5: a ';' inside a value that is not quoted?")
    assert result.reject_reasons["unknown municipality"] == 1
    jan = contacts_by_email(registry_engine)["jan@utrecht.example.nl"]
    assert (jan.email, jan.term_end) == ("jan@utrecht.example.nl", date(2030, 3, 31))


def test_dry_run_classifies_like_a_real_run_and_writes_nothing(
    registry_engine: Engine, tmp_path: Path
) -> None:
    path = copy("griffies-utf8-bom.csv", tmp_path)
    dry = import_contacts(registry_engine, path, dry_run=True)
    assert (dry.inserted, dry.rejected, dry.dry_run) == (4, 1, True)
    assert contact_count(registry_engine) == 0
    assert dry.rejects_path is None
    assert not default_rejects_path(path).exists()
    asked = import_contacts(registry_engine, path, dry_run=True, rejects_path=tmp_path / "check.csv")
    assert asked.rejects_path == tmp_path / "check.csv" and (tmp_path / "check.csv").exists()
    real = import_contacts(registry_engine, path)
    assert (real.inserted, real.rejected) == (dry.inserted, dry.rejected)
    again = import_contacts(registry_engine, path, dry_run=True)
    assert (again.inserted, again.unchanged) == (0, 4)


def test_an_interrupted_import_leaves_the_database_as_it_was(
    registry_engine: Engine, write_csv: WriteCsv
) -> None:
    import_contacts(registry_engine, copy("raad-cp1252.csv", write_csv([["x"]]).parent))
    before = contact_count(registry_engine)
    rows = [HEADER] + [
        ["Jan", "", f"Jansen{n}", "Raadslid", "VVD", f"jan{n}@zwolle.example.nl", "Zwolle", ""]
        for n in range(50)
    ]
    rows.append(["Bad", "", "Row", "Raadslid", "", "not-an-address", "Zwolle", ""])
    path = write_csv(rows, name="groot.csv")
    calls = 0

    def interrupt(rows_done: int, fraction: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # two batches of ten are written inside the transaction by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_contacts(registry_engine, path, progress=interrupt, batch_size=10)
    assert contact_count(registry_engine) == before
    assert not default_rejects_path(path).exists()
    assert not list(path.parent.glob(".*.tmp"))
    result = import_contacts(registry_engine, path, batch_size=10)  # the lock was released
    assert (result.inserted, result.rejected) == (50, 1)


def test_a_file_that_turns_out_unreadable_half_way_changes_nothing(
    registry_engine: Engine, tmp_path: Path
) -> None:
    path = copy("open-aanhalingsteken.csv", tmp_path)
    with pytest.raises(
        ImportFileError, match=r"open-aanhalingsteken.csv:3:B: a quote opened here is never closed"
    ):
        import_contacts(
            registry_engine, path, batch_size=1
        )  # row 2 is written inside the transaction before row 3 is read
    assert contact_count(registry_engine) == 0


@pytest.mark.parametrize(
    "name", ["leeg.csv", "alleen-kop.csv", "geen-email.csv", "oud-excel.xls", "foto.png"]
)
def test_unimportable_files_raise_and_write_nothing(
    registry_engine: Engine, tmp_path: Path, name: str
) -> None:
    path = copy(name, tmp_path)
    with pytest.raises(ImportFileError):
        import_contacts(registry_engine, path)
    assert contact_count(registry_engine) == 0
    assert not default_rejects_path(path).exists()


def test_suppressed_addresses_are_imported_reported_and_stay_suppressed(
    registry_engine: Engine, write_csv: WriteCsv
) -> None:
    key = email_key("els.mulder@utrecht.example.nl")
    with Session(registry_engine) as session:
        session.add(Suppression(key_hash=email_hash(key), email_key=key, reason="opt-out", source="imap"))
        session.add(
            Suppression(key_hash=email_hash("gone@utrecht.example.nl"), reason="forgotten", source="manual")
        )
        session.commit()
    path = write_csv(
        [
            HEADER,
            ["Els", "", "Mulder", "Wethouder", "D66", "Els.Mulder@utrecht.example.nl", "Utrecht", "Jeugd"],
            ["Jan", "", "Smit", "Raadslid", "D66", "gone@utrecht.example.nl", "Utrecht", ""],
            ["Piet", "", "Bos", "Raadslid", "CDA", "piet.bos@utrecht.example.nl", "Utrecht", ""],
        ]
    )
    result = import_contacts(registry_engine, path)
    assert result.inserted == 3
    assert result.suppressed == {"opt-out": 1, "forgotten": 1}
    assert [(s.row, s.email, s.reason) for s in result.suppressed_rows] == [
        (2, "Els.Mulder@utrecht.example.nl", "opt-out"),
        (3, "gone@utrecht.example.nl", "forgotten"),
    ]
    with Session(registry_engine) as session:
        suppressions = session.exec(select(Suppression).order_by(col(Suppression.id))).all()
    assert [(s.reason, s.email_key) for s in suppressions] == [("opt-out", key), ("forgotten", None)]
    assert contacts_by_email(registry_engine)[key].email_hash == suppressions[0].key_hash
    again = import_contacts(registry_engine, path)
    assert (again.unchanged, sum(again.suppressed.values())) == (3, 2)


def test_xlsx_with_numeric_codes_and_dates(registry_engine: Engine, write_xlsx: WriteXlsx) -> None:
    path = write_xlsx(
        {
            "Blad1": [
                [
                    "Voorletters",
                    "Tussenvoegsel",
                    "Achternaam",
                    "Functie",
                    "E-mail",
                    "Gemeentecode",
                    "Einde termijn",
                    "Aanhef",
                ],
                [
                    "HJ",
                    "Van den",
                    "Heuvel",
                    "Raadslid",
                    "h.vandenheuvel@example.nl",
                    1680,
                    date(2030, 3, 28),
                    "Geachte heer",
                ],
                [
                    "A.",
                    "",
                    "de Graaf",
                    "Wethouder Jeugd",
                    "a.degraaf@example.nl",
                    "0344",
                    None,
                    "Geachte mevrouw",
                ],
            ],
            "Oud": [["E-mail", "Functie", "Gemeente"], ["oud@example.nl", "Raadslid", "Utrecht"]],
        }
    )
    result = import_contacts(registry_engine, path)
    assert (result.inserted, result.kind, result.sheet, result.source) == (2, "xlsx", "Blad1", "lijst.xlsx")
    people = contacts_by_email(registry_engine)
    heuvel = people["h.vandenheuvel@example.nl"]
    assert (heuvel.voorletters, heuvel.tussenvoegsel, heuvel.term_end, heuvel.aanspreekvorm) == (
        "H.J.",
        "van den",
        date(2030, 3, 28),
        "heer",
    )
    assert municipality_code(registry_engine, heuvel) == "GM1680"
    graaf = people["a.degraaf@example.nl"]
    assert (graaf.tussenvoegsel, graaf.achternaam, graaf.sort_name, graaf.aanspreekvorm) == (
        "de",
        "Graaf",
        "graaf",
        "mevrouw",
    )
    other = import_contacts(registry_engine, path, sheet="Oud")
    assert (other.inserted, other.source) == (1, "lijst.xlsx [Oud]")


def test_supporters_need_no_municipality(registry_engine: Engine, write_csv: WriteCsv) -> None:
    path = write_csv([["Naam", "Functie", "E-mail"], ["Mw. L. de Jong", "Supporter", "l.dejong@example.nl"]])
    result = import_contacts(registry_engine, path)
    assert result.inserted == 1
    supporter = contacts_by_email(registry_engine)["l.dejong@example.nl"]
    assert (supporter.municipality_id, supporter.aanspreekvorm) == (None, "mevrouw")
    assert supporter.office_key == "l.dejong@example.nl||supporter"


def test_without_municipalities_the_import_asks_for_init(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(DatabaseError, match="no municipalities") as caught:
        import_contacts(engine, copy("raad-cp1252.csv", tmp_path))
    assert caught.value.hint == "run `outreach init` first"


def test_many_rows_in_many_batches(registry_engine: Engine, write_csv: WriteCsv) -> None:
    rows = [HEADER] + [
        ["Jan", "van der", f"Berg{n}", "Raadslid", "VVD", f"jan{n}@gm{n % 7}.example.nl", "Utrecht", ""]
        for n in range(2500)
    ]
    path = write_csv(rows, name="groot.csv")
    seen: list[tuple[int, float]] = []
    result = import_contacts(registry_engine, path, batch_size=400, progress=lambda n, f: seen.append((n, f)))
    assert result.inserted == 2500 and contact_count(registry_engine) == 2500
    assert seen[-1] == (2500, 1.0)
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)
    again = import_contacts(registry_engine, path, batch_size=400)
    assert again.unchanged == 2500


@pytest.mark.postgres
def test_postgresql(pg_url: str, tmp_path: Path) -> None:
    engine = open_database(pg_url)
    try:
        load_municipalities(engine)
        path = copy("raad-cp1252.csv", tmp_path)
        first = import_contacts(engine, path)
        assert first.inserted == 9
        key = email_key("zoe.bakker@utrecht.example.nl")
        with Session(engine) as session:
            session.add(Suppression(key_hash=email_hash(key), email_key=key, reason="opt-out", source="imap"))
            session.commit()
        again = import_contacts(engine, path)
        assert again.unchanged == 9
        assert again.suppressed == {"opt-out": 1}
        people = contacts_by_email(engine)
        assert people["a.vanderberg@utrecht.example.nl"].voornaam == "Anaïs"
        assert people["renee.devries@utrecht.example.nl"].imported_at.tzinfo is None
    finally:
        engine.dispose()


def test_both_stores_write_the_same_rows(
    registry_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write_xlsx: WriteXlsx
) -> None:
    """The JSON-lookup SQLite store and the plain Core store (other databases, old SQLite) agree."""
    from outreach.registry import importer, store

    path = write_xlsx(
        {
            "Blad1": [
                ["Naam", "Functie", "E-mail", "Gemeente", "Einde termijn", "Aanhef", "Fractie"],
                [
                    "dhr. H.J. van der Berg",
                    "Wethouder Jeugd",
                    "hj@example.nl",
                    "Utrecht",
                    date(2030, 3, 28),
                    "",
                    "VVD",
                ],
                ["Zoë Çelik", "Raadslid", "zoe@example.nl", "GM0363", None, "Geachte mevrouw", ""],
                ["", "Griffie", "griffie@example.nl", "Den Haag", None, "", ""],
            ]
        }
    )

    def snapshot() -> list[tuple[object, ...]]:
        with Session(registry_engine) as session:
            rows = session.exec(select(Contact).order_by(col(Contact.office_key))).all()
            return [
                tuple(
                    v
                    for k, v in sorted(c.model_dump().items())
                    if k not in ("id", "imported_at", "updated_at")
                )
                for c in rows
            ]

    first = import_contacts(registry_engine, path)
    assert first.inserted == 3
    assert (
        import_contacts(registry_engine, path).unchanged == 3
    )  # dates and NULLs compare equal after a round trip
    fast = snapshot()
    with Session(registry_engine) as session:
        for contact in session.exec(select(Contact)).all():
            session.delete(contact)
        session.commit()
    monkeypatch.setattr(
        importer,
        "contact_store",
        lambda conn, source, now: store.CoreStore(conn.dialect, source=source, now=now),
    )
    again = import_contacts(registry_engine, path)
    assert again.inserted == 3
    assert snapshot() == fast
    assert import_contacts(registry_engine, path).unchanged == 3
    with Session(registry_engine) as session:
        stored = session.exec(select(Contact).where(col(Contact.email_key) == "hj@example.nl")).one()
    assert (stored.term_end, stored.active, stored.imported_at.tzinfo) == (date(2030, 3, 28), True, None)


def test_rejects_file_that_cannot_be_written_stops_the_import(
    registry_engine: Engine, tmp_path: Path
) -> None:
    path = copy("griffies-utf8-bom.csv", tmp_path)
    with pytest.raises(ImportFileError, match=r"cannot write the rejects file") as caught:
        import_contacts(registry_engine, path, rejects_path=tmp_path / "nergens" / "fouten.csv")
    assert caught.value.hint == "nothing was imported; name another place with --rejects PATH"
    assert contact_count(registry_engine) == 0


def test_rejects_of_a_workbook_are_semicolon_separated_for_dutch_excel(
    registry_engine: Engine, write_xlsx: WriteXlsx
) -> None:
    path = write_xlsx(
        {"Blad1": [["E-mail", "Functie", "Gemeente"], ["x@example.nl", "Raadslid", "Atlantis"]]}
    )
    result = import_contacts(registry_engine, path)
    assert result.rejects_path is not None
    lines = result.rejects_path.read_text(encoding="utf-8-sig").splitlines()
    assert lines == [
        "row;reason;E-mail;Functie;Gemeente",
        "2;unknown municipality 'Atlantis';x@example.nl;Raadslid;Atlantis",
    ]
