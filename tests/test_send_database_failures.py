"""The database failing during a send: one line and exit 1, never a traceback; nothing sent twice
(issue 11: item 22). PostgreSQL cases terminate the sender's backends from the test (as a crash or a
restart of the server would); SQLite cases hold the write lock past the writer's patience."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text

from outreach.db import open_database
from outreach.errors import DatabaseError
from outreach.registry.municipalities import load_municipalities
from outreach.sending.run import SendOptions, SendSummary, run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import SmtpServer


def start_sender(db_url: str, port: int, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.update(
        OUTREACH_DATABASE_URL=db_url,
        OUTREACH_SMTP_HOST="127.0.0.1",
        OUTREACH_SMTP_PORT=str(port),
        OUTREACH_SMTP_TLS="none",
    )
    command = [sys.executable, "-m", "outreach", "send", "--campaign", "testbrief", "--yes", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def assert_one_line_error(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    assert all(line.startswith(("Error: ", "Hint: ")) for line in lines), stderr
    for word in words:
        assert word in errors[0], errors[0]


def terminate_backends(admin_url: str, database: str) -> int:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :db AND pid <> pg_backend_pid()"
                    ),
                    {"db": database},
                ).all()
            )
    finally:
        admin.dispose()


def set_read_only(admin_url: str, database: str, on: bool) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(
                    f'ALTER DATABASE "{database}" SET default_transaction_read_only = {"on" if on else "off"}'
                )
            )
    finally:
        admin.dispose()


def allow_connections(admin_url: str, database: str, allow: bool) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
            )
    finally:
        admin.dispose()


def received_twice(server: SmtpServer) -> list[str]:
    counts = Counter(r for m in server.handler.messages for r in m.rcpt_tos)
    return [address for address, n in counts.items() if n > 1]


@pytest.fixture
def pg_campaign(pg_url: str, campaign_templates: Path) -> Iterator[tuple[Engine, CampaignFactory, str, str]]:
    from tests.conftest import PG_ADMIN_URL

    engine = open_database(pg_url)
    load_municipalities(engine)
    database = pg_url.rsplit("/", 1)[1]
    yield engine, CampaignFactory(campaign_templates, engine), PG_ADMIN_URL, database
    engine.dispose()
    allow_connections(PG_ADMIN_URL, database, True)
    set_read_only(PG_ADMIN_URL, database, False)


def states(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(str(s) for (s,) in conn.execute(text("SELECT state FROM delivery")))


@pytest.mark.postgres
def test_postgresql_going_away_mid_run_is_one_line_and_nothing_is_sent_twice(
    pg_campaign: tuple[Engine, CampaignFactory, str, str], pg_url: str, smtpd: Callable[..., SmtpServer]
) -> None:
    engine, make, admin_url, database = pg_campaign
    make()
    add_raadsleden(engine, 300)
    server = smtpd()
    server.handler.delay = 0.02
    process = start_sender(pg_url, server.port, "--concurrency", "2")
    wait_for(lambda: len(server.handler.messages) >= 10, "the sender to be mid-run")
    # As a crash: the sender's connections die and no new one can be made (settling and the final
    # counts fail as well, and must not hide the first error).
    allow_connections(admin_url, database, False)
    assert terminate_backends(admin_url, database) >= 1
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1
    assert_one_line_error(stderr, "the database failed during the send")

    allow_connections(admin_url, database, True)
    engine.dispose()  # this test's own pooled connections were terminated too
    server.handler.delay = 0
    resumed = start_sender(pg_url, server.port)
    _, stderr = resumed.communicate(timeout=60)
    assert not received_twice(server)
    final = states(engine)
    # At most the two letters in flight when the connection died are 'unknown'; everything else went.
    assert set(final) <= {"sent", "unknown"} and final["sent"] + final["unknown"] == 300
    assert final["unknown"] <= 2
    assert len(server.handler.messages) >= final["sent"]


@pytest.mark.postgres
def test_a_restart_while_postgresql_cannot_write_is_one_line(
    pg_campaign: tuple[Engine, CampaignFactory, str, str], pg_url: str, smtpd: Callable[..., SmtpServer]
) -> None:
    engine, make, _, _ = pg_campaign
    campaign = make()
    add_raadsleden(engine, 5)
    server = smtpd()
    plan = run_send(engine, smtp_settings(pg_url, server.port), campaign, SendOptions(limit=0))
    assert plan.plan is not None and plan.plan.total == 5
    # A sender died (kill -9) while handing two letters over; its rows await recovery.
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE delivery SET state = 'sending', claimed_by = 'elsewhere/1/dead', "
                "lease_until = '2000-01-01' WHERE id IN (SELECT id FROM delivery ORDER BY id LIMIT 2)"
            )
        )
    # The restarted sender finds a database that takes no writes (a standby, a full disk).
    read_only = create_engine(pg_url, connect_args={"options": "-c default_transaction_read_only=on"})
    try:
        with pytest.raises(DatabaseError) as raised:
            run_send(read_only, smtp_settings(pg_url, server.port), campaign, SendOptions())
    finally:
        read_only.dispose()
    assert "\n" not in raised.value.message and "read-only transaction" in raised.value.message
    assert not server.handler.messages

    summary = run_send(engine, smtp_settings(pg_url, server.port), campaign, SendOptions())
    assert summary.counts == {"sent": 3, "unknown": 2}
    assert len(server.handler.messages) == 3


def test_a_sqlite_lock_held_past_the_writers_patience_stops_with_one_line(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from outreach.sending.writer import sqlite

    monkeypatch.setattr(sqlite, "SQLITE_BUSY_TIMEOUT_MS", 300)
    campaign = make_campaign()
    add_raadsleden(engine, 200)
    server = smtpd()
    server.handler.delay = 0.01
    outcome: list[BaseException | SendSummary] = []

    def send() -> None:
        try:
            outcome.append(
                run_send(
                    engine,
                    smtp_settings(db_url, server.port),
                    campaign,
                    SendOptions(concurrency=2, compose_process=False),
                )
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    wait_for(lambda: len(server.handler.messages) >= 10, "the sender to be mid-run")
    database = db_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock ...
    try:
        thread.join(60)
        assert not thread.is_alive()
    finally:
        holder.execute("ROLLBACK")  # ... and lets go only after the sender gave up
        holder.close()
    (error,) = outcome
    assert isinstance(error, DatabaseError), repr(error)
    assert "\n" not in error.message and "locked" in error.message

    # The failed sender's rows stay claimed while its process lives; here it is this test's process,
    # so it is made to look like one that has ended (as `outreach send` would, after its one line).
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE delivery SET claimed_by = :gone WHERE claimed_by IS NOT NULL"),
            {"gone": f"{socket.gethostname()}/999999999/ended"},
        )
    server.handler.delay = 0
    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, SendOptions(concurrency=2))
    assert not received_twice(server)
    # At most the two letters in flight when the writer gave up are 'unknown'; every other one went.
    assert set(summary.counts) <= {"sent", "unknown"} and summary.counts.get("unknown", 0) <= 2
    assert summary.counts["sent"] + summary.counts.get("unknown", 0) == 200


def test_a_restart_when_sqlite_cannot_write_is_one_line(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer]
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 3)
    server = smtpd()
    read_only = create_engine(db_url)

    @event.listens_for(read_only, "connect")
    def _query_only(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")  # as a full disk or a read-only mount would

    try:
        with pytest.raises(DatabaseError) as raised:
            run_send(read_only, smtp_settings(db_url, server.port), campaign, SendOptions())
    finally:
        read_only.dispose()
    assert "\n" not in raised.value.message and "readonly" in raised.value.message.replace("-", "")
    assert not server.handler.messages


def test_a_sqlite_database_made_read_only_mid_run_is_one_line(
    db_url: str, make_campaign: CampaignFactory, smtpd: Callable[..., SmtpServer], engine: Engine
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 200)
    server = smtpd()
    server.handler.delay = 0.005
    # Connections opened from now on cannot write, as after `chmod a-w` on the file: the writer's
    # connection, open since the start, goes on; settling at the end needs a new one and fails.
    sender_engine = create_engine(db_url)
    read_only = threading.Event()

    @event.listens_for(sender_engine, "connect")
    def _maybe_read_only(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.isolation_level = None
        if read_only.is_set():
            dbapi_connection.execute("PRAGMA query_only = ON")

    outcome: list[BaseException | SendSummary] = []

    def send() -> None:
        try:
            options = SendOptions(concurrency=2, compose_process=False)
            outcome.append(run_send(sender_engine, smtp_settings(db_url, server.port), campaign, options))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=send)
    thread.start()
    wait_for(lambda: len(server.handler.messages) >= 10, "the sender to be mid-run")
    read_only.set()
    sender_engine.dispose()  # connections in the pool go; the writer's (checked out) stays
    thread.join(60)
    assert not thread.is_alive()
    sender_engine.dispose()
    (result,) = outcome
    assert isinstance(result, DatabaseError), repr(result)
    assert "\n" not in result.message and "readonly" in result.message

    summary = run_send(engine, smtp_settings(db_url, server.port), campaign, SendOptions(concurrency=2))
    assert not received_twice(server)
    assert summary.counts.get("sent", 0) == 200 - summary.counts.get("unknown", 0)
