"""The schema migrations, one named function each, in the order they are applied (``outreach.db.migrate``
applies and records them). A fresh database is created from the models and stamped with all of them."""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlalchemy import Connection, inspect
from sqlmodel import SQLModel

from outreach import models  # noqa: F401  (registers the tables on SQLModel.metadata)

Migration = Callable[[Connection], None]


def m001_initial(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn)


# m002: the delivery table as m002 leaves it on SQLite, where changing a constraint means rebuilding the
# table (https://sqlite.org/lang_altertable.html#otheralter). Written out rather than taken from the
# models, so that this migration does the same thing whatever later versions of the models say.
_M002_SQLITE_DELIVERY = """CREATE TABLE delivery_m002 (
	id INTEGER NOT NULL,
	campaign_id INTEGER NOT NULL,
	contact_id INTEGER,
	state VARCHAR NOT NULL,
	token VARCHAR,
	message_id VARCHAR,
	attempts INTEGER NOT NULL,
	next_attempt_at DATETIME,
	last_code INTEGER,
	last_error VARCHAR,
	skip_reason VARCHAR,
	claimed_by VARCHAR,
	lease_until DATETIME,
	sent_at DATETIME,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(contact_id) REFERENCES contact (id) ON DELETE SET NULL
)"""
_M002_COLUMNS = (
    "id, campaign_id, contact_id, state, token, message_id, attempts, next_attempt_at, last_code, "
    "last_error, skip_reason, claimed_by, lease_until, sent_at, created_at, updated_at"
)
_M002_INDEXES = (
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_delivery_contact_campaign ON delivery (contact_id, campaign_id)",
    "CREATE INDEX IF NOT EXISTS ix_delivery_due ON delivery (campaign_id, state, next_attempt_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_delivery_token ON delivery (token) WHERE token IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS uq_delivery_message_id ON delivery (message_id) "
    "WHERE message_id IS NOT NULL",
)


def m002_delivery_keys(conn: Connection) -> None:
    """Less work per planned delivery (issue 6: planning a million took 36 s on PostgreSQL).

    - ``UNIQUE (campaign_id, contact_id)`` and the index on ``contact_id`` become one unique index on
      ``(contact_id, campaign_id)``: planning's ``ON CONFLICT`` uses it as before, and erasure (``contacts
      forget``, ``ON DELETE SET NULL``) finds a person's letters through its first column.
    - ``token`` and ``message_id`` stay unique, in partial indexes ``WHERE ... IS NOT NULL``: both are
      NULL until the first claim, and NULLs were never compared for uniqueness, so the guarantee is the
      same while a planned row no longer adds an entry to either index.
    - No foreign key on ``campaign_id``: PostgreSQL checked it with a query per inserted row (4-5 s of
      about 20 for a million). Planning is the only writer of the column and reads the id from the
      campaign row in the same transaction; campaigns are never deleted, and their approvals keep a
      foreign key to them.
    """
    if conn.dialect.name == "sqlite":
        # The documented procedure for other kinds of table schema changes; foreign keys are off for it
        # (see migrate), so dropping the old table does not touch the events that point at deliveries.
        conn.exec_driver_sql(_M002_SQLITE_DELIVERY)
        conn.exec_driver_sql(
            f"INSERT INTO delivery_m002 ({_M002_COLUMNS}) SELECT {_M002_COLUMNS} FROM delivery"
        )
        conn.exec_driver_sql("DROP TABLE delivery")
        conn.exec_driver_sql("ALTER TABLE delivery_m002 RENAME TO delivery")
    else:
        for statement in (
            "ALTER TABLE delivery DROP CONSTRAINT IF EXISTS uq_delivery_campaign_contact",
            "ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_token_key",
            "ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_message_id_key",
            "DROP INDEX IF EXISTS ix_delivery_contact_id",
            "ALTER TABLE delivery DROP CONSTRAINT IF EXISTS delivery_campaign_id_fkey",
        ):
            conn.exec_driver_sql(statement)
    for statement in _M002_INDEXES:
        conn.exec_driver_sql(statement)


def m003_griffie_index(conn: Connection) -> None:
    """A partial index on the griffie rows of ``contact`` (issue 4).

    Composing a batch of letters looks up each municipality's griffie (the copy address). Without an
    index on ``role`` that read every contact for every batch of 200 letters: 80-115 ms a batch with
    100,000 contacts (against 11-26 ms with 10,000), which made the composer the bottleneck of a large
    campaign and would have made a million supporters impossible. Only griffie rows enter the index, so
    an import pays nothing for the others.
    """
    conn.exec_driver_sql(
        "CREATE INDEX IF NOT EXISTS ix_contact_griffie ON contact (municipality_id, id) "
        "WHERE role = 'griffie'"
    )


