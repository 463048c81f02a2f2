"""What the public pages read and record: the letter behind a token, opt-outs and opt-ins.

The events are the tracker's own (outreach.tracking.events): kind ``opt-out``/``opt-in``, source ``web``,
on the letter's delivery, so `outreach report`, `contacts export` and `contacts forget` treat them like
any other. Every POST's writes happen in one transaction; a ``dedupe_key`` per letter and choice makes a
repeated POST (a double click, a mail client that retries) change nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Engine, and_, create_engine, select, update

from outreach.db import dialect_insert
from outreach.letters.ids import is_token
from outreach.models import DeliveryState, EventKind, utcnow
from outreach.registry.keys import email_hash
from outreach.tracking.events import (
    CAMPAIGN,
    CONTACT,
    DELIVERY,
    EVENT,
    SKIP_REASONS,
    SUPPRESSION,
    insert_event,
)

Scope = Literal["all", "campaign"]
SOURCE = "web"
# Delivery.skip_reason when someone opts out of one campaign only: its other letters to them stop.
SKIP_CAMPAIGN = "opted out of this campaign"
# A held letter would be planned again (pending) after the next approval: it is skipped too, since no
# suppression will stop it then.
CAMPAIGN_UNSENT = [s.value for s in (DeliveryState.PENDING, DeliveryState.DEFERRED, DeliveryState.HELD)]
# What the tracker's skip_unsent stops for an opt-out of everything (planning skips held letters again).
UNSENT = [DeliveryState.PENDING.value, DeliveryState.DEFERRED.value]


@dataclass(frozen=True)
class Letter:
    """The letter a token belongs to, as the pages need it."""

    delivery_id: int
    campaign_id: int
    campaign_slug: str
    campaign_name: str
    contact_id: int | None  # None: the person was erased (`contacts forget`)
    email_key: str | None
    suppression: str | None  # reason the address is suppressed ("opt-out", "hard-bounce", ...), or None
    campaign_opt_out: bool  # opted out of this campaign only, on the web
    opted_in_at: datetime | None


@dataclass(frozen=True)
class OptOutResult:
    recorded: bool  # False: this choice was recorded before (a repeated POST)
    suppressed: bool  # a new suppression of the address


@dataclass(frozen=True)
class OptInResult:
    recorded: bool
    lifted: bool  # an earlier opt-out was lifted (the person ticked that)
    still_suppressed: str | None  # the suppression that stays, if any


def reading_engine(engine: Engine) -> Engine:
    """For the GET pages: on SQLite a plain connection that reads without outreach's BEGIN IMMEDIATE (the
    write lock), so a page view never waits for a running send's commits."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    return create_engine(engine.url, connect_args={"check_same_thread": False, "timeout": 30})


def dedupe_key(kind: str, delivery_id: int, choice: str) -> str:
    return f"web:{kind}:{delivery_id}:{choice}"


def _letters_select() -> Any:
    return select(
        DELIVERY.c.id,
        DELIVERY.c.token,
        DELIVERY.c.campaign_id,
        DELIVERY.c.contact_id,
        CAMPAIGN.c.slug,
        CAMPAIGN.c.name,
        CONTACT.c.email_key,
        CONTACT.c.opted_in_at,
    ).select_from(
        DELIVERY.join(CAMPAIGN, CAMPAIGN.c.id == DELIVERY.c.campaign_id).outerjoin(
            CONTACT, CONTACT.c.id == DELIVERY.c.contact_id
        )
    )


def _letter(row: Any, suppression: str | None = None, campaign_opt_out: bool = False) -> Letter:
    return Letter(
        delivery_id=row.id,
        campaign_id=row.campaign_id,
        campaign_slug=row.slug,
        campaign_name=row.name,
        contact_id=row.contact_id,
        email_key=row.email_key,
        suppression=suppression,
        campaign_opt_out=campaign_opt_out,
        opted_in_at=row.opted_in_at,
    )


