"""`outreach demo` runs a whole campaign on a fresh machine: the README's first set-up command."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from collections import Counter
from pathlib import Path

from sqlalchemy import create_engine, text


def test_demo_runs_a_campaign_end_to_end_and_sends_each_letter_once(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "outreach", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    # Every command closed the database: the write-ahead log is folded back into the file.
    assert sorted(p.name for p in folder.glob("outreach.db*")) == ["outreach.db"]

    engine = create_engine(f"sqlite:///{folder / 'outreach.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM delivery GROUP BY state")).all()
        states: dict[str, int] = {str(state): int(count) for state, count in rows}
        sent_to = {
            row[0]
            for row in conn.execute(
                text(
                    "SELECT c.email_normalized FROM delivery d JOIN contact c ON c.id = d.contact_id"
                    " WHERE d.state = 'sent'"
                )
            )
        }
        approved = conn.execute(text("SELECT count(*) FROM approval")).scalar_one()
        events = conn.execute(text("SELECT kind FROM event ORDER BY id")).scalars().all()
        suppressed = conn.execute(text("SELECT email_key, reason FROM suppression")).all()
    engine.dispose()
    assert approved == 1
    assert events == ["reply", "opt-out"]
    assert suppressed == [("thijs.vandam@utrecht.example.nl", "opt-out")]
    assert set(states) == {"sent"} and states["sent"] > 0

    # What the sink received: one message per delivery, each addressed to its own recipient.
    messages = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted((folder / "sink").glob("*.eml"))
    ]
    assert len(messages) == states["sent"]
    to_counts = Counter(str(m["To"].addresses[0].addr_spec) for m in messages)
    assert set(to_counts) == sent_to
    assert max(to_counts.values()) == 1  # the second `send` in the demo sent nothing again
    assert len({m["Message-ID"] for m in messages}) == len(messages)
    first = messages[0]
    assert first.get_content_type() == "multipart/mixed"
    assert [part.get_filename() for part in first.iter_attachments()] == ["handreiking-gezinshulp-eerst.pdf"]

    # The reviewer's files are there too.
    assert (folder / "preview" / "index.html").is_file()
    assert len(list((folder / "preview").glob("*.eml"))) == states["sent"]
