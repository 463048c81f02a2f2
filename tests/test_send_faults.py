"""Injected SMTP faults end in the right delivery states; TLS and AUTH; errors that stop a run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from outreach.errors import CampaignError, SmtpError
from outreach.models import Delivery, Suppression, utcnow
from outreach.registry.keys import email_hash, email_key
from outreach.sending.run import SendOptions, run_send
from tests.fixtures_sending import CampaignFactory, Certificates, add_raadsleden, smtp_settings
from tests.smtpd import Fault, SmtpServer, refusing_server, silent_server


def options(**kwargs: object) -> SendOptions:
    values: dict[str, object] = {"concurrency": 3, "backoff_initial": 0.01, "backoff_max": 0.05}
    values.update(kwargs)
    return SendOptions(**values)  # type: ignore[arg-type]


def states(engine: Engine) -> dict[str, Delivery]:
    """Deliveries by the contact's address."""
    from outreach.models import Contact

    with Session(engine) as session:
        rows = session.exec(
            select(Contact.email_normalized, Delivery)
            .join(Delivery, col(Delivery.contact_id) == col(Contact.id))
            .order_by(col(Delivery.id))
        ).all()
    return {address or "": delivery for address, delivery in rows}


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_transient_and_permanent_rcpt_replies(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    pipelining: bool,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 12)
    greylisted, busy_once, unknown_user, rejected_body = addresses[:4]
    server = smtpd(pipelining=pipelining)
    server.handler.faults = {
        greylisted: Fault("rcpt", "451 4.7.1 greylisted, try again later"),
        busy_once: Fault("rcpt", "452 4.2.2 mailbox full", times=1),
        unknown_user: Fault("rcpt", "550 5.1.1 no such user"),
        rejected_body: Fault("data", "554 5.7.1 message rejected as spam"),
    }
    before = utcnow()
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    rows = states(engine)

    assert rows[greylisted].state == "deferred"
    assert rows[greylisted].last_code == 451
    assert rows[greylisted].attempts == 3  # the tries of this run
    retry_at = rows[greylisted].next_attempt_at
    assert retry_at is not None and retry_at > before + timedelta(minutes=10)
    assert rows[busy_once].state == "sent" and rows[busy_once].attempts == 2
    assert rows[unknown_user].state == "failed" and rows[unknown_user].last_code == 550
    assert "no such user" in (rows[unknown_user].last_error or "")
    assert rows[rejected_body].state == "failed" and rows[rejected_body].last_code == 554
    for address in addresses[4:]:
        assert rows[address].state == "sent"
    received = [r for m in server.handler.messages for r in m.rcpt_tos]
    assert sorted(received) == sorted([busy_once, *addresses[4:]])
    assert summary.exit_code == 1
    assert (summary.sent, summary.deferred, summary.failed) == (9, 1, 2)

    # The next run leaves the deferred letter alone until its retry time has come.
    again = run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert again.due == 0 and again.sent == 0


def test_a_server_error_after_the_body_fails_that_letter_and_the_connection_goes_on(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    pipelining: bool,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 6)
    server = smtpd(pipelining=pipelining)
    server.handler.faults = {addresses[0]: Fault("handler-error")}
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options(concurrency=1))
    rows = states(engine)
    assert rows[addresses[0]].state == "failed" and rows[addresses[0]].last_code == 500
    assert all(rows[address].state == "sent" for address in addresses[1:])
    assert sorted(r for m in server.handler.messages for r in m.rcpt_tos) == sorted(addresses[1:])
    assert (summary.sent, summary.failed) == (5, 1)


def test_disconnect_before_data_is_deferred_and_after_body_is_unknown(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    pipelining: bool,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 8)
    cut_early, cut_late = addresses[:2]
    server = smtpd(pipelining=pipelining)
    server.handler.faults = {
        cut_early: Fault("disconnect-at-rcpt"),
        cut_late: Fault("disconnect-after-body", times=1),
    }
    settings = smtp_settings(db_url, server.port)
    run_send(engine, settings, campaign, options())
    rows = states(engine)
    assert rows[cut_early].state == "deferred"
    assert rows[cut_late].state == "unknown"
    assert len(server.handler.received_by(cut_late)) == 1  # the server did get it
    assert not server.handler.received_by(cut_early)
    assert all(rows[a].state == "sent" for a in addresses[2:])

    # Unknown letters are never resent by an ordinary run...
    run_send(engine, settings, campaign, options())
    assert len(server.handler.received_by(cut_late)) == 1
    assert states(engine)[cut_late].state == "unknown"
    # ...only on request, with the same Message-ID.
    first_message_id = rows[cut_late].message_id
    summary = run_send(engine, settings, campaign, options(retry_unknown=True))
    assert summary.sent == 1
    assert len(server.handler.received_by(cut_late)) == 2
    assert states(engine)[cut_late].state == "sent"
    assert states(engine)[cut_late].message_id == first_message_id


