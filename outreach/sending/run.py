"""``run_send``: approval, planning, recovery, then the dispatch of one run (``outreach send``).

The layers, each in a module of its own:

- ``run`` (here): checks the approval, plans the deliveries, settles what dead senders left, asks, and
  hands the due letters to a ``Worker`` (or, with ``--dry-run``, writes them out);
- ``worker``: one sender's tasks, signals, shared state and settling;
- ``producer``: claims and composes ahead of the connections (``composer``: in a process of its own);
- ``slot``: one SMTP connection's loop; ``smtp``: the connection and its pipelining protocol;
- ``throttle``, ``destination``, ``mx``, ``retry``: who may get a letter when, and what a failure says;
- ``outcome`` and ``writer``: recording what became of each letter, in group commits (``writer/core``)
  through one committer per database backend (``writer/sqlite``, ``writer/postgres``).

Every letter is moved to ``sending`` (committed) before its body goes out, and its outcome is committed
before that connection starts the next letter: a crash at any point leaves each delivery either
untouched (resent by the next run), ``sending`` (becomes ``unknown``: never resent automatically), or
with its true outcome.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, Select, and_, case, func, select
from sqlalchemy.exc import SQLAlchemyError

from outreach.config import Settings
from outreach.letters.campaign import CampaignConfig
from outreach.models import DeliveryState, utcnow
from outreach.sending.claim import ClaimedRow, D, due_condition, recover_abandoned
from outreach.sending.errors import WriterFailedError
from outreach.sending.failures import database_failure
from outreach.sending.jobs import LetterSource
from outreach.sending.mx import MxResolver, default_resolver
from outreach.sending.plan import RENDER_FAILED, plan_deliveries
from outreach.sending.summary import NoProgress, Progress, SendOptions, SendSummary
from outreach.sending.worker import Worker

#: What a database that goes away, locks up or refuses writes raises during a send.
DATABASE_FAILURES = (SQLAlchemyError, WriterFailedError)

__all__ = ["SendOptions", "SendSummary", "count_due", "delivery_counts", "run_send"]

log = logging.getLogger(__name__)


#: From this many due letters on, letters are composed in a process of their own (its start-up, about a
#: second of CPU on the other core, then pays for itself).
COMPOSER_PROCESS_MIN = 1_000


def run_send(
    engine: Engine,
    settings: Settings,
    campaign: CampaignConfig,
    options: SendOptions,
    *,
    confirm: Callable[[int], bool] | None = None,
    progress: Progress | None = None,
    letters: LetterSource | None = None,
    audience: Select[int] | None = None,
    mx_resolver: MxResolver | None = None,
    notify: Callable[[str], None] | None = None,
) -> SendSummary:
    """Send (or, with ``dry_run``, write out) the campaign's due letters. The core of ``outreach send``.

    Checks the approval, plans, settles what dead workers left,
    asks ``confirm(due)`` when given, then sends. ``notify(line)`` tells the user at once what a Ctrl-C
    does (default: the log). Raises ``OutreachError`` for problems that stop the
    run before or while sending (not approved, authentication, TLS, the database); a summary otherwise.
    ``mx_resolver`` looks up the recipient domains' MX (default: dnspython, unless
    ``OUTREACH_MX_LOOKUP=off``; the tests pass their own).
    """
    try:
        return _run_send(
            engine, settings, campaign, options, confirm, progress, letters, audience, mx_resolver, notify
        )
    except DATABASE_FAILURES as exc:  # one line for the user, whichever step met it
        raise database_failure(exc) from exc


def _run_send(
    engine: Engine,
    settings: Settings,
    campaign: CampaignConfig,
    options: SendOptions,
    confirm: Callable[[int], bool] | None,
    progress: Progress | None,
    letters: LetterSource | None,
    audience: Select[int] | None,
    mx_resolver: MxResolver | None,
    notify: Callable[[str], None] | None,
) -> SendSummary:
    from outreach.letters.approval import require_approval

    require_approval(engine, campaign)
    own_letters = letters is None
    if letters is None:
        from outreach.sending.letters import CampaignLetters

        letters = CampaignLetters(engine, campaign)
    summary = SendSummary(campaign=campaign.slug, dry_run=options.dry_run)
    started = time.perf_counter()
    summary.plan = plan_deliveries(engine, campaign, audience=audience, retry_unknown=options.retry_unknown)
    campaign_id = summary.plan.campaign_id
    now = utcnow()
    if not options.dry_run:
        summary.recovery = recover_abandoned(engine, campaign_id=campaign_id, now=now)
    summary.due = count_due(engine, campaign_id, now, retry_unknown=options.retry_unknown)
    if options.limit is not None:
        summary.due = min(summary.due, options.limit)
    if summary.due and own_letters:
        # PDF letters ([letter]) are laid out now, in one process per core, so sending never waits on one.
        from outreach.letters.pdf_letters import prepare_for_sending

        prepare_for_sending(engine, campaign, campaign_id, now=now, limit=options.limit)
    window = None if options.ignore_window else campaign.sending.window
    if summary.due and window is not None and not window.is_open(now) and not options.dry_run:
        summary.window_opens_at = window.next_open(now)
    elif summary.due and confirm is not None and not confirm(summary.due):
        summary.cancelled = True
    elif summary.due and options.dry_run:
        summary.outbox = options.outbox or Path("outbox") / campaign.slug
        _dry_run(engine, campaign, campaign_id, options, letters, summary)
    elif summary.due:
        resolver = default_resolver() if mx_resolver is None else mx_resolver
        sender = Worker(
            engine,
            settings,
            campaign,
            campaign_id,
            options,
            letters,
            progress or NoProgress(),
            summary,
            resolver,
        )
        sender.notify = notify or log.warning
        # What start-up created (modules, SQLAlchemy's and Jinja's caches, templates) lives as long as the
        # run: the collector's full passes need not walk it again (GC time per 10,000 letters 0.17-0.26 s
        # -> 0.11-0.14 s). Frozen before the composer is forked, so that the child never collects (and
        # finalises) an object it inherited, such as one of this process's database connections.
        gc.freeze()
        # The producer composes letters on a thread; with the default 5 ms switch interval the event
        # loop waits that long for the GIL each time it wants to answer a server. 1 ms keeps the
        # connections fed (measured in bench/send_bench.py).
        switch_interval = sys.getswitchinterval()
        try:
            if _use_composer_process(engine, options, summary.due, own_letters):
                sender.producer.start_composer()
            sys.setswitchinterval(min(switch_interval, 0.001))
            asyncio.run(sender.run())
        finally:
            # No database work here: a second failure (the database is gone) would hide the first.
            gc.unfreeze()
            sys.setswitchinterval(switch_interval)
        if sender.fatal is not None:
            raise sender.fatal
    summary.elapsed = time.perf_counter() - started
    summary.counts, summary.elsewhere = delivery_counts(engine, campaign_id, worker=summary.worker)
    return summary


def _use_composer_process(engine: Engine, options: SendOptions, due: int, own_letters: bool) -> bool:
    # An injected LetterSource runs in this process; an in-memory SQLite database is invisible to another.
    database = engine.url.database
    if not own_letters or (engine.dialect.name == "sqlite" and database in (None, "", ":memory:")):
        return False
    if options.compose_process is not None:
        return options.compose_process
    return due >= COMPOSER_PROCESS_MIN


def count_due(engine: Engine, campaign_id: int, now: datetime, *, retry_unknown: bool) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(
            D.campaign_id == campaign_id,
            due_condition(now, retry_unknown=retry_unknown),  # type: ignore[arg-type]
        )
        return int(conn.execute(query).scalar_one())


def delivery_counts(engine: Engine, campaign_id: int, *, worker: str = "") -> tuple[dict[str, int], int]:
    """Deliveries per state, and how many of those not yet done other live workers hold right now
    (several senders on one campaign: the first to finish must not report the others' work as left).
    One statement, so both numbers come from the same snapshot while other senders keep writing."""
    now = utcnow()
    held = case(
        (
            and_(
                D.state.in_(
                    (
                        DeliveryState.PENDING,
                        DeliveryState.DEFERRED,
                        DeliveryState.SENDING,
                        DeliveryState.UNKNOWN,
                    )
                ),
                D.claimed_by.is_not(None),
                D.claimed_by != worker,
                D.lease_until >= now,
            ),
            1,
        ),
        else_=0,
    )
    counts: dict[str, int] = {}
    elsewhere = 0
    with engine.connect() as conn:
        rows = conn.execute(
            select(D.state, held, func.count()).where(D.campaign_id == campaign_id).group_by(D.state, held)
        ).all()
    for state, is_held, n in rows:
        counts[str(state)] = counts.get(str(state), 0) + int(n)
        if is_held:
            elsewhere += int(n)
    return counts, elsewhere


def _dry_run(
    engine: Engine,
    campaign: CampaignConfig,
    campaign_id: int,
    options: SendOptions,
    letters: LetterSource,
    summary: SendSummary,
) -> None:
    """Compose every due letter and write it as .eml; no claim, no state change, no SMTP."""
    from outreach.letters.ids import message_id, new_token

    assert summary.outbox is not None
    summary.outbox.mkdir(parents=True, exist_ok=True)
    now = utcnow()
    remaining = summary.due
    last_id = 0
    while remaining > 0:
        with engine.connect() as conn:
            rows = conn.execute(
                select(D.id, D.contact_id, D.state, D.attempts, D.token, D.message_id)
                .where(
                    D.campaign_id == campaign_id,
                    D.id > last_id,
                    due_condition(now, retry_unknown=options.retry_unknown),  # type: ignore[arg-type]
                )
                .order_by(D.id)
                .limit(min(remaining, options.batch_size))
            ).all()
        if not rows:
            break
        last_id = rows[-1].id
        claimed = []
        for row in rows:
            # A letter never claimed has no token yet; the dry run shows a throwaway one.
            token = row.token or new_token()
            mid = row.message_id or message_id(token, campaign.message_domain)
            claimed.append(
                ClaimedRow(row.id, row.contact_id, DeliveryState(row.state), row.attempts, token, mid)
            )
        jobs, unsendable = letters.compose(claimed, now)
        for job in jobs:
            letters.write_eml(job, summary.outbox)
        summary.written += len(jobs)
        for _, reason in unsendable:
            if reason.startswith(RENDER_FAILED):
                summary.held += 1
                summary.errors.append(reason)
            else:
                summary.skipped += 1
        del summary.errors[:-10]
        remaining -= len(rows)
