"""Events on deliveries and contacts, and what they set in motion: suppressions and failed deliveries.

Every write of one response (the event, the suppression, the skipped deliveries, the failed delivery)
happens in one transaction, so a crash never leaves an opt-out recorded but not honoured.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlmodel import SQLModel

from outreach.db import dialect_insert
from outreach.errors import NotFoundError, UsageError
from outreach.letters.kenmerk import find_kenmerk
from outreach.models import DeliveryState, EventKind, utcnow
from outreach.registry.keys import email_hash, email_key
from outreach.sending.plan import SKIP_SUPPRESSED
from outreach.tracking.classify import InboundMessage, to_summary_line

log = logging.getLogger(__name__)

CONTACT = SQLModel.metadata.tables["contact"]
CAMPAIGN = SQLModel.metadata.tables["campaign"]
DELIVERY = SQLModel.metadata.tables["delivery"]
EVENT = SQLModel.metadata.tables["event"]
SUPPRESSION = SQLModel.metadata.tables["suppression"]

# Delivery.skip_reason written when a response stops letters that have not gone out yet: the same words
# planning writes for a suppressed contact ("suppressed: opt-out"), so `outreach status` shows one reason.
SKIP_REASONS = {reason: f"{SKIP_SUPPRESSED}: {reason}" for reason in ("opt-out", "hard-bounce")}
MANUAL_KINDS = (EventKind.REPLY, EventKind.OPT_IN, EventKind.OPT_OUT, EventKind.NOTE)
CLOCK_SKEW = timedelta(days=1)
# States a letter can be in when its bounce arrives: "unknown" (the connection died after DATA) is
# settled by the bounce.
BOUNCEABLE = (DeliveryState.SENT.value, DeliveryState.UNKNOWN.value)
TEXT_LIMIT = 2000  # a note or summary, never a whole letter


@dataclass(frozen=True)
class DeliveryRef:
    id: int
    campaign_id: int
    contact_id: int | None
    state: str
    email_key: str | None


@dataclass(frozen=True)
class TrackResult:
    event_id: int
    kind: EventKind
    email: str
    campaign: str | None
    delivery_id: int | None
    known_contact: bool
    suppressed: bool  # a new suppression was created
    skipped: int  # letters not yet sent that will no longer go out
    lifted: bool  # an opt-in lifted an earlier opt-out


@dataclass(frozen=True)
class InboundOutcome:
    event_id: int | None  # None: already recorded (a re-sync)
    kind: EventKind
    delivery_id: int | None
    contact_id: int | None
    suppressed: bool
    failed_delivery: bool
    summary: str


# --- lookups ---------------------------------------------------------------------------------------


def campaign_id(conn: Connection, slug: str) -> int:
    found = conn.execute(select(CAMPAIGN.c.id).where(CAMPAIGN.c.slug == slug)).scalar()
    if found is None:
        raise NotFoundError(
            f"campaign {slug!r} does not exist in the database",
            hint="`outreach campaign list` shows the campaigns; a campaign is created when it is planned",
        )
    return int(found)


def _delivery_select() -> Any:
    return select(
        DELIVERY.c.id,
        DELIVERY.c.campaign_id,
        DELIVERY.c.contact_id,
        DELIVERY.c.state,
        CONTACT.c.email_key,
    ).select_from(DELIVERY.outerjoin(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id))


def _ref(row: Any) -> DeliveryRef:
    return DeliveryRef(
        id=row.id,
        campaign_id=row.campaign_id,
        contact_id=row.contact_id,
        state=row.state,
        email_key=row.email_key,
    )


def delivery_by_tokens(conn: Connection, tokens: tuple[str, ...]) -> DeliveryRef | None:
    """The delivery of the first token that is ours; tokens come most specific first."""
    if not tokens:
        return None
    rows = conn.execute(_delivery_select().add_columns(DELIVERY.c.token).where(DELIVERY.c.token.in_(tokens)))
    by_token = {row.token: row for row in rows}
    for token in tokens:
        if token in by_token:
            return _ref(by_token[token])
    return None


def delivery_by_kenmerk(conn: Connection, kenmerken: tuple[str, ...]) -> DeliveryRef | None:
    """The delivery of the first kenmerk that is one of our letters' (``outreach.letters.kenmerk``)."""
    for kenmerk in kenmerken:
        found = find_kenmerk(conn, kenmerk)
        if found is not None:
            row = conn.execute(_delivery_select().where(DELIVERY.c.id == found.delivery_id)).first()
            if row is not None:
                return _ref(row)
    return None


