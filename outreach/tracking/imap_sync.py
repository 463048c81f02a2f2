"""`outreach inbox sync`: read new messages from the charity's mailbox and record what they mean.

Incremental per folder: the cursor (``InboxCursor``) holds the folder's UIDVALIDITY and the last UID
seen (RFC 3501 section 2.3.1.1: UIDs only grow while UIDVALIDITY stays the same; when it changes the
folder is read again from the start). Each message's event carries ``imap:<mailbox>:<uidvalidity>:<uid>``
as its dedupe key, and a message whose Message-ID was recorded before (the same mail moved to another
synced folder, or a folder read again after a UIDVALIDITY change) is not recorded twice; one without a
Message-ID is known by the hash of its sender-written headers and body (``content_fingerprint``). The
events of a batch and the cursor are committed together, so an interrupted sync resumes where it
stopped.

Folders are opened read-only (EXAMINE) and bodies fetched with BODY.PEEK, so the sync never marks a
message as read: staff still see new mail as new in their own mail client.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import ssl
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from sqlalchemy import Connection, Engine, select
from sqlmodel import SQLModel

from outreach.config import Settings
from outreach.db import dialect_insert
from outreach.errors import CampaignError, ConfigError, ImapError, NotFoundError
from outreach.letters.campaign_file import list_campaign_slugs, load_campaign
from outreach.models import EventKind, utcnow
from outreach.registry.keys import email_key
from outreach.tracking.classify import ClassifyOptions, InboundMessage, classify, unsubscribe_address_key
from outreach.tracking.events import EVENT, record_inbound

log = logging.getLogger(__name__)

CURSOR = SQLModel.metadata.tables["inboxcursor"]
CAMPAIGN = SQLModel.metadata.tables["campaign"]
BATCH = 100
# Replies can carry large attachments; the first MiB holds the headers, the reply text and any
# delivery status report, which is all classification reads.
FETCH_BYTES = 1024 * 1024
_FETCH_ITEM = f"BODY.PEEK[]<0.{FETCH_BYTES}>"
_BODY_KEYS = (b"BODY[]<0>", b"BODY[]")
TIMEOUT = 60.0


@dataclass
class FolderResult:
    folder: str
    uidvalidity: int
    reset: bool  # UIDVALIDITY changed since the last sync: the folder was read again
    new_messages: int = 0
    recorded: int = 0
    duplicates: int = 0
    last_uid: int = 0


@dataclass(frozen=True)
class NewEvent:
    event_id: int
    kind: EventKind
    summary: str
    suppressed: bool
    failed_delivery: bool


@dataclass
class SyncResult:
    mailbox: str
    folders: list[FolderResult] = field(default_factory=list)
    events: list[NewEvent] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counted = Counter(e.kind.value for e in self.events)
        return {kind.value: counted.get(kind.value, 0) for kind in EventKind if kind is not EventKind.OPT_IN}

    @property
    def unmatched(self) -> list[NewEvent]:
        return [e for e in self.events if e.kind is EventKind.UNMATCHED]

    @property
    def suppressed(self) -> int:
        return sum(1 for e in self.events if e.suppressed)

    @property
    def failed_deliveries(self) -> int:
        return sum(1 for e in self.events if e.failed_delivery)


def unsubscribe_addresses(engine: Engine, templates_dir: Path) -> frozenset[str]:
    """The List-Unsubscribe mailto addresses of every campaign folder and every campaign in the database.

    A campaign whose folder is gone or broken is skipped with a warning: its unsubscribe mails are still
    recognised by their subject ("afmelden <token>", which is what the letters' mailto link fills in).
    An address that is also the campaign's From or Reply-To is left out: replies arrive there too.
    """
    with engine.connect() as conn:
        slugs = set(conn.execute(select(CAMPAIGN.c.slug)).scalars())
    slugs.update(list_campaign_slugs(templates_dir))
    found: set[str] = set()
    for slug in sorted(slugs):
        try:
            campaign = load_campaign(templates_dir, slug)
        except (CampaignError, NotFoundError) as exc:
            log.warning("campaign %s: unsubscribe address unknown (%s)", slug, exc)
            continue
        key = unsubscribe_address_key(campaign.unsubscribe_mailto or "")
        if not key:
            continue
        replies = {email_key(a) for a in (campaign.from_address, campaign.reply_to) if a}
        if key in replies:
            # The letters' own address: every answer goes there, so arriving there means nothing.
            # Unsubscribes are then recognised by subject ("afmelden <token>") or a short "afmelden" reply.
            log.info("campaign %s: unsubscribe address is the reply address; matched by words only", slug)
            continue
        found.add(key)
    return frozenset(found)


def _settings_or_error(settings: Settings) -> tuple[str, str, str]:
    missing = [
        name
        for name, value in (
            ("OUTREACH_IMAP_HOST", settings.imap_host),
            ("OUTREACH_IMAP_USERNAME", settings.imap_username),
            ("OUTREACH_IMAP_PASSWORD", settings.imap_password),
        )
        if not value
    ]
    if missing:
        raise ConfigError(
            f"inbox sync needs {', '.join(missing)}",
            hint="set them in the environment, or host and username under [imap] in outreach.toml",
        )
    assert settings.imap_host and settings.imap_username and settings.imap_password
    return settings.imap_host, settings.imap_username, settings.imap_password


def _tls_context(settings: Settings, where: str) -> ssl.SSLContext:
    ca_file = settings.imap_ca_file
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"{where}: IMAP CA file {ca_file} does not exist (OUTREACH_IMAP_CA_FILE)")
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"{where}: IMAP CA file {ca_file} is not a PEM certificate: {exc}") from exc


def connect(settings: Settings) -> IMAPClient:
    """A logged-in IMAP connection; TLS (port 993) unless the settings ask for STARTTLS or none."""
    host, username, password = _settings_or_error(settings)
    port = settings.imap_port_effective
    where = f"{host}:{port}"
    context = _tls_context(settings, where) if settings.imap_tls != "none" else None
    if settings.imap_tls == "none":
        log.warning("%s: IMAP without TLS; the password crosses the network in clear text", where)
    try:
        client = IMAPClient(
            host, port=port, ssl=settings.imap_tls == "tls", ssl_context=context, timeout=TIMEOUT
        )
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(
            f"{where}: the server's TLS certificate is not trusted ({exc.verify_message})",
            hint="set OUTREACH_IMAP_CA_FILE to the CA that signed it",
        ) from exc
    except ssl.SSLError as exc:
        raise ImapError(f"{where}: TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ImapError(f"{where}: cannot connect to the IMAP server: {exc.strerror or exc}") from exc
    try:
        client.normalise_times = False  # INTERNALDATE with its offset, converted to UTC below
        if settings.imap_tls == "starttls":
            try:
                client.starttls(context)
            except ssl.SSLCertVerificationError as exc:
                raise ImapError(
                    f"{where}: the server's TLS certificate is not trusted ({exc.verify_message})",
                    hint="set OUTREACH_IMAP_CA_FILE to the CA that signed it",
                ) from exc
            except (ssl.SSLError, IMAPClientError) as exc:
                raise ImapError(f"{where}: STARTTLS failed: {exc}") from exc
        try:
            client.login(username, password)
        except LoginError as exc:
            raise ImapError(
                f"{where}: the IMAP server refused the login of {username}",
                hint="check OUTREACH_IMAP_USERNAME and OUTREACH_IMAP_PASSWORD",
            ) from exc
    except BaseException:
        _close(client)
        raise
    return client


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except (IMAPClientError, OSError):
        with contextlib.suppress(IMAPClientError, OSError):
            client.shutdown()


def sync_inbox(
    engine: Engine,
    settings: Settings,
    *,
    options: ClassifyOptions | None = None,
    batch_size: int = BATCH,
    now: datetime | None = None,
) -> SyncResult:
    """Read every configured folder's new messages and record them; a second run adds nothing."""
    host, username, _password = _settings_or_error(settings)
    options = options or ClassifyOptions()
    where = f"{host}:{settings.imap_port_effective}"
    result = SyncResult(mailbox=f"{username}@{host}")
    client = connect(settings)
    try:
        for folder in settings.imap_folders:
            result.folders.append(
                _sync_folder(engine, client, folder, result, options, batch_size, where, now)
            )
    except (IMAPClientError, OSError) as exc:
        raise ImapError(f"{where}: the IMAP connection failed during sync: {exc}") from exc
    finally:
        _close(client)
    return result


def _sync_folder(
    engine: Engine,
    client: IMAPClient,
    folder: str,
    result: SyncResult,
    options: ClassifyOptions,
    batch_size: int,
    where: str,
    now: datetime | None,
) -> FolderResult:
    try:
        info = client.select_folder(folder, readonly=True)
    except IMAPClientError as exc:
        raise ImapError(
            f"{where}: cannot open folder {folder!r}: {exc}", hint="check OUTREACH_IMAP_FOLDERS"
        ) from exc
    uidvalidity = int(info[b"UIDVALIDITY"])
    mailbox = f"{result.mailbox}/{folder}"
    with engine.connect() as conn:
        cursor = conn.execute(
            select(CURSOR.c.uidvalidity, CURSOR.c.last_uid).where(CURSOR.c.mailbox == mailbox)
        ).first()
    reset = cursor is not None and cursor.uidvalidity != uidvalidity
    last_uid = cursor.last_uid if cursor is not None and not reset else 0
    if reset:
        log.warning("%s: UIDVALIDITY changed, reading the folder again (known messages are skipped)", mailbox)
    outcome = FolderResult(folder=folder, uidvalidity=uidvalidity, reset=reset, last_uid=last_uid)
    # "N:*" always includes the highest UID even when it is below N (RFC 3501 section 6.4.8): filter.
    uids = sorted(uid for uid in client.search(["UID", f"{last_uid + 1}:*"]) if uid > last_uid)
    outcome.new_messages = len(uids)
    for batch in _chunks(uids, batch_size):
        fetched = client.fetch(batch, [_FETCH_ITEM, "INTERNALDATE"])
        stamp = now or utcnow()
        with engine.begin() as conn:
            for uid in batch:
                data = fetched.get(uid)
                if data is None:  # expunged between SEARCH and FETCH
                    continue
                recorded = _record_one(conn, mailbox, uidvalidity, uid, data, options, stamp)
                if recorded is None:
                    outcome.duplicates += 1
                else:
                    outcome.recorded += 1
                    result.events.append(recorded)
            _save_cursor(conn, mailbox, uidvalidity, batch[-1], stamp)
        outcome.last_uid = batch[-1]
        log.info("%s: %d of %d new messages read", mailbox, outcome.recorded + outcome.duplicates, len(uids))
    if not uids:
        with engine.begin() as conn:
            _save_cursor(conn, mailbox, uidvalidity, last_uid, now or utcnow())
    return outcome


def _record_one(
    conn: Connection,
    mailbox: str,
    uidvalidity: int,
    uid: int,
    data: dict[bytes, Any],
    options: ClassifyOptions,
    now: datetime,
) -> NewEvent | None:
    raw = next((data[key] for key in _BODY_KEYS if key in data), b"") or b""
    try:
        inbound = classify(bytes(raw), options)
    except Exception as exc:
        # Inbound mail is arbitrary input; one message the parser chokes on must not stop the sync
        # forever (the cursor would never pass it). It is listed for staff instead.
        log.warning("%s UID %d: cannot classify (%s: %s)", mailbox, uid, type(exc).__name__, exc)
        inbound = InboundMessage(
            kind=EventKind.UNMATCHED,
            reason=f"unreadable message: {type(exc).__name__}",
            message_id=None,
            sender=None,
            subject=f"(unreadable message, UID {uid})",
            date=None,
        )
    fingerprint = content_fingerprint(bytes(raw))
    if inbound.message_id:
        if _seen_message_id(conn, inbound.message_id):
            return None
    elif _seen_content(conn, fingerprint):
        # No Message-ID to know it by: the same headers and body recorded before are the same message.
        return None
    outcome = record_inbound(
        conn,
        inbound,
        dedupe_key=f"imap:{mailbox}:{uidvalidity}:{uid}",
        received_at=_utc(data.get(b"INTERNALDATE")),
        now=now,
        content_hash=fingerprint,
    )
    if outcome.event_id is None:
        return None
    return NewEvent(
        event_id=outcome.event_id,
        kind=outcome.kind,
        summary=outcome.summary,
        suppressed=outcome.suppressed,
        failed_delivery=outcome.failed_delivery,
    )


def _seen_message_id(conn: Connection, message_id: str) -> bool:
    query = select(EVENT.c.id).where(EVENT.c.reference == message_id, EVENT.c.source == "imap").limit(1)
    return conn.execute(query).first() is not None


def _seen_content(conn: Connection, fingerprint: str) -> bool:
    query = select(EVENT.c.id).where(EVENT.c.content_hash == fingerprint, EVENT.c.source == "imap").limit(1)
    return conn.execute(query).first() is not None


# What identifies a message when it has no Message-ID: the headers its sender wrote, not those a server
# adds on the way or when a mailbox is restored (Received, X-*, flags); Content-Type for its boundary.
_FINGERPRINT_HEADERS = (
    b"from",
    b"to",
    b"cc",
    b"date",
    b"subject",
    b"in-reply-to",
    b"references",
    b"content-type",
)


def content_fingerprint(raw: bytes) -> str:
    """``sha256:<hex>`` of a message's sender-written headers (unfolded, spaces collapsed) and its body
    (line ends and trailing spaces normalised), as fetched (the first ``FETCH_BYTES``)."""
    data = raw.replace(b"\r\n", b"\n")
    head, _, body = data.partition(b"\n\n")
    fields: list[tuple[bytes, list[bytes]]] = []
    current: list[bytes] | None = None
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the field before
            if current is not None:
                current.append(line)
            continue
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        current = [value] if colon and key in _FINGERPRINT_HEADERS else None
        if current is not None:
            fields.append((key, current))
    digest = hashlib.sha256()
    for key, parts in sorted(fields, key=lambda field: field[0]):
        digest.update(key + b":" + b" ".join(b" ".join(parts).split()) + b"\n")
    digest.update(b"\n")
    digest.update(b"\n".join(line.rstrip() for line in body.split(b"\n")).rstrip(b"\n"))
    return f"sha256:{digest.hexdigest()}"


def _save_cursor(conn: Connection, mailbox: str, uidvalidity: int, last_uid: int, now: datetime) -> None:
    values = {"mailbox": mailbox, "uidvalidity": uidvalidity, "last_uid": last_uid, "synced_at": now}
    stmt = dialect_insert(conn.engine)(CURSOR).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["mailbox"],
        set_={"uidvalidity": uidvalidity, "last_uid": last_uid, "synced_at": now},
    )
    conn.execute(stmt)


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
