"""What `outreach send` and `outreach status` tell the user (issue 11: items 3, 13, 14, 18)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from outreach.cli import app
from outreach.errors import SmtpError
from outreach.sending.run import SendOptions, run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import Fault, SmtpServer, free_port, refusing_server, silent_server


def smtp_env(db_url: str, port: int) -> dict[str, str]:
    return {
        "OUTREACH_DATABASE_URL": db_url,
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(port),
        "OUTREACH_SMTP_TLS": "none",
        "OUTREACH_SMTP_TIMEOUT": "0.5",
    }


@contextmanager
def nobody_listening() -> Iterator[int]:
    yield free_port()  # nothing listens there: the connection is refused


SERVERS = {"refusing": refusing_server, "silent": silent_server, "unknown": nobody_listening}
REASONS = {"refusing": r"421 4\.3\.2 too busy", "silent": r"127\.0\.0\.1:\d+", "unknown": r"127\.0\.0\.1:\d+"}


# --- item 3: the connection's reason, whatever the limit -------------------------------------------


@pytest.mark.parametrize("kind", sorted(SERVERS))
@pytest.mark.parametrize("limit", [1, 5, None])
def test_a_limit_below_the_concurrency_still_reports_why_no_connection_opened(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, kind: str, limit: int | None
) -> None:
    campaign = make_campaign()
    add_raadsleden(engine, 10)
    options = SendOptions(concurrency=8, limit=limit, backoff_initial=0.01, backoff_max=0.02)
    with SERVERS[kind]() as port, pytest.raises(SmtpError, match=REASONS[kind]):
        run_send(engine, smtp_settings(db_url, port, smtp_timeout=0.3), campaign, options)


def test_send_with_a_small_limit_prints_the_connection_error(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, runner: CliRunner
) -> None:
    make_campaign()
    add_raadsleden(engine, 10)
    with refusing_server() as port:
        result = runner.invoke(
            app, ["send", "--campaign", "testbrief", "--yes", "--limit", "5"], env=smtp_env(db_url, port)
        )
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot open a connection: ")
    assert "421 4.3.2 too busy" in result.stderr


# --- item 13: sending windows in Amsterdam time ------------------------------------------------------


def test_the_sending_window_is_reported_in_amsterdam_time_with_its_zone(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    from outreach.letters.campaign import AMSTERDAM

    later = datetime.now(AMSTERDAM) + timedelta(days=2)
    day = ["ma", "di", "wo", "do", "vr", "za", "zo"][later.weekday()]
    make_campaign(extra=f'\n[sending.window]\ndays = ["{day}"]\nstart = "08:00"\nend = "08:01"\n')
    add_raadsleden(engine, 2)
    server = smtpd()
    result = runner.invoke(
        app, ["send", "--campaign", "testbrief", "--yes"], env=smtp_env(db_url, server.port)
    )
    assert result.exit_code == 1, result.output
    opens = later.replace(hour=8, minute=0)
    assert f"it opens next at {opens:%Y-%m-%d} 08:00 {opens:%Z} (Europe/Amsterdam)" in result.stdout
    assert "UTC" not in result.stdout
    assert not server.handler.messages


# --- item 14: dry runs --------------------------------------------------------------------------------


def test_a_dry_run_that_wrote_every_letter_exits_0(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, runner: CliRunner, tmp_path: Path
) -> None:
    make_campaign()
    add_raadsleden(engine, 4)
    outbox = tmp_path / "out"
    result = runner.invoke(
        app,
        ["send", "--campaign", "testbrief", "--dry-run", "--outbox", str(outbox)],
        env={"OUTREACH_DATABASE_URL": db_url},
    )
    assert result.exit_code == 0, result.output
    assert len(list(outbox.glob("*.eml"))) == 4
    assert f"Dry run: wrote 4 letters to {outbox}; nothing was sent." in result.stdout


def test_a_dry_run_with_limit_0_says_so_and_names_no_none(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, runner: CliRunner
) -> None:
    make_campaign()
    add_raadsleden(engine, 3)
    result = runner.invoke(
        app,
        ["send", "--campaign", "testbrief", "--dry-run", "--limit", "0"],
        env={"OUTREACH_DATABASE_URL": db_url},
    )
    assert result.exit_code == 0, result.output
    assert "None" not in result.output
    assert "Dry run: no letters written (--limit 0); nothing was sent." in result.stdout
    assert not Path("outbox").exists()


# --- item 18: what to do next; -c ---------------------------------------------------------------------


def test_when_only_unknown_letters_remain_status_and_send_suggest_retry_unknown(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 3)
    server = smtpd()
    server.handler.faults = {addresses[1]: Fault("disconnect-after-body", times=1)}
    env = smtp_env(db_url, server.port)
    sent = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert sent.exit_code == 1, sent.output
    assert "Campaign testbrief: sent 2, unknown 1." in sent.stdout
    assert "outreach send --campaign testbrief --retry-unknown" in sent.stderr

    status = runner.invoke(app, ["status", "-c", "testbrief"], env=env)
    assert status.exit_code == 0, status.output
    assert "Continue with: outreach send --campaign testbrief\n" not in status.stdout
    assert "Not complete: 1 letter may or may not have arrived" in status.stdout
    assert status.stdout.rstrip().endswith("outreach send --campaign testbrief --retry-unknown")

    again = runner.invoke(app, ["send", "-c", "testbrief", "--yes"], env=env)
    assert again.exit_code == 1
    assert "Nothing due for campaign testbrief." in again.stdout
    assert "--retry-unknown" in again.stderr
    assert len(server.handler.received_by(addresses[1])) == 1  # never resent without being asked

    report = runner.invoke(app, ["report", "-c", "testbrief"], env=env)
    assert report.exit_code == 0, report.output
    assert "testbrief" in report.stdout


def test_status_still_says_continue_with_send_when_letters_wait(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    make_campaign()
    add_raadsleden(engine, 3)
    server = smtpd()
    env = smtp_env(db_url, server.port)
    assert runner.invoke(app, ["send", "-c", "testbrief", "--yes", "--limit", "1"], env=env).exit_code == 1
    status = runner.invoke(app, ["status", "-c", "testbrief"], env=env)
    assert status.stdout.rstrip().endswith("Not complete. Continue with: outreach send --campaign testbrief")