def test_a_server_that_never_answers_after_the_body_leaves_unknown(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 3)
    server = smtpd()
    server.handler.faults = {addresses[0]: Fault("hang-after-body", times=1)}
    run_send(engine, smtp_settings(db_url, server.port, smtp_timeout=0.5), campaign, options())
    rows = states(engine)
    assert rows[addresses[0]].state == "unknown"
    assert "timed out" in (rows[addresses[0]].last_error or "")
    assert rows[addresses[1]].state == rows[addresses[2]].state == "sent"


def test_421_on_connect_stops_the_run_and_marks_nothing(
    engine: Engine, db_url: str, make_campaign: CampaignFactory
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 5)
    with refusing_server() as port, pytest.raises(SmtpError, match=r"421 4\.3\.2 too busy"):
        run_send(engine, smtp_settings(db_url, port), campaign, options(concurrency=2))
    rows = states(engine)
    assert {d.state for d in rows.values()} == {"pending"}
    assert all(d.claimed_by is None for d in rows.values())


def test_a_server_that_never_greets_stops_the_run_and_marks_nothing(
    engine: Engine, db_url: str, make_campaign: CampaignFactory
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 3)
    with silent_server() as port, pytest.raises(SmtpError, match=f"127.0.0.1:{port}"):
        run_send(engine, smtp_settings(db_url, port, smtp_timeout=0.3), campaign, options(concurrency=1))
    assert {d.state for d in states(engine).values()} == {"pending"}


def test_starttls_with_auth(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    certificates: Certificates,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 10)
    server = smtpd(tls=certificates.server_context, auth=("brieven", "geheim"), pipelining=True)
    settings = smtp_settings(
        db_url,
        server.port,
        smtp_tls="starttls",
        smtp_ca_file=certificates.ca_file,
        smtp_username="brieven",
        smtp_password="geheim",
    )
    summary = run_send(engine, settings, campaign, options())
    assert summary.sent == 10
    assert sorted(r for m in server.handler.messages for r in m.rcpt_tos) == sorted(addresses)


def test_wrong_password_is_one_clear_error_and_marks_nothing_failed(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    certificates: Certificates,
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 4)
    server = smtpd(tls=certificates.server_context, auth=("brieven", "geheim"))
    settings = smtp_settings(
        db_url,
        server.port,
        smtp_tls="starttls",
        smtp_ca_file=certificates.ca_file,
        smtp_username="brieven",
        smtp_password="fout",
    )
    with pytest.raises(SmtpError) as caught:
        run_send(engine, settings, campaign, options())
    message = str(caught.value)
    assert message.startswith(f"127.0.0.1:{server.port}: authentication failed for user 'brieven'")
    assert "\n" not in message and "fout" not in message
    assert {d.state for d in states(engine).values()} == {"pending"}
    assert not server.handler.messages


def test_untrusted_certificate_is_one_clear_error(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    certificates: Certificates,
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 2)
    server = smtpd(tls=certificates.server_context)
    settings = smtp_settings(db_url, server.port, smtp_tls="starttls")  # no CA file: not trusted
    with pytest.raises(SmtpError, match=r"TLS failed: .*certificate") as caught:
        run_send(engine, settings, campaign, options())
    assert "\n" not in str(caught.value)
    assert {d.state for d in states(engine).values()} == {"pending"}


@pytest.mark.parametrize("compose_process", [False, True], ids=["compose-on-thread", "composer-process"])
def test_suppressed_contacts_are_skipped_with_the_reason(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    compose_process: bool,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 4)
    with Session(engine) as session:
        key = email_key(addresses[0])
        session.add(Suppression(key_hash=email_hash(key), email_key=key, reason="opt-out", source="manual"))
        session.commit()
    server = smtpd()
    summary = run_send(
        engine, smtp_settings(db_url, server.port), campaign, options(compose_process=compose_process)
    )
    rows = states(engine)
    assert rows[addresses[0]].state == "skipped"
    assert rows[addresses[0]].skip_reason == "suppressed: opt-out"
    assert not server.handler.received_by(addresses[0])
    assert summary.sent == 3 and summary.exit_code == 0


def test_dry_run_writes_eml_files_and_changes_nothing(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    tmp_path: Path,
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 5)
    server = smtpd()
    outbox = tmp_path / "outbox"
    summary = run_send(
        engine, smtp_settings(db_url, server.port), campaign, options(dry_run=True, outbox=outbox)
    )
    files = sorted(outbox.glob("*.eml"))
    assert summary.written == len(files) == 5
    assert b"Subject: Jeugdzorg in " in files[0].read_bytes()
    assert not server.handler.messages
    assert {(d.state, d.token) for d in states(engine).values()} == {("pending", None)}


def test_limit_sends_only_that_many(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 20)
    server = smtpd()
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options(limit=7))
    assert summary.sent == 7 and len(server.handler.messages) == 7
    assert summary.counts == {"sent": 7, "pending": 13}
    assert summary.exit_code == 1


