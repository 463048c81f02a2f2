"""Crashes and several senders: a killed sender resumes without duplicates; on PostgreSQL three senders
share one campaign and every recipient gets exactly one letter."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from outreach.db import open_database
from outreach.models import Contact, Delivery
from outreach.registry.municipalities import load_municipalities
from outreach.sending.run import SendOptions, run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import SmtpServer


def sender(db_url: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        OUTREACH_DATABASE_URL=db_url,
        OUTREACH_SMTP_HOST="127.0.0.1",
        OUTREACH_SMTP_PORT=str(port),
        OUTREACH_SMTP_TLS="none",
    )
    command = [sys.executable, "-m", "outreach", "send", "--campaign", "testbrief", "--yes", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def final_states(engine: Engine) -> dict[str, str]:
    with Session(engine) as session:
        rows = session.exec(
            select(Contact.email_normalized, Delivery.state).join(
                Delivery, col(Delivery.contact_id) == col(Contact.id)
            )
        ).all()
    return {address or "": state for address, state in rows}


def assert_exactly_once(server: SmtpServer, engine: Engine, addresses: list[str]) -> None:
    received = Counter(r for m in server.handler.messages for r in m.rcpt_tos)
    assert max(received.values()) == 1, [a for a, n in received.items() if n > 1][:5]
    states = final_states(engine)
    assert set(states) == set(addresses)
    for address, state in states.items():
        if state == "sent":
            assert received[address] == 1, address
        else:
            # Killed while this letter was being handed over: the server may or may not have it.
            assert state == "unknown", (address, state)


def test_a_killed_sender_resumes_without_duplicates_or_loss(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 300)
    server = smtpd(pipelining=True)
    server.handler.delay = 0.01
    process = sender(db_url, server.port, "--concurrency", "3")
    wait_for(lambda: len(server.handler.messages) >= 60, "the sender to be mid-run")
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    assert len(server.handler.messages) < 300

    server.handler.delay = 0
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, SendOptions(concurrency=3))
    assert summary.recovery is not None and summary.recovery.workers  # the dead worker was noticed
    assert summary.counts.get("unknown", 0) <= 3  # at most one letter per connection was in flight
    assert_exactly_once(server, engine, addresses)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"  # a zombie waiting for init to reap it


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc to find the child")
def test_a_killed_sender_with_a_composer_process_leaves_no_orphan_and_no_duplicate(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 1200, domain_count=50)  # enough for a composer process
    server = smtpd(pipelining=True)
    server.handler.delay = 0.01
    process = sender(db_url, server.port, "--concurrency", "3")
    wait_for(lambda: len(server.handler.messages) >= 30 and bool(_children(process.pid)), "a composer")
    composers = _children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    wait_for(lambda: all(_gone(pid) for pid in composers), "the composer process to exit", timeout=20)

    server.handler.delay = 0
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, SendOptions(concurrency=4))
    assert summary.recovery is not None and summary.recovery.workers
    assert summary.counts.get("unknown", 0) <= 3
    assert_exactly_once(server, engine, addresses)


def test_ctrl_c_settles_what_is_in_flight_and_says_how_to_resume(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 200)
    server = smtpd()
    server.handler.delay = 0.01
    process = sender(db_url, server.port, "--concurrency", "2")
    wait_for(lambda: len(server.handler.messages) >= 20, "the sender to be mid-run")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert b"Resume with: outreach send --campaign testbrief" in stderr
    states = final_states(engine)
    assert "sending" not in states.values() and "unknown" not in states.values()
    assert sum(1 for s in states.values() if s == "sent") == len(server.handler.messages)
    with Session(engine) as session:
        assert not session.exec(select(Delivery).where(col(Delivery.claimed_by).is_not(None))).all()

    server.handler.delay = 0
    resumed = sender(db_url, server.port)
    assert resumed.wait(60) == 0
    assert_exactly_once(server, engine, addresses)
    assert set(final_states(engine).values()) == {"sent"}


@pytest.fixture
def pg_campaign(pg_url: str, campaign_templates: Path) -> tuple[Engine, CampaignFactory]:
    engine = open_database(pg_url)
    load_municipalities(engine)
    return engine, CampaignFactory(campaign_templates, engine)


@pytest.mark.postgres
def test_planning_on_postgresql_counts_what_it_created(pg_campaign: tuple[Engine, CampaignFactory]) -> None:
    from outreach.sending.plan import plan_deliveries

    engine, make = pg_campaign
    campaign = make()
    add_raadsleden(engine, 40)
    first = plan_deliveries(engine, campaign)
    assert (first.created, first.total) == (40, 40)
    add_raadsleden(engine, 5, start=40)
    again = plan_deliveries(engine, campaign)
    assert (again.created, again.total) == (5, 45)
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_three_senders_on_postgresql_send_each_letter_once(
    pg_url: str, pg_campaign: tuple[Engine, CampaignFactory], smtpd: Callable[..., SmtpServer]
) -> None:
    engine, make = pg_campaign
    make()
    addresses = add_raadsleden(engine, 3000, domain_count=200)
    server = smtpd(pipelining=True)
    processes = [sender(pg_url, server.port, "--concurrency", "4") for _ in range(3)]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], [out + err[-500:] for out, err in outputs]
    assert_exactly_once(server, engine, addresses)
    assert set(final_states(engine).values()) == {"sent"}
    assert len(server.handler.messages) == 3000
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_killed_worker_on_postgresql_loses_nothing(
    pg_url: str, pg_campaign: tuple[Engine, CampaignFactory], smtpd: Callable[..., SmtpServer]
) -> None:
    engine, make = pg_campaign
    make()
    addresses = add_raadsleden(engine, 800, domain_count=100)
    server = smtpd(pipelining=True)
    server.handler.delay = 0.005
    victim = sender(pg_url, server.port, "--concurrency", "3")
    survivor = sender(pg_url, server.port, "--concurrency", "3")
    wait_for(lambda: len(server.handler.messages) >= 150, "both senders to be mid-run")
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    survivor.communicate(timeout=240)
    # The survivor took over the victim's claimed rows (its process is gone); a rerun finds nothing
    # left but, at most, letters that were in flight when the victim died.
    rerun = sender(pg_url, server.port)
    rerun.communicate(timeout=120)
    assert_exactly_once(server, engine, addresses)
    states = Counter(final_states(engine).values())
    assert states["sent"] + states["unknown"] == 800 and states["unknown"] <= 3
    engine.dispose()