def latest_delivery_for(conn: Connection, key: str, campaign: int | None = None) -> DeliveryRef | None:
    """The most recently sent letter to this address (in this campaign), else its newest delivery."""
    query = _delivery_select().where(CONTACT.c.email_key == key)
    if campaign is not None:
        query = query.where(DELIVERY.c.campaign_id == campaign)
    else:
        query = query.where(DELIVERY.c.sent_at.is_not(None))
    query = query.order_by(
        DELIVERY.c.sent_at.is_(None), DELIVERY.c.sent_at.desc(), DELIVERY.c.id.desc()
    ).limit(1)
    row = conn.execute(query).first()
    return _ref(row) if row is not None else None


def contact_ids_for(conn: Connection, key: str) -> list[int]:
    query = select(CONTACT.c.id).where(CONTACT.c.email_key == key).order_by(CONTACT.c.id)
    return [int(i) for i in conn.execute(query).scalars()]


# --- effects ---------------------------------------------------------------------------------------


def suppress(conn: Connection, key: str, reason: str, source: str, now: datetime) -> bool:
    """Suppress an address; True when it was not suppressed before. An existing suppression keeps its
    first reason: an address erased by `contacts forget` stays "forgotten"."""
    stmt = (
        dialect_insert(conn.engine)(SUPPRESSION)
        .values(key_hash=email_hash(key), email_key=key, reason=reason, source=source, created_at=now)
        .on_conflict_do_nothing(index_elements=["key_hash"])
        .returning(SUPPRESSION.c.id)  # rowcount of ON CONFLICT DO NOTHING differs between drivers
    )
    return conn.execute(stmt).first() is not None


def skip_unsent(conn: Connection, key: str, reason: str, now: datetime) -> int:
    """Letters to this address that have not gone out yet will not go out: the state machine's
    pending/deferred → skipped, so "the next send of any campaign skips that person" holds even for
    deliveries planned before the opt-out."""
    contacts = select(CONTACT.c.id).where(CONTACT.c.email_key == key).scalar_subquery()
    stmt = (
        update(DELIVERY)
        .where(DELIVERY.c.contact_id.in_(contacts))
        .where(DELIVERY.c.state.in_([DeliveryState.PENDING.value, DeliveryState.DEFERRED.value]))
        .values(state=DeliveryState.SKIPPED.value, skip_reason=reason, next_attempt_at=None, updated_at=now)
    )
    return int(conn.execute(stmt).rowcount or 0)