_M006_NULLABLE = ("email", "email_normalized", "email_key", "email_hash", "office_key")
_M006_CONTACT_COLUMNS = (
    ("register_id", "VARCHAR"),
    ("register_email", "VARCHAR"),
    ("term_start", "DATE"),
    ("waarnemend", "BOOLEAN NOT NULL DEFAULT {false}"),
    ("locoburgemeester", "BOOLEAN NOT NULL DEFAULT {false}"),
    ("fractievoorzitter", "BOOLEAN NOT NULL DEFAULT {false}"),
)
_M006_MUNICIPALITY_COLUMNS = ("postal_address_line", "postal_code", "postal_city")


def m006_register(conn: Connection) -> None:
    """Contacts from the government register (issue 13).

    - The e-mail columns and ``office_key`` become nullable: an office holder the register lists without
      an address is a contact too, identified by ``register_id`` (unique where set).
    - ``register_email`` (the register's last address: a re-sync tells a register change from an address
      staff imported by hand), ``term_start``, ``waarnemend`` and the marks ``locoburgemeester`` and
      ``fractievoorzitter``.
    - The municipality's postal address from the register, for the address block of a paper letter.
    """
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        # SQLite cannot drop a NOT NULL: the table is rebuilt (https://sqlite.org/lang_altertable.html
        # #otheralter) from its own CREATE statement with only those five constraints removed, so
        # columns that other migrations added survive whatever their order.
        create = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'contact'"
        ).scalar_one()
        indexes = list(
            conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contact' "
                "AND sql IS NOT NULL"
            ).scalars()
        )
        columns = ", ".join(str(row[1]) for row in conn.exec_driver_sql("PRAGMA table_info(contact)").all())
        for name in _M006_NULLABLE:
            create = re.sub(rf"(\b{name}\s+VARCHAR)\s+NOT NULL", r"\1", create, count=1)
        create = re.sub(r"^CREATE TABLE\s+\"?contact\"?", "CREATE TABLE contact_m006", create, count=1)
        conn.exec_driver_sql(create)
        conn.exec_driver_sql(f"INSERT INTO contact_m006 ({columns}) SELECT {columns} FROM contact")
        conn.exec_driver_sql("DROP TABLE contact")
        conn.exec_driver_sql("ALTER TABLE contact_m006 RENAME TO contact")
        for statement in indexes:
            conn.exec_driver_sql(statement)
    else:
        for name in _M006_NULLABLE:
            conn.exec_driver_sql(f"ALTER TABLE contact ALTER COLUMN {name} DROP NOT NULL")
    false = "0" if sqlite else "false"
    for name, kind in _M006_CONTACT_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE contact ADD COLUMN {name} {kind.format(false=false)}")
    conn.exec_driver_sql(
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_contact_register_id ON contact (register_id) "
        "WHERE register_id IS NOT NULL"
    )
    for name in _M006_MUNICIPALITY_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE municipality ADD COLUMN {name} VARCHAR")


def m007_campaign_kenmerk(conn: Connection) -> None:
    """The campaign's kenmerk (issue 14): ``HVK/2026/0003``, fixed once, so that a letter's reference
    never changes with a later edit of campaign.toml; a delivery's kenmerk is it plus the contact
    number, and the tracker finds the delivery back from it."""
    columns = {c["name"] for c in inspect(conn).get_columns("campaign")}
    if "kenmerk" not in columns:
        conn.exec_driver_sql("ALTER TABLE campaign ADD COLUMN kenmerk VARCHAR")
    conn.exec_driver_sql("CREATE UNIQUE INDEX IF NOT EXISTS ix_campaign_kenmerk ON campaign (kenmerk)")


def m008_review_decisions(conn: Connection) -> None:
    """The approval table becomes the history of review decisions (issue 16): approvals and rejections,
    the reviewer's comment or reason, and the text files as they were decided on (for a diff later).
    Existing rows are approvals, without texts."""
    for statement in (
        "ALTER TABLE approval ADD COLUMN decision VARCHAR NOT NULL DEFAULT 'approved'",
        "ALTER TABLE approval ADD COLUMN comment VARCHAR",
        "ALTER TABLE approval ADD COLUMN texts VARCHAR",
    ):
        conn.exec_driver_sql(statement)


def m004_event_content_hash(conn: Connection) -> None:
    """``event.content_hash`` (issue 11, item 23): after a folder's UIDVALIDITY changes, `inbox sync`
    reads it again from the start and skips what it recorded before by Message-ID; a message without
    one (many DSNs and some replies) was recorded twice. The hash of its normalised headers and body
    identifies it instead (outreach.tracking.imap_sync.content_fingerprint), through this index."""
    conn.exec_driver_sql("ALTER TABLE event ADD COLUMN content_hash VARCHAR")
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_event_content_hash ON event (content_hash)")


# Append only. Never rename or remove an entry: names are recorded in databases in the field.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("m001_initial", m001_initial),
    ("m002_delivery_keys", m002_delivery_keys),
    ("m003_griffie_index", m003_griffie_index),
    ("m004_event_content_hash", m004_event_content_hash),
    ("m006_register", m006_register),
    ("m007_campaign_kenmerk", m007_campaign_kenmerk),
    ("m008_review_decisions", m008_review_decisions),
]