def wanted_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens worth looking up: lowercased, well-formed, each once."""
    return sorted({t.lower() for t in tokens if is_token(t.lower())})


def find_letters(conn: Connection, tokens: Sequence[str]) -> dict[str, Letter]:
    """The letters behind these tokens (lowercased), in one query; without suppression or earlier choice."""
    wanted = wanted_tokens(tokens)
    if not wanted:
        return {}
    rows = conn.execute(_letters_select().where(DELIVERY.c.token.in_(wanted)))
    return {row.token: _letter(row) for row in rows}


def find_letter(conn: Connection, token: str) -> Letter | None:
    """The letter behind ``token`` with the address's suppression and an earlier "this campaign only";
    None for anything that is not one of our tokens."""
    token = token.lower()
    if not is_token(token):
        return None
    row = conn.execute(_letters_select().where(DELIVERY.c.token == token)).first()
    if row is None:
        return None
    suppression = None
    campaign_opt_out = False
    if row.email_key is not None:
        suppression = conn.execute(
            select(SUPPRESSION.c.reason).where(SUPPRESSION.c.key_hash == email_hash(row.email_key))
        ).scalar()
        campaign_opt_out = (
            conn.execute(
                select(EVENT.c.id).where(EVENT.c.dedupe_key == dedupe_key("opt-out", row.id, "campaign"))
            ).first()
            is not None
        )
    return _letter(row, suppression, campaign_opt_out)


def load_letter(engine: Engine, token: str) -> Letter | None:
    with engine.connect() as conn:
        return find_letter(conn, token)


def _event(letter: Letter, kind: EventKind, choice: str, text: str, now: datetime) -> dict[str, Any]:
    return {
        "kind": kind.value,
        "contact_id": letter.contact_id,
        "delivery_id": letter.delivery_id,
        "campaign_id": letter.campaign_id,
        "occurred_at": now,
        "recorded_at": now,
        "source": SOURCE,
        "text": text,
        "dedupe_key": dedupe_key(kind.value, letter.delivery_id, choice),
    }


@dataclass(frozen=True)
class OptOutRequest:
    token: str
    scope: Scope
    one_click: bool = False


class BatchStatements(Protocol):
    """The four statements of a batch of opt-outs, in the caller's transaction: ``CoreStatements`` on any
    database, ``sqlite_batch.DriverStatements`` on SQLite (the same SQL, by the driver)."""

    def letters(self, tokens: Sequence[str]) -> dict[str, Letter]:
        """The letters behind these tokens (lowercased, checked), without suppression or earlier choice."""

    def add_events(self, rows: list[dict[str, Any]]) -> set[str]:
        """INSERT the events, a choice recorded before (its dedupe_key) skipped: the dedupe_keys added."""

    def add_suppressions(self, rows: list[dict[str, Any]]) -> set[str]:
        """INSERT the suppressions, an address suppressed before skipped: the email_keys added."""

    def skip(
        self, keys: list[str], campaign_id: int | None, states: list[str], reason: str, now: datetime
    ) -> None:
        """Letters to these addresses (in this campaign) in these states will not go out."""


class CoreStatements:
    """``BatchStatements`` as SQLAlchemy Core statements on a connection (PostgreSQL and SQLite)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def letters(self, tokens: Sequence[str]) -> dict[str, Letter]:
        return find_letters(self.conn, tokens)

    def add_events(self, rows: list[dict[str, Any]]) -> set[str]:
        return {str(key) for key in self.conn.execute(_inserts(self.conn.engine)[0], rows).scalars()}

    def add_suppressions(self, rows: list[dict[str, Any]]) -> set[str]:
        return {str(key) for key in self.conn.execute(_inserts(self.conn.engine)[1], rows).scalars()}

    def skip(
        self, keys: list[str], campaign_id: int | None, states: list[str], reason: str, now: datetime
    ) -> None:
        contacts = select(CONTACT.c.id).where(CONTACT.c.email_key.in_(keys)).scalar_subquery()
        stmt = update(DELIVERY).where(DELIVERY.c.contact_id.in_(contacts)).where(DELIVERY.c.state.in_(states))
        if campaign_id is not None:
            stmt = stmt.where(DELIVERY.c.campaign_id == campaign_id)
        self.conn.execute(
            stmt.values(
                state=DeliveryState.SKIPPED.value, skip_reason=reason, next_attempt_at=None, updated_at=now
            )
        )


