"""Retries that do not hold a connection, destinations that slow down, a server that is down, and MX
groups, against the real test SMTP server on 127.0.0.1 (with a resolver the test provides)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from outreach.errors import SmtpError
from outreach.models import utcnow
from outreach.sending.claim import DELIVERY
from outreach.sending.run import run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import Fault, SmtpServer
from tests.test_send_faults import options, states

FROM = "brieven@hetvergetenkind.nl"


def test_a_letter_waiting_for_its_retry_does_not_hold_the_connection(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 30)
    greylisted = addresses[0]
    server = smtpd(pipelining=True)
    server.handler.faults = {greylisted: Fault("rcpt", "451 4.7.1 greylisted, try again later", times=1)}
    # One connection and a backoff far longer than the other 29 letters take on loopback: the
    # connection sends them all meanwhile, and the retried letter last.
    summary = run_send(
        engine,
        smtp_settings(db_url, server.port),
        campaign,
        options(concurrency=1, backoff_initial=3.0, backoff_max=3.0),
    )
    order = [m.rcpt_tos[0] for m in server.handler.messages]
    assert summary.sent == 30 and order[-1] == greylisted and len(set(order)) == 30
    row = states(engine)[greylisted]
    assert (row.state, row.attempts) == ("sent", 2)
    assert server.handler.sessions == 1  # the refused RCPT cost no connection


def test_a_letter_whose_connection_was_dropped_goes_again_at_once(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 30, domain_count=30)
    dropped = addresses[0]
    server = smtpd(pipelining=True)
    server.handler.faults = {dropped: Fault("disconnect-at-rcpt", times=1)}
    # The drop says nothing about the letter: it goes back to the scheduler at once, ahead of the
    # letters claimed after it (batches of five), not after a backoff longer than the whole run.
    summary = run_send(
        engine,
        smtp_settings(db_url, server.port),
        campaign,
        options(concurrency=1, batch_size=5, backoff_initial=30.0, backoff_max=30.0),
    )
    order = [m.rcpt_tos[0] for m in server.handler.messages]
    assert summary.sent == 30 and len(set(order)) == 30
    assert order.index(dropped) < 15
    row = states(engine)[dropped]
    assert (row.state, row.attempts) == ("sent", 1)  # the dropped try did not count against it
    assert server.handler.sessions == 2


def test_a_server_that_stops_answering_is_down_and_never_fails_a_letter(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 6)
    server = smtpd(pipelining=True)
    server.handler.faults = {FROM: Fault("hang-at-mail")}  # greets, then never answers a letter
    settings = smtp_settings(db_url, server.port, smtp_timeout=0.2)
    # Budgets that today's code used up in one run: one try per run, a maximum of two.
    tight = options(concurrency=2, attempts_per_run=1, max_attempts=2, connect_attempts=4)
    for _ in range(3):
        with pytest.raises(SmtpError, match=r"stopped answering \(4 tries in a row failed") as caught:
            run_send(engine, settings, campaign, tight)
        assert "\n" not in str(caught.value)
        with engine.begin() as conn:  # the next run comes when their retry time has come
            conn.execute(DELIVERY.update().values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    rows = states(engine).values()
    assert {d.state for d in rows} <= {"pending", "deferred"}
    assert {d.attempts for d in rows} == {0}  # those tries counted against the server
    assert {d.claimed_by for d in rows} == {None}
    assert not server.handler.messages


class FakeResolver:
    """MX answers for the test's domains, as dnspython would give them; counts the questions."""

    def __init__(self, mx: dict[str, str]) -> None:
        self.mx = mx
        self.asked: list[str] = []

    def mx_hosts(self, domain: str) -> list[str] | None:
        self.asked.append(domain)
        host = self.mx.get(domain)
        return [host] if host else []


def test_a_throttling_mx_group_slows_down_while_other_domains_keep_their_pace(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 60, domain_count=6)  # gemeente0.nl ... gemeente5.nl
    exchange = {"gemeente0.nl", "gemeente1.nl", "gemeente2.nl"}
    resolver = FakeResolver({d: f"{d.replace('.', '-')}.mail.protection.outlook.com" for d in exchange})
    server = smtpd(pipelining=True)
    throttled = [a for a in addresses if a.split("@")[1] in exchange]
    server.handler.faults = {
        a: Fault("rcpt", "451 4.7.650 The mail server has been temporarily rate limited") for a in throttled
    }
    summary = run_send(
        engine,
        smtp_settings(db_url, server.port),
        campaign,
        options(destination_pause=0.05, destination_pause_max=0.4),
        mx_resolver=resolver,
    )
    rows = states(engine)
    others = set(addresses) - set(throttled)
    assert {rows[a].state for a in others} == {"sent"} and summary.sent == len(others) == 30
    # The Exchange group as a whole slowed down and then gave up for this run: its 30 letters were
    # tried a few times in all, not three times each, and wait for a later run with no try counted.
    tries = Counter(server.handler.tried)
    assert sum(tries[a] for a in throttled) < len(throttled)
    assert {rows[a].state for a in throttled} == {"deferred"}
    assert {rows[a].attempts for a in throttled} == {0}
    assert any("slow down" in (rows[a].last_error or "") for a in throttled)
    assert sorted(resolver.asked) == sorted({a.split("@")[1] for a in addresses})  # once per domain


def test_without_mx_lookups_a_throttling_domain_alone_slows_down(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 40, domain_count=4)
    throttled = [a for a in addresses if a.endswith("@gemeente0.nl")]
    server = smtpd()
    server.handler.faults = {a: Fault("rcpt", "452 4.3.2 system not accepting messages") for a in throttled}
    summary = run_send(
        engine,
        smtp_settings(db_url, server.port),
        campaign,
        options(destination_pause=0.05, destination_pause_max=0.2),
    )
    rows = states(engine)
    assert summary.sent == 30 and {rows[a].state for a in set(addresses) - set(throttled)} == {"sent"}
    assert {rows[a].state for a in throttled} == {"deferred"}
