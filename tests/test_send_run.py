"""The send loop against a real aiosmtpd server on 127.0.0.1: exactly once, right headers, right states."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from outreach.models import Delivery
from outreach.sending.run import SendOptions, run_send
from tests.fixtures_sending import CampaignFactory, add_raadsleden, smtp_settings
from tests.smtpd import SmtpServer


def options(**kwargs: object) -> SendOptions:
    values: dict[str, object] = {"concurrency": 4, "backoff_initial": 0.01, "backoff_max": 0.05}
    values.update(kwargs)
    return SendOptions(**values)  # type: ignore[arg-type]


def deliveries(engine: Engine) -> list[Delivery]:
    with Session(engine) as session:
        return list(session.exec(select(Delivery).order_by(col(Delivery.id))))


@pytest.mark.parametrize("compose_process", [False, True], ids=["compose-on-thread", "composer-process"])
def test_every_recipient_gets_exactly_one_letter(
    engine: Engine,
    db_url: str,
    make_campaign: CampaignFactory,
    smtpd: Callable[..., SmtpServer],
    compose_process: bool,
) -> None:
    campaign = make_campaign()
    addresses = add_raadsleden(engine, 60)
    server = smtpd(pipelining=True)
    summary = run_send(
        engine, smtp_settings(db_url, server.port), campaign, options(compose_process=compose_process)
    )
    assert summary.sent == 60
    assert summary.exit_code == 0
    assert sorted(r for m in server.handler.messages for r in m.rcpt_tos) == sorted(addresses)
    rows = deliveries(engine)
    assert {row.state for row in rows} == {"sent"}
    by_token = {row.message_id: row for row in rows}
    for received in server.handler.messages:
        message = email.message_from_bytes(received.content, policy=email.policy.SMTP)
        row = by_token[message["Message-ID"]]
        assert row.message_id == f"<{row.token}@hetvergetenkind.nl>"
        assert message["To"].addresses[0].addr_spec == received.rcpt_tos[0]
        assert received.mail_from == "brieven@hetvergetenkind.nl"
        assert message["List-Unsubscribe"]
    # A second run sends nothing.
    again = run_send(engine, smtp_settings(db_url, server.port), campaign, options())
    assert again.sent == 0 and again.due == 0
    assert len(server.handler.messages) == 60
