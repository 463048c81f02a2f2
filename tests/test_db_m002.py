"""Migration m002 (delivery keys) on databases made at m001 that hold deliveries and events."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError

from outreach.db import open_database
from outreach.errors import DatabaseError
from outreach.migrations import MIGRATIONS
from outreach.models import Contact
from outreach.sending.plan import plan_deliveries
from outreach.tracking.privacy import forget_person
from tests.test_db import _schema

#: The schema as m001 created it on SQLite (sqlite3's dump of a fresh database then), kept as it was.
M001_SQLITE = Path(__file__).parent / "data" / "schema" / "sqlite-m001.sql"

T = "2026-11-20 10:00:00"
DELIVERY_COLUMNS = [
    *("id", "campaign_id", "contact_id", "state", "token", "message_id", "attempts", "next_attempt_at"),
    *("last_code", "last_error", "skip_reason", "claimed_by", "lease_until", "sent_at", "created_at"),
    "updated_at",
]
INSERT_DELIVERY = text(
    f"INSERT INTO delivery ({', '.join(DELIVERY_COLUMNS)}) "
    f"VALUES ({', '.join(':' + column for column in DELIVERY_COLUMNS)})"
)


def _delivery(
    id: int, campaign: int, contact: int | None, state: str, token: str | None = None, **extra: Any
) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(DELIVERY_COLUMNS)
    row.update(id=id, campaign_id=campaign, contact_id=contact, state=state, attempts=0)
    row.update(token=token, message_id=f"<{token}@x.nl>" if token else None, created_at=T, updated_at=T)
    row.update(extra)
    return row


def _contact(n: int) -> dict[str, Any]:
    email = f"p{n}@utrecht.nl"
    return {
        "id": n,
        "email": email,
        "hash": f"hash{n}",
        "office": f"{email}|GM0344|raadslid",
        "active": n != 3,
    }


# Three people in one municipality, the third no longer in office; two campaigns; deliveries in several
# states, with and without tokens, one already unlinked from its (erased) person; events pointing at
# deliveries.
ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "INSERT INTO municipality (id, cbs_code, name, province_code, province, aliases) "
        "VALUES (1, 'GM0344', 'Utrecht', 'PV26', 'Utrecht', '')",
        [{}],
    ),
    (
        "INSERT INTO contact (id, municipality_id, role, email, email_normalized, email_key, email_hash, "
        f"office_key, sort_name, source, imported_at, updated_at, active) VALUES (:id, 1, 'raadslid', "
        f":email, :email, :email, :hash, :office, :email, 'test', '{T}', '{T}', :active)",
        [_contact(n) for n in (1, 2, 3)],
    ),
    (
        f"INSERT INTO campaign (id, slug, name, created_at) VALUES (:id, :slug, :slug, '{T}')",
        [{"id": 1, "slug": "voorjaar"}, {"id": 2, "slug": "najaar"}],
    ),
    (
        INSERT_DELIVERY.text,
        [
            _delivery(1, 1, 1, "sent", "AAAAAAAAAAAAAAAA", attempts=1, last_code=250, sent_at=T),
            _delivery(2, 1, 2, "deferred", "BBBBBBBBBBBBBBBB", attempts=1, next_attempt_at=T, last_code=451),
            _delivery(3, 1, None, "sent", "CCCCCCCCCCCCCCCC", attempts=1, last_code=250, sent_at=T),
            _delivery(4, 2, 1, "pending"),
            _delivery(5, 2, 2, "pending"),
            _delivery(6, 2, 3, "skipped", skip_reason="no longer in office"),
        ],
    ),
    (
        "INSERT INTO event (id, kind, contact_id, delivery_id, campaign_id, occurred_at, recorded_at, "
        f"source) VALUES (:id, :kind, :contact, :delivery, 1, '{T}', '{T}', 'imap')",
        [
            {"id": 1, "kind": "reply", "contact": 1, "delivery": 1},
            {"id": 2, "kind": "bounce", "contact": None, "delivery": 3},
        ],
    ),
]


def _insert_rows(engine: Engine) -> None:
    with engine.begin() as conn:
        for statement, rows in ROWS:
            conn.execute(text(statement), rows)


def _rows(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    """The rows, without the columns later migrations add (m004: event.content_hash, NULL for them)."""
    added = {"event": {"content_hash"}}.get(table, set())
    with engine.connect() as conn:
        result = conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
        keep = [i for i, name in enumerate(result.keys()) if name not in added]
        return [tuple(row[i] for i in keep) for row in result]


def _campaign(slug: str) -> Any:
    return SimpleNamespace(slug=slug, name=slug)


def _upgraded_database_keeps_its_guarantees(engine: Engine) -> None:
    """What m002 must not change: uniqueness, idempotent planning, the contact's foreign key, erasure."""
    with engine.connect() as conn:
        names = list(conn.execute(text("SELECT name FROM schema_migration ORDER BY name")).scalars())
    assert names == [name for name, _ in MIGRATIONS]
    foreign_keys = inspect(engine).get_foreign_keys("delivery")
    assert [(fk["constrained_columns"], fk["referred_table"], fk["options"]) for fk in foreign_keys] == [
        (["contact_id"], "contact", {"ondelete": "SET NULL"})
    ]

    refused = [
        _delivery(10, 1, 1, "pending"),  # a second letter of campaign 1 to contact 1
        _delivery(10, 2, None, "sent", "AAAAAAAAAAAAAAAA"),  # another letter's token
        _delivery(10, 2, None, "sent", "DDDDDDDDDDDDDDDD", message_id="<AAAAAAAAAAAAAAAA@x.nl>"),
        _delivery(10, 1, 99, "pending"),  # a contact that does not exist
    ]
    for row in refused:
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(INSERT_DELIVERY, row)
    with engine.begin() as conn:  # any number of letters without a token yet, or without a person
        conn.execute(INSERT_DELIVERY, [_delivery(10, 2, None, "pending"), _delivery(11, 2, None, "pending")])
        conn.execute(text("DELETE FROM delivery WHERE id IN (10, 11)"))

    # Planning: campaign 1 has a letter for everyone in office already; a new campaign gets two, once.
    audience = select(Contact.id).where(Contact.active)  # type: ignore[call-overload]
    first = plan_deliveries(engine, _campaign("voorjaar"), audience=audience)
    again = plan_deliveries(engine, _campaign("voorjaar"), audience=audience)
    assert (first.created, again.created, again.total) == (0, 0, 3)
    third = plan_deliveries(engine, _campaign("zomer"), audience=audience)
    assert (third.created, plan_deliveries(engine, _campaign("zomer"), audience=audience).created) == (2, 0)

    # Erasure: the person's three letters stay, unlinked from them.
    assert forget_person(engine, "p1@utrecht.nl").letters == 3
    with engine.connect() as conn:
        linked = conn.execute(text("SELECT count(*) FROM delivery WHERE contact_id = 1")).scalar_one()
        kept = conn.execute(text("SELECT count(*) FROM delivery WHERE id IN (1, 4)")).scalar_one()
    assert (linked, kept) == (0, 2)


