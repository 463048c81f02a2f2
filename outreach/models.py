"""All tables. Times are naive UTC (``utcnow()``), the same on SQLite and PostgreSQL.

Enumerations are ``StrEnum`` in Python and plain strings in the database, so a new role or state never
needs a database type change (PostgreSQL ENUM types cannot drop a value).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum

from pydantic import NaiveDatetime
from sqlalchemy import Index, false, text
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Naive UTC now: what every timestamp column holds (NaiveDatetime fields: SQLModel >= 0.0.50 would
    otherwise map ``datetime`` to an aware UTC type that refuses naive values)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Role(StrEnum):
    RAADSLID = "raadslid"
    WETHOUDER = "wethouder"
    BURGEMEESTER = "burgemeester"
    LOCO_BURGEMEESTER = "loco-burgemeester"
    GRIFFIER = "griffier"
    GRIFFIE = "griffie"  # the clerk office's shared mailbox: may have no person's name
    BURGERRAADSLID = "burgerraadslid"
    COMMISSIELID = "commissielid"
    FRACTIEASSISTENT = "fractieassistent"
    SECRETARIS = "gemeentesecretaris"
    SUPPORTER = "supporter"  # a private supporter, no office


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"  # transient failure; retried after next_attempt_at
    FAILED = "failed"  # permanent: 5xx or invalid address
    SKIPPED = "skipped"  # suppressed / opted out / invalid: skip_reason says why
    UNKNOWN = "unknown"  # the connection died after the body was handed over: never resent automatically
    HELD = "held"  # could not be composed (template vs. this contact's data): planned again after a change
    PRINTED = "printed"  # delivered on paper (`outreach print`): never sent by e-mail as well


class EventKind(StrEnum):
    REPLY = "reply"
    AUTO_REPLY = "auto-reply"
    BOUNCE = "bounce"
    OPT_IN = "opt-in"
    OPT_OUT = "opt-out"
    NOTE = "note"
    UNMATCHED = "unmatched"  # an inbound message nothing could be matched to


class Municipality(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    cbs_code: str = Field(unique=True, max_length=6)  # "GM0363"
    name: str  # official CBS spelling: "'s-Gravenhage", "Bergen (NH.)"
    province_code: str  # "PV27"
    province: str  # CBS 2026 spelling: "Fryslân"
    aliases: str = ""  # other names, "|"-separated: "Den Haag"
    # The postal address the government register gives (its Postadres), for the address block of a paper
    # letter: "Postbus 100", "9990 AA", "VOORBEELDSTAD" (migration m006). None until a register import.
    postal_address_line: str | None = None
    postal_code: str | None = None
    postal_city: str | None = None


class Contact(SQLModel, table=True):
    """One person (or the griffie mailbox) in one office of one municipality.

    A contact from a council list is identified by ``office_key`` (address, municipality, role); one
    from the government register by ``register_id`` (the register's id of the office holder), and may
    have no e-mail address at all: such a contact is in the registry, counted and reported, and planning
    skips it with the reason "no e-mail address" (migration m006).
    """

    __table_args__ = (
        Index("ix_contact_muni_sort", "municipality_id", "sort_name"),
        # Each municipality's griffie (the copy address of a letter) without reading every contact: a
        # partial index holds only the griffie rows (migration m003).
        Index(
            "ix_contact_griffie",
            "municipality_id",
            "id",
            sqlite_where=text("role = 'griffie'"),
            postgresql_where=text("role = 'griffie'"),
        ),
        # Unique where set: council-list rows have none and add nothing to the index (migration m006).
        Index(
            "uq_contact_register_id",
            "register_id",
            unique=True,
            sqlite_where=text("register_id IS NOT NULL"),
            postgresql_where=text("register_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    # No single-column indexes on municipality_id (ix_contact_muni_sort leads with it), role or party
    # (a dozen values each): every index costs the import of a 100,000-row list about 8% (bench/import).
    municipality_id: int | None = Field(default=None, foreign_key="municipality.id")
    role: str  # a Role value
    portfolio: str | None = None  # "Jeugd, Onderwijs" for a wethouder
    party: str | None = None  # fractie
    title: str | None = None  # "dr.", "mr."
    voorletters: str | None = None  # "H.J."
    voornaam: str | None = None
    tussenvoegsel: str | None = None  # "van der"
    achternaam: str | None = None
    aanspreekvorm: str | None = None  # "mevrouw" | "heer" | None: given by a source, never guessed
    # The four e-mail columns are all set or all None (a register office holder without an address).
    email: str | None = None  # as given in the source
    email_normalized: str | None = None  # email-validator's normalised form, used to send
    email_key: str | None = Field(default=None, index=True)  # case-folded: matching, dedupe, suppression
    email_hash: str | None = Field(default=None, index=True)  # sha256(email_key): hashed suppressions
    # "email_key|GM0363|role": the upsert identity of a council-list row; None for a register row
    # without an address (register_id identifies it).
    office_key: str | None = Field(default=None, unique=True)
    sort_name: str = ""  # achternaam without tussenvoegsel, case-folded: "van der Berg" sorts under B
    source: str  # provenance: file name or --source text
    imported_at: NaiveDatetime = Field(default_factory=utcnow)
    updated_at: NaiveDatetime = Field(default_factory=utcnow)
    term_end: date | None = None
    active: bool = True
    opted_in_at: NaiveDatetime | None = None  # asked to receive the charity's mailings
    opt_in_topics: str | None = None  # what they asked for, in their words or a topic list
    # From the government register (migration m006); None/False for council-list rows.
    register_id: str | None = None  # the register's systeemId of this office holder's entry
    register_email: str | None = None  # the address the register gave last time: tells who changed it
    term_start: date | None = None
    waarnemend: bool = Field(default=False, sa_column_kwargs={"server_default": false()})  # acting
    # Marks on this office, never a contact of their own: the same person's other register entries.
    locoburgemeester: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    fractievoorzitter: bool = Field(default=False, sa_column_kwargs={"server_default": false()})


class Suppression(SQLModel, table=True):
    """An address that must not be written to: opt-out, hard bounce, erasure."""

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(unique=True)  # sha256(email_key): survives erasure of the person
    email_key: str | None = Field(default=None, index=True)  # readable; cleared by `contacts forget`
    reason: str  # "opt-out", "hard-bounce", "forgotten", "manual"
    source: str  # "manual", "imap", "import", ...
    created_at: NaiveDatetime = Field(default_factory=utcnow)


class Campaign(SQLModel, table=True):
    __table_args__ = (Index("ix_campaign_kenmerk", "kenmerk", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True)  # the folder name under templates/letters/
    name: str
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    # "HVK/2026/0003": the fixed first part of the kenmerk of each of this campaign's letters (the
    # contact number follows), set once when the campaign row is made (outreach.letters.kenmerk, m007).
    kenmerk: str | None = None


class Decision(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"


class Approval(SQLModel, table=True):
    """The append-only history of review decisions: each row an approval or (since m008) a rejection.

    ``approved_by`` and ``approved_at`` say who decided and when, whatever the decision.
    """

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    approved_by: str
    approved_at: NaiveDatetime = Field(default_factory=utcnow)
    fingerprint: str  # sha256 over the manifest
    manifest: str  # JSON {relative path: sha256}: tells which file changed since
    decision: str = Decision.APPROVED.value  # a Decision value (m008)
    comment: str | None = None  # optional with an approval, the reason of a rejection (m008)
    # JSON {relative path: text} of the folder's text files as decided on (campaign.toml, templates), so
    # that a later review can show a diff of what changed since (m008; NULL for older approvals).
    texts: str | None = None


class Delivery(SQLModel, table=True):
    """One letter of one campaign to one contact; its state machine is in docs/architecture.md."""

    # Every index and foreign key here is paid for by every planned delivery (a million in one INSERT,
    # docs/performance.md "Scale"), so since migration m002 a planned row costs three index entries: the
    # primary key; (contact_id, campaign_id), which makes planning idempotent and, contact first, also
    # finds a person's letters (erasure, ON DELETE SET NULL); and ix_delivery_due for claims. token and
    # message_id are unique where set: they stay NULL until the first claim, so planned rows add nothing
    # to those two indexes. campaign_id has no foreign key (PostgreSQL checked it row by row): planning
    # is the only writer and takes the id from the campaign row it has just read in the same
    # transaction; campaigns are never deleted, and approvals, which sending requires, still reference
    # them with a foreign key.
    __table_args__ = (
        Index("uq_delivery_contact_campaign", "contact_id", "campaign_id", unique=True),
        Index("ix_delivery_due", "campaign_id", "state", "next_attempt_at"),
        Index(
            "uq_delivery_token",
            "token",
            unique=True,
            sqlite_where=text("token IS NOT NULL"),
            postgresql_where=text("token IS NOT NULL"),
        ),
        Index(
            "uq_delivery_message_id",
            "message_id",
            unique=True,
            sqlite_where=text("message_id IS NOT NULL"),
            postgresql_where=text("message_id IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int  # campaign.id (no foreign key: see above)
    contact_id: int | None = Field(default=None, foreign_key="contact.id", ondelete="SET NULL")
    state: str = DeliveryState.PENDING.value
    # outreach.letters.ids.new_token(), set when first claimed; the Message-ID "<token@campaign-domain>"
    # is built from it and kept across retries.
    token: str | None = None
    message_id: str | None = None
    attempts: int = 0
    next_attempt_at: NaiveDatetime | None = None
    last_code: int | None = None  # SMTP reply code of the last attempt
    last_error: str | None = None
    skip_reason: str | None = None
    claimed_by: str | None = None  # worker id holding the lease
    lease_until: NaiveDatetime | None = None
    sent_at: NaiveDatetime | None = None
    created_at: NaiveDatetime = Field(default_factory=utcnow)
    updated_at: NaiveDatetime = Field(default_factory=utcnow)


class Event(SQLModel, table=True):
    """Something that came back: a reply, bounce, opt-in/out, or a note by staff."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(index=True)  # an EventKind value
    contact_id: int | None = Field(default=None, foreign_key="contact.id", index=True, ondelete="SET NULL")
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", index=True)
    campaign_id: int | None = Field(default=None, foreign_key="campaign.id", index=True)
    occurred_at: NaiveDatetime = Field(default_factory=utcnow)
    recorded_at: NaiveDatetime = Field(default_factory=utcnow)
    source: str  # "imap", "manual", "import"
    bounce_type: str | None = None  # "hard" | "soft"
    status_code: str | None = None  # enhanced status "5.1.1" or SMTP code
    text: str | None = None  # a short summary; never a whole letter
    reference: str | None = Field(default=None, index=True)  # inbound Message-ID (sync dedupes on it)
    dedupe_key: str | None = Field(default=None, unique=True)  # "imap:<mailbox>:<uidvalidity>:<uid>"
    # sha256 of an inbound message's normalised headers and body (m004): how sync knows a message without
    # a Message-ID again, after a UIDVALIDITY change or in another folder.
    content_hash: str | None = Field(default=None, index=True)


class InboxCursor(SQLModel, table=True):
    """How far `inbox sync` got in one IMAP folder."""

    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(unique=True)  # "user@host/INBOX"
    uidvalidity: int
    last_uid: int = 0
    synced_at: NaiveDatetime = Field(default_factory=utcnow)