def opt_out_many(
    db: BatchStatements, requests: Sequence[OptOutRequest], *, now: datetime | None = None
) -> list[tuple[Letter, OptOutResult] | None]:
    """Record a batch of opt-outs in the caller's transaction, with a handful of statements whatever its
    size (the writer's group commit): one SELECT of the letters, one INSERT of the events, one of the
    suppressions, one UPDATE of the letters not yet sent. Per request: None for an unknown token, else
    the letter and what was done. ``all`` suppresses the address and skips its unsent letters of every
    campaign, as the tracker does; ``campaign`` skips that campaign's unsent letters only. An erased
    person has nothing left to opt out of: nothing is recorded. A choice recorded before (a repeated
    POST, or the same one twice in the batch) is not recorded again."""
    now = now or utcnow()
    letters = db.letters([r.token for r in requests])
    events: dict[str, dict[str, Any]] = {}
    meta: dict[str, tuple[str, Scope]] = {}  # dedupe_key -> (address, scope)
    for request in requests:
        letter = letters.get(request.token.lower())
        if letter is None or letter.email_key is None:
            continue
        how = "one-click (List-Unsubscribe-Post)" if request.one_click else "webpagina"
        what = "alle post" if request.scope == "all" else f"alleen campagne {letter.campaign_slug}"
        values = _event(letter, EventKind.OPT_OUT, request.scope, f"afgemeld via {how}: {what}", now)
        events.setdefault(values["dedupe_key"], values)
        meta[values["dedupe_key"]] = (letter.email_key, request.scope)
    recorded = db.add_events(list(events.values())) if events else set()
    everything = sorted({address for k, (address, scope) in meta.items() if k in recorded and scope == "all"})
    suppressed: set[str] = set()
    if everything:
        rows = [
            {
                "key_hash": email_hash(key),
                "email_key": key,
                "reason": "opt-out",
                "source": SOURCE,
                "created_at": now,
            }
            for key in everything
        ]
        suppressed = db.add_suppressions(rows)
        db.skip(everything, None, UNSENT, SKIP_REASONS["opt-out"], now)
    for key, (address, scope) in meta.items():
        if key in recorded and scope == "campaign":
            db.skip([address], events[key]["campaign_id"], CAMPAIGN_UNSENT, SKIP_CAMPAIGN, now)

    outcomes: list[tuple[Letter, OptOutResult] | None] = []
    first_of: set[str] = set()
    for request in requests:
        letter = letters.get(request.token.lower())
        if letter is None:
            outcomes.append(None)
            continue
        key = dedupe_key(EventKind.OPT_OUT.value, letter.delivery_id, request.scope)
        new = key in recorded and key not in first_of
        first_of.add(key)
        fresh = new and request.scope == "all" and letter.email_key in suppressed
        outcomes.append((letter, OptOutResult(recorded=new, suppressed=fresh)))
    return outcomes


# The batch's INSERTs take their rows as parameters (SQLAlchemy's "insertmanyvalues": one multi-row
# statement per batch, compiled once), not as .values(rows), which compiled anew for every batch: 90 % of
# the writer thread's CPU (cProfile under bench/web_bench.py's load). Built once per dialect.
_INSERTS: dict[str, tuple[Any, Any]] = {}


def _inserts(engine: Engine) -> tuple[Any, Any]:
    """(events, suppressions): INSERT ... ON CONFLICT DO NOTHING RETURNING the key of each row added."""
    name = engine.dialect.name
    if name not in _INSERTS:
        insert = dialect_insert(engine)
        _INSERTS[name] = (
            insert(EVENT).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(EVENT.c.dedupe_key),
            insert(SUPPRESSION)
            .on_conflict_do_nothing(index_elements=["key_hash"])
            .returning(SUPPRESSION.c.email_key),
        )
    return _INSERTS[name]


def record_opt_in(
    engine: Engine,
    token: str,
    *,
    text_version: str,
    topics: str,
    lift_opt_out: bool,
    now: datetime | None = None,
) -> OptInResult | None:
    """Record an opt-in with its proof: the time, the version of the text the person was shown, the
    campaign (on the event). An earlier opt-out is lifted only when ``lift_opt_out`` (the person ticked
    it); a hard bounce or an erasure never. None for an unknown token or an erased person."""
    now = now or utcnow()
    with engine.begin() as conn:
        letter = find_letter(conn, token)
        if letter is None or letter.email_key is None:
            return None
        key = letter.email_key
        if letter.suppression == "opt-out" and not lift_opt_out:
            # Their opt-out stands until they tick that it should not: nothing is recorded.
            return OptInResult(recorded=False, lifted=False, still_suppressed=letter.suppression)
        lift = letter.suppression == "opt-out"
        text = f"aangemeld via webpagina; tekst {text_version}; campagne {letter.campaign_slug}"
        if lift:
            text += "; eerdere afmelding opgeheven"
        choice = f"{text_version}:{'lift' if lift else 'keep'}"
        values = _event(letter, EventKind.OPT_IN, choice, text, now) | {
            "reference": f"optin-text:{text_version}"
        }
        event_id = insert_event(conn, values)
        if event_id is None:
            return OptInResult(recorded=False, lifted=False, still_suppressed=letter.suppression)
        conn.execute(
            update(CONTACT)
            .where(CONTACT.c.email_key == key)
            .values(opted_in_at=now, opt_in_topics=topics, updated_at=now)
        )
        if lift:
            conn.execute(
                SUPPRESSION.delete().where(
                    and_(SUPPRESSION.c.key_hash == email_hash(key), SUPPRESSION.c.reason == "opt-out")
                )
            )
        return OptInResult(recorded=True, lifted=lift, still_suppressed=None if lift else letter.suppression)


def mask_email(address: str) -> str:
    """``j.jansen@utrecht.nl`` → ``j.***@utrecht.nl``: enough for the person to recognise, too little
    for anyone who sees the page over their shoulder or finds the link."""
    local, _, domain = address.rpartition("@")
    if not local:
        return "***"
    keep = local[0] + (local[1] if len(local) > 2 and local[1] in ".-_" else "")
    return f"{keep}***@{domain}"