def insert_event(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert one event; None when its dedupe_key was recorded before."""
    if values.get("dedupe_key") is None:
        return int(conn.execute(insert(EVENT).values(**values).returning(EVENT.c.id)).scalar_one())
    stmt = (
        dialect_insert(conn.engine)(EVENT)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(EVENT.c.id)
    )
    found = conn.execute(stmt).scalar()
    return int(found) if found is not None else None


def _clip(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text[:TEXT_LIMIT] if text else None


# --- by hand ---------------------------------------------------------------------------------------


def track(
    engine: Engine,
    kind: EventKind,
    email: str,
    *,
    campaign: str | None = None,
    text: str | None = None,
    at: datetime | None = None,
    unmatched_id: int | None = None,
    now: datetime | None = None,
) -> TrackResult:
    """Record a response by hand: `outreach track reply|optin|optout|note`.

    The event goes on the person's delivery in ``campaign`` (or, without a campaign, on the last letter
    sent to them), so reports count it. An opt-out suppresses the address at once and skips letters
    not yet sent; an opt-in records when and what the person asked for and lifts an earlier opt-out.
    ``unmatched_id`` attaches an inbox message that `inbox sync` could not match.
    """
    if kind not in MANUAL_KINDS:
        raise UsageError(f"cannot record {kind.value!r} by hand; use one of reply, optin, optout, note")
    key = email_key(email)
    if "@" not in key:
        raise UsageError(f"--contact {email!r} is not an e-mail address")
    now = now or utcnow()
    occurred = at or now
    with engine.begin() as conn:
        contacts = contact_ids_for(conn, key)
        if not contacts and kind is not EventKind.OPT_OUT:
            raise NotFoundError(
                f"no contact with e-mail {email}",
                hint="check the address with `outreach contacts list`; only an opt-out is recorded "
                "for an unknown address",
            )
        cid = campaign_id(conn, campaign) if campaign else None
        delivery = latest_delivery_for(conn, key, cid) if contacts else None
        if cid is not None and delivery is None and kind in (EventKind.REPLY, EventKind.OPT_OUT):
            log.info("no letter of campaign %s to this contact; recording on the contact only", campaign)
        values: dict[str, Any] = {
            "kind": kind.value,
            "contact_id": delivery.contact_id if delivery else (contacts[0] if contacts else None),
            "delivery_id": delivery.id if delivery else None,
            "campaign_id": delivery.campaign_id if delivery else cid,
            "occurred_at": occurred,
            "recorded_at": now,
            "source": "manual",
            "text": _clip(text),
        }
        if unmatched_id is not None:
            event_id = _attach_unmatched(conn, unmatched_id, values)
        else:
            inserted = insert_event(conn, values)
            assert inserted is not None, "an event without dedupe_key is always inserted"
            event_id = inserted
        suppressed = lifted = False
        skipped = 0
        if kind is EventKind.OPT_OUT:
            suppressed = suppress(conn, key, "opt-out", "manual", now)
            skipped = skip_unsent(conn, key, SKIP_REASONS["opt-out"], now)
        elif kind is EventKind.OPT_IN:
            conn.execute(
                update(CONTACT)
                .where(CONTACT.c.email_key == key)
                .values(opted_in_at=occurred, opt_in_topics=_clip(text), updated_at=now)
            )
            # A person who asks for mail after opting out has changed their mind; a hard bounce or an
            # erasure is not theirs to lift this way.
            lifted = bool(
                conn.execute(
                    SUPPRESSION.delete().where(
                        and_(SUPPRESSION.c.key_hash == email_hash(key), SUPPRESSION.c.reason == "opt-out")
                    )
                ).rowcount
            )
    slug = campaign
    if slug is None and delivery is not None:
        with engine.connect() as conn:
            slug = conn.execute(select(CAMPAIGN.c.slug).where(CAMPAIGN.c.id == delivery.campaign_id)).scalar()
    return TrackResult(
        event_id=event_id,
        kind=kind,
        email=key,
        campaign=slug,
        delivery_id=delivery.id if delivery else None,
        known_contact=bool(contacts),
        suppressed=suppressed,
        skipped=skipped,
        lifted=lifted,
    )


def _attach_unmatched(conn: Connection, event_id: int, values: dict[str, Any]) -> int:
    row = conn.execute(select(EVENT.c.kind, EVENT.c.occurred_at).where(EVENT.c.id == event_id)).first()
    if row is None:
        raise NotFoundError(f"no inbox message with id {event_id}", hint="see `outreach inbox unmatched`")
    if row.kind != EventKind.UNMATCHED.value:
        raise NotFoundError(
            f"event {event_id} is not an unmatched inbox message (it is recorded as {row.kind})",
            hint="see `outreach inbox unmatched`",
        )
    changes = dict(values)
    changes["occurred_at"] = row.occurred_at  # when the mail arrived, not when staff attached it
    changes.pop("source")  # it still came from the mailbox
    if changes["text"] is None:
        changes.pop("text")
    conn.execute(update(EVENT).where(EVENT.c.id == event_id).values(**changes))
    return event_id


# --- from the mailbox ------------------------------------------------------------------------------


def record_inbound(
    conn: Connection,
    inbound: InboundMessage,
    *,
    dedupe_key: str,
    received_at: datetime | None,
    source: str = "imap",
    now: datetime | None = None,
    content_hash: str | None = None,
) -> InboundOutcome:
    """Record one classified inbound message and apply what it means. Idempotent by ``dedupe_key``."""
    now = now or utcnow()
    kind = inbound.kind
    delivery = delivery_by_tokens(conn, inbound.tokens)
    if delivery is None and inbound.kenmerken:
        delivery = delivery_by_kenmerk(conn, inbound.kenmerken)
    address: str | None = None  # whose address a bounce or opt-out is about
    copy_bounced = False
    summary = inbound.summary

    if kind is EventKind.BOUNCE:
        for bounce in inbound.bounces:
            if delivery is None and bounce.recipient:
                delivery = latest_delivery_for(conn, bounce.recipient)
        bounced = _bounced_address(inbound)
        address = bounced or (delivery.email_key if delivery else None)
        # A letter with griffie_copy = "cc" has two recipients under one token: when the copy bounces,
        # the griffie's address is suppressed but the letter to the contact did not fail.
        copy_bounced = bool(delivery and delivery.email_key and bounced and bounced != delivery.email_key)
        if delivery is None and not (address and contact_ids_for(conn, address)):
            kind, summary = EventKind.UNMATCHED, f"bounce: {inbound.summary}"
    elif kind in (EventKind.AUTO_REPLY, EventKind.OPT_OUT):
        if delivery is None and inbound.sender:
            delivery = latest_delivery_for(conn, inbound.sender)
        address = delivery.email_key if delivery and delivery.email_key else inbound.sender
        if kind is EventKind.OPT_OUT and not (delivery or (address and contact_ids_for(conn, address))):
            # An unsubscribe from an address we never wrote to: staff decide (it may be a colleague
            # asking on someone's behalf).
            kind, summary = EventKind.UNMATCHED, f"unsubscribe request: {to_summary_line(inbound)}"
    elif kind is EventKind.REPLY and delivery is None:
        kind = EventKind.UNMATCHED
    if kind is EventKind.UNMATCHED and summary == inbound.summary:
        summary = to_summary_line(inbound)

    contact_id = delivery.contact_id if delivery else None
    if contact_id is None:
        for candidate in (address, inbound.sender):
            ids = contact_ids_for(conn, candidate) if candidate else []
            if ids:
                contact_id = ids[0]
                break
    hard = kind is EventKind.BOUNCE and inbound.hard_bounce
    fails_letter = hard and not copy_bounced
    values: dict[str, Any] = {
        "kind": kind.value,
        "contact_id": contact_id,
        "delivery_id": delivery.id if delivery else None,
        "campaign_id": delivery.campaign_id if delivery else None,
        "occurred_at": _occurred(inbound.date, received_at, now),
        "recorded_at": now,
        "source": source,
        "bounce_type": ("hard" if hard else "soft") if kind is EventKind.BOUNCE else None,
        "status_code": inbound.bounce_status if kind is EventKind.BOUNCE else None,
        "text": _clip(summary),
        "reference": inbound.message_id,
        "content_hash": content_hash,
        "dedupe_key": dedupe_key,
    }
    event_id = insert_event(conn, values)
    suppressed = failed = False
    if event_id is not None:
        if (
            fails_letter
            and delivery is not None
            and delivery.state in (DeliveryState.SENT, DeliveryState.UNKNOWN)
        ):
            conn.execute(
                update(DELIVERY)
                .where(DELIVERY.c.id == delivery.id)
                .values(
                    state=DeliveryState.FAILED.value,
                    last_error=f"bounced: {_clip(inbound.summary)}"[:500],
                    updated_at=now,
                )
            )
            failed = True
        if address and ((kind is EventKind.BOUNCE and inbound.suppresses) or kind is EventKind.OPT_OUT):
            reason = "opt-out" if kind is EventKind.OPT_OUT else "hard-bounce"
            suppressed = suppress(conn, address, reason, source, now)
            skip_unsent(conn, address, SKIP_REASONS[reason], now)
    return InboundOutcome(
        event_id=event_id,
        kind=kind,
        delivery_id=delivery.id if delivery else None,
        contact_id=contact_id,
        suppressed=suppressed,
        failed_delivery=failed,
        summary=summary,
    )


def _occurred(written: datetime | None, received: datetime | None, now: datetime) -> datetime:
    """When the person wrote (Date), unless their clock was clearly wrong; else when it arrived."""
    if written is not None and (received is None or written <= received + CLOCK_SKEW):
        return written
    return received or now


def _bounced_address(inbound: InboundMessage) -> str | None:
    for bounce in sorted(inbound.bounces, key=lambda b: not b.hard):
        if bounce.recipient:
            return bounce.recipient
    return None


@dataclass(frozen=True)
class UnmatchedMessage:
    event_id: int
    occurred_at: datetime
    summary: str
    reference: str | None
    contact_email: str | None


def list_unmatched(engine: Engine, limit: int | None = None) -> list[UnmatchedMessage]:
    """Inbox messages nothing was matched to, newest first; `outreach track --unmatched ID` attaches one."""
    query = (
        select(EVENT.c.id, EVENT.c.occurred_at, EVENT.c.text, EVENT.c.reference, CONTACT.c.email_key)
        .select_from(EVENT.outerjoin(CONTACT, CONTACT.c.id == EVENT.c.contact_id))
        .where(EVENT.c.kind == EventKind.UNMATCHED.value)
        .order_by(EVENT.c.occurred_at.desc(), EVENT.c.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [
            UnmatchedMessage(
                event_id=row.id,
                occurred_at=row.occurred_at,
                summary=row.text or "",
                reference=row.reference,
                contact_email=row.email_key,
            )
            for row in conn.execute(query)
        ]


def count_events(conn: Connection, **where: Any) -> int:
    query = select(func.count()).select_from(EVENT)
    for name, value in where.items():
        query = query.where(EVENT.c[name] == value)
    return int(conn.execute(query).scalar() or 0)
