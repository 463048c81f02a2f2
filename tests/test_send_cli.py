"""`outreach send` and `outreach status` through the command line."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import Engine
from typer.testing import CliRunner

from outreach.cli import app
from tests.fixtures_sending import CampaignFactory, add_raadsleden
from tests.smtpd import Fault, SmtpServer


def test_send_then_status_json(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    runner: CliRunner,
) -> None:
    make_campaign()
    addresses = add_raadsleden(engine, 6)
    server = smtpd()
    server.handler.faults = {addresses[0]: Fault("rcpt", "550 5.1.1 no such user")}
    env = {
        "OUTREACH_DATABASE_URL": db_url,
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(server.port),
        "OUTREACH_SMTP_TLS": "none",
    }
    result = runner.invoke(app, ["send", "--campaign", "testbrief", "--yes"], env=env)
    assert result.exit_code == 1, result.output
    assert "Sent 5, deferred 0, failed 1" in result.stdout
    assert "outreach status --campaign testbrief" in result.stderr

    status = runner.invoke(app, ["status", "--campaign", "testbrief", "--json"], env=env)
    assert status.exit_code == 0, status.output
    document = json.loads(status.stdout)
    assert document["counts"]["sent"] == 5 and document["counts"]["failed"] == 1
    assert document["complete"] is False
    assert document["recent_errors"][0]["email"] == addresses[0]
    assert document["recent_errors"][0]["code"] == 550


def test_send_without_yes_and_without_a_terminal_refuses(
    engine: Engine, db_url: str, make_campaign: CampaignFactory, runner: CliRunner
) -> None:
    make_campaign()
    add_raadsleden(engine, 2)
    result = runner.invoke(app, ["send", "--campaign", "testbrief"], env={"OUTREACH_DATABASE_URL": db_url})
    assert result.exit_code == 2
    assert "confirm with --yes" in result.stderr


def test_status_of_an_unknown_campaign_is_one_line(db_url: str, engine: Engine, runner: CliRunner) -> None:
    result = runner.invoke(app, ["status", "--campaign", "nope"], env={"OUTREACH_DATABASE_URL": db_url})
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: campaign nope has no deliveries yet")


def test_the_progress_bar_counts_every_letter_though_it_redraws_rarely() -> None:
    import io

    from rich.console import Console

    from outreach.cli.sending import _RichProgress

    console = Console(file=io.StringIO(), force_terminal=True, width=140)
    progress = _RichProgress(console)
    progress.start(250)
    for n in range(250):
        progress.advance("failed" if n % 5 == 0 else "sent")
    progress.stop()
    task = progress._bar.tasks[0]
    assert task.completed == 250
    assert (task.fields["sent"], task.fields["failed"], task.fields["other"]) == (200, 50, 0)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert "250/250" in output and "sent 200" in output and "failed 50" in output