def test_sqlite_database_made_at_m001_with_deliveries_upgrades(tmp_path: Path) -> None:
    old = tmp_path / "m001.db"
    with sqlite3.connect(old) as conn:
        conn.executescript(M001_SQLITE.read_text(encoding="utf-8"))
    url = f"sqlite:///{old}"
    engine = open_database(url, upgrade=False)
    _insert_rows(engine)
    before = {table: _rows(engine, table) for table in ("delivery", "event")}
    engine.dispose()

    engine = open_database(url)
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    open_database(fresh).dispose()
    assert _schema(url) == _schema(fresh)
    assert {table: _rows(engine, table) for table in ("delivery", "event")} == before
    with engine.connect() as conn:
        # Foreign keys were off for the table rebuild only; the events still point at their deliveries.
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").first() is None
        # A person's letters (erasure) and a token (inbound mail) are found through an index.
        explain = "EXPLAIN QUERY PLAN SELECT id FROM delivery WHERE "
        assert "uq_delivery_contact_campaign" in str(conn.exec_driver_sql(explain + "contact_id = 1").all())
        assert "uq_delivery_token" in str(conn.exec_driver_sql(explain + "token IN ('A', 'B')").all())
    _upgraded_database_keeps_its_guarantees(engine)
    engine.dispose()