def test_an_unapproved_campaign_is_refused(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign(approve=False)
    add_raadsleden(engine, 2)
    server = smtpd()
    with pytest.raises(CampaignError, match="has not been approved"):
        run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert not server.handler.messages


def test_outside_the_sending_window_nothing_is_sent(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    from outreach.letters.campaign import AMSTERDAM

    # A window of one minute, the day after tomorrow: certainly closed now.
    later = (datetime.now(AMSTERDAM) + timedelta(days=2)).weekday()
    day = ["ma", "di", "wo", "do", "vr", "za", "zo"][later]
    campaign = make_campaign(extra=f'\n[sending.window]\ndays = ["{day}"]\nstart = "00:00"\nend = "00:01"\n')
    add_raadsleden(engine, 2)
    server = smtpd()
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert summary.sent == 0 and not server.handler.messages
    assert summary.window_opens_at is not None and summary.window_opens_at > utcnow()
    assert summary.exit_code == 1


@pytest.mark.parametrize("compose_process", [False, True], ids=["compose-on-thread", "composer-process"])
def test_a_contact_added_after_approval_that_cannot_be_rendered_is_held_back(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    compose_process: bool,
) -> None:
    # The letter needs the recipient's first name; everyone present at approval has one.
    campaign = make_campaign(approve=False)
    (campaign.folder / "brief.txt.j2").write_text("Beste {{ contact.voornaam }},\n\nOver de jeugdzorg.\n")
    addresses = add_raadsleden(engine, 3)
    with engine.begin() as conn:
        conn.execute(text("UPDATE contact SET voornaam = 'Anne'"))
    from outreach.letters.approval import record_approval
    from outreach.letters.campaign_file import load_campaign

    campaign = load_campaign(campaign.folder.parent, campaign.slug)
    record_approval(engine, campaign, "Test Reviewer")
    late = add_raadsleden(engine, 1, start=100)[0]  # imported after approval, without a first name

    server = smtpd()
    summary = run_send(
        engine, smtp_settings(db_url, server.port), campaign, options(compose_process=compose_process)
    )
    rows = states(engine)
    assert [rows[address].state for address in addresses] == ["sent"] * 3
    assert rows[late].state == "held"  # shown and planned again after a change (issue 11: 1)
    assert "cannot render" in (rows[late].last_error or "")
    assert "contact.voornaam" in (rows[late].last_error or "")
    assert not server.handler.received_by(late)
    assert summary.sent == 3 and summary.held == 1 and summary.exit_code == 1


def test_a_reply_timeout_holds_after_a_longer_one_was_answered() -> None:
    """One timer per connection serves every read's deadline (smtp._TransactionProtocol): a short wait
    after a long one must still end at its own deadline, not at the long one's."""
    from outreach.sending.smtp.protocol import ReplyReader as _TransactionProtocol

    async def scenario() -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"220 hello\r\n")
            await reader.readline()  # NOOP: never answered
            await reader.read()  # until the client hangs up
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(
            lambda: _TransactionProtocol(loop), "127.0.0.1", port
        )
        try:
            assert await protocol.read(1, 30.0) == [(220, "hello")]  # timer armed 30 s ahead
            transport.write(b"NOOP\r\n")
            with pytest.raises(TimeoutError) as raised:
                await asyncio.wait_for(protocol.read(1, 0.2), 10)  # the guard: 10 s, far beyond 0.2
            return str(raised.value)
        finally:
            transport.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == "no reply within 0.2 s"


def test_replies_are_parsed_across_reads_and_lines() -> None:
    """Pipelined replies arrive several to a read, split anywhere, multi-line ones included."""
    from outreach.sending.smtp.protocol import ReplyReader as _TransactionProtocol

    loop = asyncio.new_event_loop()
    loop.close()  # never run: the parser only needs it to create waiters, and none is waiting here
    protocol = _TransactionProtocol(loop)
    stream = (
        b"250 2.0.0 queued as 1\r\n250 OK\r\n"
        b"550-5.7.1 first line\r\n550-5.7.1 second line\r\n550 5.7.1 last line\r\n"
        b"354 go ahead\r\n250 done\r\n"
    )
    for cut in (5, 23, 30, 61, 90, len(stream)):  # arbitrary read boundaries, mid-line and mid-reply
        protocol.data_received(stream[:cut])
        stream = stream[cut:]
    assert list(protocol.replies) == [
        (250, "2.0.0 queued as 1"),
        (250, "OK"),
        (550, "5.7.1 first line\n5.7.1 second line\n5.7.1 last line"),
        (354, "go ahead"),
        (250, "done"),
    ]
    assert protocol.lost is None
    protocol.data_received(b"garbage\r\n")
    assert protocol.lost is not None and "malformed" in protocol.lost
