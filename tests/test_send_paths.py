"""Exactly-once paths that had no test: a claim lost behind a pipelined envelope, the state writer
failing under its waiters, a refused MAIL FROM, giving up after the maximum tries, DKIM signatures a
receiver can verify, SIGTERM mid-run, and the sending window closing mid-run."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import signal
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path

import dkim
import pytest
from sqlalchemy import Engine, select, text
from sqlmodel import Session, col
from sqlmodel import select as sql_select

from outreach.errors import SmtpError
from outreach.letters.campaign import SendingWindow
from outreach.models import Delivery, DeliveryState, utcnow
from outreach.sending.claim import DELIVERY, D
from outreach.sending.plan import plan_deliveries
from outreach.sending.run import run_send
from outreach.sending.writer import StateWriter, Transition, WriterFailedError
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import Fault, Handler, SmtpServer
from tests.test_send_faults import options, states
from tests.test_send_workers import final_states, sender, wait_for

FROM = "brieven@hetvergetenkind.nl"


def test_a_claim_lost_after_its_envelope_was_pipelined_never_sends_the_body(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 40)
    server = smtpd(pipelining=True)
    database = str(engine.url.database)

    def steal_after_the_fifth() -> None:
        if len(server.handler.messages) != 5:
            return
        # Before the fifth letter's 250 goes back, another sender takes over every claimed row this one
        # has not moved to ``sending`` yet, among them the letter whose envelope is on the wire.
        thief = sqlite3.connect(database, timeout=30)
        with thief:
            thief.execute(
                "UPDATE delivery SET claimed_by = 'thief', lease_until = ? "
                "WHERE state = 'pending' AND claimed_by IS NOT NULL",
                ((utcnow() + timedelta(hours=1)).isoformat(sep=" "),),
            )
        thief.close()

    server.handler.after_message = steal_after_the_fifth
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options(concurrency=1))

    received = Counter(r for m in server.handler.messages for r in m.rcpt_tos)
    assert summary.sent == len(received) == 5 and max(received.values()) == 1
    # Exactly one envelope reached the server without its body: the pipelined successor's.
    (envelope_only,) = set(server.handler.rcpts) - set(received)
    rows = states(engine)
    assert rows[envelope_only].state == "pending" and rows[envelope_only].claimed_by == "thief"
    assert rows[envelope_only].attempts == 0
    assert {rows[a].state for a in addresses if a not in received} == {"pending"}
    assert {rows[a].claimed_by for a in addresses if a not in received} == {"thief"}
    # The connection carrying that envelope was dropped; the rest of the run found only lost claims.
    assert server.handler.sessions == 2


def test_when_the_state_writer_fails_every_waiter_gets_the_error(
    engine: Engine, make_campaign: CampaignFactory
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 6)
    campaign_id = plan_deliveries(engine, campaign).campaign_id

    async def scenario() -> tuple[list[object], StateWriter]:
        writer = StateWriter(
            engine, campaign_id=campaign_id, worker="w1", lease=timedelta(minutes=2), message_domain="x.nl"
        )
        writer.start()
        try:
            a, b, c, *_ = await writer.claim(6, utcnow())
            assert await writer.mark_sending(a.id)
            # The database stops taking updates (here: the table is gone) while four callers wait.
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE delivery RENAME TO delivery_gone"))
            waiting = [
                asyncio.ensure_future(writer.mark_sending(b.id)),
                asyncio.ensure_future(writer.mark_sending(c.id)),
                asyncio.ensure_future(writer.flush()),
                asyncio.ensure_future(writer.claim(2, utcnow())),
            ]
            await asyncio.sleep(0)  # all four are queued before the writer's next group commit
            writer.record(Transition(a.id, DeliveryState.SENT, code=250, sent_at=utcnow()))
            results = await asyncio.gather(*waiting, return_exceptions=True)
            with pytest.raises(WriterFailedError):
                writer.record(Transition(b.id, DeliveryState.SENT, code=250))
            with pytest.raises(WriterFailedError):
                await writer.mark_sending(c.id)
            return list(results), writer
        finally:
            await writer.close()

    results, writer = asyncio.run(scenario())
    assert [type(r) for r in results] == [WriterFailedError] * 4
    assert {str(r) for r in results} == {"cannot record delivery states: no such table: delivery"}
    assert writer.error is not None
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE delivery_gone RENAME TO delivery"))
        found = dict(conn.execute(select(D.state, D.id).where(D.campaign_id == campaign_id)).all())
    assert set(found) == {"sending", "pending"}  # the first letter's outcome never landed


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
def test_a_refused_mail_from_stops_the_run_and_marks_nothing(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    pipelining: bool,
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 8)
    server = smtpd(pipelining=pipelining)
    server.handler.faults = {FROM: Fault("mail", "553 5.7.1 sender not allowed to relay")}
    with pytest.raises(SmtpError, match=r"refuses to send for us: 553 5\.7\.1 sender not allowed") as caught:
        run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert "\n" not in str(caught.value)
    assert not server.handler.messages
    rows = states(engine).values()
    assert {d.state for d in rows} == {"pending"}
    assert {d.claimed_by for d in rows} == {None}


def test_a_letter_is_given_up_after_the_maximum_tries_over_runs(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 4)
    greylisted = addresses[0]
    server = smtpd()
    server.handler.faults = {greylisted: Fault("rcpt", "451 4.7.1 greylisted, try again later")}
    settings = smtp_settings(db_url, server.port)
    tries = options(attempts_per_run=2, max_attempts=4)

    first = run_send(engine, settings, campaign, tries)
    row = states(engine)[greylisted]
    assert (first.deferred, row.state, row.attempts) == (1, "deferred", 2)

    with engine.begin() as conn:  # its retry time has come
        conn.execute(DELIVERY.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    second = run_send(engine, settings, campaign, tries)
    row = states(engine)[greylisted]
    assert (second.failed, row.state, row.attempts, row.last_code) == (1, "failed", 4, 451)
    assert row.last_error == "gave up after 4 attempts: 4.7.1 greylisted, try again later"
    assert not server.handler.received_by(greylisted)
    assert {states(engine)[a].state for a in addresses[1:]} == {"sent"}


def test_dkim_signatures_verify_against_the_published_key(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    campaign_templates: Path,
    smtpd: Callable[..., SmtpServer],
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder = campaign_templates / "testbrief"
    folder.mkdir(parents=True)
    (folder / "dkim.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    asked: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes:
        asked.append(name)
        return record if name == b"brief2026._domainkey.hetvergetenkind.nl." else b""

    campaign = make_campaign(extra='dkim_selector = "brief2026"\ndkim_key_file = "dkim.pem"\n')
    add_raadsleden(engine, 3)
    server = smtpd(pipelining=True)
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert summary.sent == 3
    for message in server.handler.messages:
        assert message.content.startswith(b"DKIM-Signature:")
        assert dkim.verify(message.content, dnsfunc=dns)
        tampered = message.content.replace(b"Subject: Jeugdzorg", b"Subject: Jeugdhulp", 1)
        assert tampered != message.content and not dkim.verify(tampered, dnsfunc=dns)
    assert set(asked) == {b"brief2026._domainkey.hetvergetenkind.nl."}


def test_sigterm_mid_run_settles_what_is_in_flight(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    make_campaign()
    add_raadsleden(engine, 200)
    server = smtpd(pipelining=True)
    server.handler.delay = 0.01
    process = sender(db_url, server.port, "--concurrency", "3")
    wait_for(lambda: len(server.handler.messages) >= 20, "the sender to be mid-run")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"Resume with: outreach send --campaign testbrief" in stderr
    assert b"Traceback" not in stderr
    found = Counter(final_states(engine).values())
    assert set(found) == {"sent", "pending"}
    assert found["sent"] == len(server.handler.messages) < 200
    with Session(engine) as session:
        assert not session.exec(sql_select(Delivery).where(col(Delivery.claimed_by).is_not(None))).all()


@dataclass(frozen=True, eq=False)
class _WindowClosingAfter(SendingWindow):
    """Open until the server has received ``letters`` letters, then closed until ``opens_at``."""

    handler: Handler
    letters: int
    opens_at: datetime

    def is_open(self, dt_utc: datetime) -> bool:
        return len(self.handler.messages) < self.letters

    def next_open(self, dt_utc: datetime) -> datetime:
        return dt_utc if self.is_open(dt_utc) else self.opens_at


def test_the_sending_window_closing_mid_run_stops_taking_letters(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 100)
    server = smtpd(pipelining=True)
    server.handler.delay = 0.005
    opens_at = (utcnow() + timedelta(hours=14)).replace(microsecond=0)
    window = _WindowClosingAfter(frozenset(range(7)), time(0, 0), time(23, 59), server.handler, 20, opens_at)
    closing = dataclasses.replace(campaign, sending=dataclasses.replace(campaign.sending, window=window))
    summary = run_send(
        engine, smtp_settings(db_url, server.port), closing, options(concurrency=2, batch_size=10)
    )
    assert summary.window_opens_at == opens_at
    assert summary.exit_code == 1
    received = Counter(r for m in server.handler.messages for r in m.rcpt_tos)
    assert 20 <= summary.sent == len(received) < 100 and max(received.values()) == 1
    rows = states(engine)
    assert {d.state for d in rows.values()} == {"sent", "pending"}
    assert {d.claimed_by for d in rows.values()} == {None}
    assert {a for a, d in rows.items() if d.state == "sent"} == set(received)
