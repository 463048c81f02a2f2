"""The rights of the people in the registry (AVG/GDPR articles 15 and 17) and data minimisation.

- ``export_person``: everything held on one e-mail address, events included, as one JSON document.
- ``forget_person``: erase the person. Their contact rows go; a suppression keyed by the sha256 of the
  address stays (without the readable address), so a later import of a council list cannot make the tool
  write to them again; events keep their kind, time and campaign (the report's numbers stay right) but
  lose their text, inbound Message-ID and link to the person.
- ``purge_ended``: erase the contact rows of offices whose term ended before a date (after elections),
  anonymising their events the same way. No suppression is added: a re-elected person may be imported
  again; an existing opt-out is kept, hashed.

Each runs in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, exists, false, or_, select, update
from sqlmodel import SQLModel

from outreach.errors import NotFoundError, UsageError
from outreach.models import EventKind, utcnow
from outreach.registry.keys import email_hash, email_key, register_key, register_reference
from outreach.tracking.events import CAMPAIGN, CONTACT, DELIVERY, EVENT, SUPPRESSION

MUNICIPALITY = SQLModel.metadata.tables["municipality"]
CHUNK = 500  # bound parameters per IN (...) list, well under SQLite's limit


def _key(email: str) -> str:
    key = email_key(email)
    if "@" not in key:
        raise UsageError(
            f"{email!r} is not an e-mail address",
            hint="name an office holder without an address by register id: register:28990203",
        )
    return key


@dataclass(frozen=True)
class _Person:
    """Whom a request names: an address, or a register id ("register:28990203") with the address the
    register or staff gave that office holder, if any. ``keys`` are every email_key involved."""

    label: str  # the address, or "register:<id>"
    keys: tuple[str, ...]
    register_id: str | None

    def contacts(self) -> Any:
        by_key = CONTACT.c.email_key.in_(self.keys) if self.keys else false()
        if self.register_id is None:
            return by_key
        return or_(CONTACT.c.register_id == self.register_id, by_key)

    def mentions(self) -> Any:
        return or_(false(), *(_mentions(key) for key in self.keys))

    def suppression_keys(self) -> list[str]:
        """The hashed keys a suppression of this person is stored under."""
        own = [register_key(self.register_id)] if self.register_id is not None else []
        return own + list(self.keys)


def _person(conn: Connection, who: str) -> _Person:
    register_id = register_reference(who)
    if register_id is None:
        key = _key(who)
        return _Person(label=key, keys=(key,), register_id=None)
    keys = conn.execute(
        select(CONTACT.c.email_key).where(
            CONTACT.c.register_id == register_id, CONTACT.c.email_key.is_not(None)
        )
    ).scalars()
    return _Person(label=register_key(register_id), keys=tuple(sorted(set(keys))), register_id=register_id)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _mentions(key: str) -> Any:
    """Unmatched inbox messages are stored as "From: <address>; Subject: ..." before anyone knows who
    sent them; they are personal data of that address too."""
    return (EVENT.c.kind == EventKind.UNMATCHED.value) & EVENT.c.text.contains(key, autoescape=True)


def _person_events(contact_ids: Sequence[int], delivery_ids: Sequence[int], person: _Person) -> Any:
    return or_(
        EVENT.c.contact_id.in_(contact_ids) if contact_ids else false(),
        EVENT.c.delivery_id.in_(delivery_ids) if delivery_ids else false(),
        person.mentions(),
    )


# --- export ----------------------------------------------------------------------------------------


def export_person(engine: Engine, email: str, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything held on ``email``: contacts (every office), letters, events and any suppression.

    ``email`` may be a register id ("register:28990203"): that office holder's rows, and everything
    held under the address they have, if any."""
    with engine.connect() as conn:
        person = _person(conn, email)
        contacts = conn.execute(
            select(
                CONTACT,
                MUNICIPALITY.c.cbs_code.label("municipality_code"),
                MUNICIPALITY.c.name.label("municipality_name"),
                MUNICIPALITY.c.province.label("municipality_province"),
            )
            .select_from(CONTACT.outerjoin(MUNICIPALITY, MUNICIPALITY.c.id == CONTACT.c.municipality_id))
            .where(person.contacts())
            .order_by(CONTACT.c.id)
        ).all()
        contact_ids = [int(c.id) for c in contacts]
        deliveries = (
            conn.execute(
                select(DELIVERY, CAMPAIGN.c.slug.label("campaign"), CAMPAIGN.c.name.label("campaign_name"))
                .select_from(DELIVERY.join(CAMPAIGN, CAMPAIGN.c.id == DELIVERY.c.campaign_id))
                .where(DELIVERY.c.contact_id.in_(contact_ids))
                .order_by(DELIVERY.c.id)
            ).all()
            if contact_ids
            else []
        )
        delivery_ids = [int(d.id) for d in deliveries]
        events = conn.execute(
            select(EVENT, CAMPAIGN.c.slug.label("campaign"))
            .select_from(EVENT.outerjoin(CAMPAIGN, CAMPAIGN.c.id == EVENT.c.campaign_id))
            .where(_person_events(contact_ids, delivery_ids, person))
            .order_by(EVENT.c.occurred_at, EVENT.c.id)
        ).all()
        suppression = conn.execute(
            select(SUPPRESSION.c.reason, SUPPRESSION.c.source, SUPPRESSION.c.created_at)
            .where(SUPPRESSION.c.key_hash.in_([email_hash(k) for k in person.suppression_keys()]))
            .order_by(SUPPRESSION.c.created_at)
        ).first()
    if not contacts and not events and suppression is None:
        raise NotFoundError(f"nothing is held on {email}", hint="the address is compared case-insensitively")
    return {
        "email": person.label,
        "exported_at": _plain(now or utcnow()),
        "contacts": [_contact_dict(c) for c in contacts],
        "letters": [
            {
                "campaign": d.campaign,
                "campaign_name": d.campaign_name,
                "contact_id": d.contact_id,
                "state": d.state,
                "message_id": d.message_id,
                "sent_at": _plain(d.sent_at),
                "attempts": d.attempts,
                "last_code": d.last_code,
                "last_error": d.last_error,
                "skip_reason": d.skip_reason,
                "created_at": _plain(d.created_at),
            }
            for d in deliveries
        ],
        "events": [
            {
                "kind": e.kind,
                "occurred_at": _plain(e.occurred_at),
                "recorded_at": _plain(e.recorded_at),
                "source": e.source,
                "campaign": e.campaign,
                "contact_id": e.contact_id,
                "bounce_type": e.bounce_type,
                "status_code": e.status_code,
                "text": e.text,
                "reference": e.reference,
            }
            for e in events
        ],
        "suppression": (
            {
                "reason": suppression.reason,
                "source": suppression.source,
                "created_at": _plain(suppression.created_at),
            }
            if suppression is not None
            else None
        ),
    }


