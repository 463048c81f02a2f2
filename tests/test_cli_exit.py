"""The `outreach` process ends without the interpreter's teardown (outreach.cli._exit_now); what a normal
exit guarantees must still hold: every byte of output reaches a pipe, the exit code is the command's, and
the database is closed (SQLite's write-ahead log folded back into the file and removed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def outreach(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # stdout to a pipe is then block-buffered: the flush must happen
    env.update(OUTREACH_DATABASE_URL=f"sqlite:///{folder / 'outreach.db'}", OUTREACH_TEMPLATES=str(folder))
    return subprocess.run(
        [sys.executable, "-m", "outreach", *args],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_output_exit_code_and_database_survive_the_fast_exit(tmp_path: Path) -> None:
    contacts = tmp_path / "contacts.csv"
    shutil.copy(REPO / "data" / "sample-contacts.csv", contacts)
    assert outreach(tmp_path, "init").returncode == 0
    imported = outreach(tmp_path, "contacts", "import", str(contacts))
    assert imported.returncode == 0, imported.stderr
    # Written and closed: no write-ahead log left behind for the next process to recover.
    assert (tmp_path / "outreach.db").exists()
    assert not (tmp_path / "outreach.db-wal").exists()

    # Far more than one buffer of output through a pipe: all of it arrives, and it is whole JSON.
    listed = outreach(tmp_path, "contacts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout) > 16_384
    assert listed.stdout.endswith("]\n")  # the final newline sat in the buffer until the flush
    people = json.loads(listed.stdout)
    inserted = re.search(r"inserted\s+(\d+)", imported.stdout)
    assert inserted is not None, imported.stdout
    assert len(people) == int(inserted.group(1)) > 0

    # A command that fails keeps its exit code and its whole one-line error.
    failed = outreach(tmp_path, "send", "--campaign", "no-such-campaign", "--yes")
    assert failed.returncode not in (0, 120)
    assert failed.stderr.startswith("Error: ") and "no-such-campaign" in failed.stderr
    assert failed.stderr.endswith("\n")