def test_sqlite_upgrade_with_a_broken_reference_changes_nothing(tmp_path: Path) -> None:
    old = tmp_path / "m001.db"
    with sqlite3.connect(old) as conn:  # foreign keys are off in a bare sqlite3 connection
        conn.executescript(M001_SQLITE.read_text(encoding="utf-8"))
        conn.execute(
            "INSERT INTO event (id, kind, delivery_id, occurred_at, recorded_at, source) "
            f"VALUES (7, 'note', 42, '{T}', '{T}', 'manual')"
        )
    url = f"sqlite:///{old}"
    with pytest.raises(DatabaseError, match="row 7 of table event refers to a row of delivery"):
        open_database(url)
    engine = open_database(url, upgrade=False)
    with engine.connect() as conn:
        names = list(conn.execute(text("SELECT name FROM schema_migration")).scalars())
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert names == ["m001_initial"]
    assert "ix_delivery_contact_id" in {i["name"] for i in inspect(engine).get_indexes("delivery")}
    engine.dispose()


# PostgreSQL at m001 as SQLAlchemy created it from the m001 models, with the constraint names PostgreSQL
# chose: made here from a fresh database by undoing m002.
M001_POSTGRES = [
    "DROP INDEX uq_delivery_contact_campaign",
    "DROP INDEX uq_delivery_token",
    "DROP INDEX uq_delivery_message_id",
    "ALTER TABLE delivery ADD CONSTRAINT uq_delivery_campaign_contact UNIQUE (campaign_id, contact_id)",
    "ALTER TABLE delivery ADD UNIQUE (token)",
    "ALTER TABLE delivery ADD UNIQUE (message_id)",
    "CREATE INDEX ix_delivery_contact_id ON delivery (contact_id)",
    "ALTER TABLE delivery ADD FOREIGN KEY (campaign_id) REFERENCES campaign (id)",
    "DELETE FROM schema_migration WHERE name = 'm002_delivery_keys'",
]


def _pg_delivery_indexes(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'delivery'"))
        return {str(name): str(definition).split(" USING ")[1] for name, definition in rows}


def test_postgres_database_made_at_m001_with_deliveries_upgrades(pg_url: str) -> None:
    engine = open_database(pg_url)
    expected = _pg_delivery_indexes(engine)
    with engine.begin() as conn:
        for statement in M001_POSTGRES:
            conn.execute(text(statement))
    _insert_rows(engine)
    with engine.begin() as conn:
        for table in ("municipality", "contact", "campaign", "delivery", "event"):
            conn.execute(text(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"))
    assert set(_pg_delivery_indexes(engine)) == {
        "delivery_pkey",
        "uq_delivery_campaign_contact",
        "delivery_token_key",
        "delivery_message_id_key",
        "ix_delivery_due",
        "ix_delivery_contact_id",
    }
    assert len(inspect(engine).get_foreign_keys("delivery")) == 2
    before = {table: _rows(engine, table) for table in ("delivery", "event")}
    engine.dispose()

    engine = open_database(pg_url)
    assert _pg_delivery_indexes(engine) == expected
    assert expected["uq_delivery_token"] == "btree (token) WHERE (token IS NOT NULL)"
    assert expected["uq_delivery_message_id"] == "btree (message_id) WHERE (message_id IS NOT NULL)"
    assert expected["uq_delivery_contact_campaign"] == "btree (contact_id, campaign_id)"
    assert not inspect(engine).get_unique_constraints("delivery")
    assert {table: _rows(engine, table) for table in ("delivery", "event")} == before
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        explain = "EXPLAIN SELECT id FROM delivery WHERE "
        plan = conn.execute(text(explain + "contact_id = 1")).scalars().all()
        assert "uq_delivery_contact_campaign" in str(plan)
        plan = conn.execute(text(explain + "token IN ('A', 'B')")).scalars().all()
        assert "uq_delivery_token" in str(plan)
    _upgraded_database_keeps_its_guarantees(engine)
    engine.dispose()