def _contact_dict(row: Any) -> dict[str, Any]:
    data = {column.name: _plain(row._mapping[column]) for column in CONTACT.columns}
    data["municipality"] = (
        {
            "cbs_code": row.municipality_code,
            "name": row.municipality_name,
            "province": row.municipality_province,
        }
        if row.municipality_code
        else None
    )
    data.pop("municipality_id", None)
    return data


# --- forget ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForgetResult:
    email: str
    contacts: int  # contact rows erased
    letters: int  # deliveries unlinked from the person
    events: int  # events anonymised
    suppression: str  # the suppression's reason: "forgotten", or the earlier "opt-out"/"hard-bounce"


def forget_person(engine: Engine, email: str, *, now: datetime | None = None) -> ForgetResult:
    """Erase the person behind ``email``; keep a hashed suppression so that they stay unwritten-to.

    ``email`` may be a register id ("register:28990203"): the suppression is then kept under the hash
    of "register:<id>" as well (and of their address, if they have one), and a register import passes
    that office holder over from then on."""
    now = now or utcnow()
    with engine.begin() as conn:
        person = _person(conn, email)
        contact_ids = [int(i) for i in conn.execute(select(CONTACT.c.id).where(person.contacts())).scalars()]
        delivery_ids = _delivery_ids(conn, contact_ids)
        events = _anonymise_events(conn, _person_events(contact_ids, delivery_ids, person))
        letters = _unlink_deliveries(conn, contact_ids, now)
        reasons = [_suppress_forgotten(conn, key, now) for key in person.suppression_keys()]
        removed = 0
        for chunk in _chunks(contact_ids):
            removed += int(conn.execute(CONTACT.delete().where(CONTACT.c.id.in_(chunk))).rowcount or 0)
    reason = next((r for r in reasons if r != "forgotten"), "forgotten")
    return ForgetResult(
        email=person.label, contacts=removed, letters=letters, events=events, suppression=reason
    )


def _suppress_forgotten(conn: Connection, key: str, now: datetime) -> str:
    """A hashed suppression for ``key``; the reason it has (an earlier opt-out stays an opt-out)."""
    digest = email_hash(key)
    existing = conn.execute(select(SUPPRESSION.c.reason).where(SUPPRESSION.c.key_hash == digest)).scalar()
    if existing is None:
        conn.execute(
            SUPPRESSION.insert().values(
                key_hash=digest, email_key=None, reason="forgotten", source="manual", created_at=now
            )
        )
    else:
        conn.execute(update(SUPPRESSION).where(SUPPRESSION.c.key_hash == digest).values(email_key=None))
    # Suppressions are unique by hash; this also clears a readable copy stored under another hash by an
    # older version of the keys.
    conn.execute(update(SUPPRESSION).where(SUPPRESSION.c.email_key == key).values(email_key=None))
    return "forgotten" if existing is None else str(existing)


def _delivery_ids(conn: Connection, contact_ids: Sequence[int]) -> list[int]:
    found: list[int] = []
    for chunk in _chunks(contact_ids):
        found.extend(
            int(i)
            for i in conn.execute(select(DELIVERY.c.id).where(DELIVERY.c.contact_id.in_(chunk))).scalars()
        )
    return found


def _anonymise_events(conn: Connection, condition: Any) -> int:
    stmt = update(EVENT).where(condition).values(text=None, reference=None, contact_id=None)
    return int(conn.execute(stmt).rowcount or 0)


def _unlink_deliveries(conn: Connection, contact_ids: Sequence[int], now: datetime) -> int:
    """Letters stay for the campaign's numbers, without the person. The foreign key is ON DELETE SET NULL
    as well; doing it here also clears the last SMTP error, which quotes the address."""
    count = 0
    for chunk in _chunks(contact_ids):
        stmt = (
            update(DELIVERY)
            .where(DELIVERY.c.contact_id.in_(chunk))
            .values(contact_id=None, last_error=None, updated_at=now)
        )
        count += int(conn.execute(stmt).rowcount or 0)
    return count


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- purge -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurgeResult:
    ended_before: date
    contacts: int  # contact rows erased
    people: int  # distinct addresses among them
    letters: int
    events: int
    dry_run: bool


def purge_ended(
    engine: Engine, ended_before: date, *, dry_run: bool = False, now: datetime | None = None
) -> PurgeResult:
    """Erase contacts whose term ended before ``ended_before``; with ``dry_run`` only count them."""
    now = now or utcnow()
    ended = CONTACT.c.term_end < ended_before
    with engine.begin() as conn:
        rows = conn.execute(select(CONTACT.c.id, CONTACT.c.email_key).where(ended)).all()
        contact_ids = [int(r.id) for r in rows]
        keys = sorted({str(r.email_key) for r in rows if r.email_key is not None})
        delivery_ids = _delivery_ids(conn, contact_ids)
        if dry_run:
            return PurgeResult(ended_before, len(contact_ids), len(keys), len(delivery_ids), 0, dry_run=True)
        events = 0
        for chunk in _chunks(contact_ids):
            events += _anonymise_events(conn, EVENT.c.contact_id.in_(chunk))
        for chunk in _chunks(delivery_ids):
            events += _anonymise_events(conn, EVENT.c.delivery_id.in_(chunk) & EVENT.c.text.is_not(None))
        letters = _unlink_deliveries(conn, contact_ids, now)
        for chunk in _chunks(contact_ids):
            conn.execute(CONTACT.delete().where(CONTACT.c.id.in_(chunk)))
        # People with no office left: their readable address goes from any suppression (the hash keeps
        # the opt-out working) and from unmatched inbox messages that name them.
        still_held = exists().where(CONTACT.c.email_key == SUPPRESSION.c.email_key)
        gone = set(keys)
        for chunk in _chunks(keys):
            conn.execute(
                update(SUPPRESSION)
                .where(SUPPRESSION.c.email_key.in_(chunk), ~still_held)
                .values(email_key=None)
            )
            gone -= set(
                conn.execute(select(CONTACT.c.email_key).where(CONTACT.c.email_key.in_(chunk))).scalars()
            )
        unmatched = conn.execute(
            select(EVENT.c.id, EVENT.c.text).where(
                EVENT.c.kind == EventKind.UNMATCHED.value, EVENT.c.text.is_not(None)
            )
        ).all()
        named = [int(e.id) for e in unmatched if any(k in (e.text or "").casefold() for k in gone)]
        for chunk in _chunks(named):
            events += _anonymise_events(conn, EVENT.c.id.in_(chunk))
    return PurgeResult(ended_before, len(contact_ids), len(keys), letters, events, dry_run=False)
