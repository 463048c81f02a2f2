"""The database file is whole after every command (no write-ahead log left behind), and `outreach backup`
makes a consistent copy on SQLite and PostgreSQL (issue 11, item 10)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from outreach.cli import app
from tests.conftest import REPO
from tests.smtpd import SmtpServer


def outreach(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outreach", *args],
        env={
            **os.environ,
            "OUTREACH_DATABASE_URL": f"sqlite:///{folder / 'outreach.db'}",
            "OUTREACH_TEMPLATES": str(REPO / "templates" / "letters"),
            **env,
        },
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_no_write_ahead_log_is_left_after_any_command(
    tmp_path: Path, smtpd: Callable[..., SmtpServer]
) -> None:
    server = smtpd()
    smtp = {
        "OUTREACH_SMTP_HOST": "127.0.0.1",
        "OUTREACH_SMTP_PORT": str(server.port),
        "OUTREACH_SMTP_TLS": "none",
    }
    steps = [
        ["init"],
        [
            "contacts",
            "import",
            str(REPO / "data" / "sample-contacts.csv"),
            "--rejects",
            str(tmp_path / "r.csv"),
        ],
        ["check", "--campaign", "2026"],
        ["approve", "--campaign", "2026", "--by", "Freke"],
        ["send", "--campaign", "2026", "--yes", "--ignore-window"],
        ["status", "--campaign", "2026"],
        ["track", "optout", "--contact", "thijs.vandam@utrecht.example.nl"],
        ["report", "--campaign", "2026"],
    ]
    for step in steps:
        done = outreach(tmp_path, *step, **smtp)
        assert done.returncode == 0, (step, done.stdout[-2000:], done.stderr[-2000:])
        leftovers = sorted(p.name for p in tmp_path.glob("outreach.db-*"))
        assert leftovers == [], (step, leftovers)
    assert len(server.handler.messages) > 0
    # Everything is in the one file: a plain copy of it alone is the whole database.
    copy = tmp_path / "plain-copy.db"
    shutil.copy(tmp_path / "outreach.db", copy)
    with sqlite3.connect(copy) as conn:
        sent = conn.execute("SELECT count(*) FROM delivery WHERE state = 'sent'").fetchone()[0]
    assert sent == len(server.handler.messages)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    assert outreach(tmp_path, "init").returncode == 0
    sample = tmp_path / "sample-contacts.csv"  # its rejects file is written next to it
    shutil.copy(REPO / "data" / "sample-contacts.csv", sample)
    done = outreach(tmp_path, "contacts", "import", str(sample))
    assert done.returncode == 0, done.stderr
    return tmp_path / "outreach.db"


def test_backup_is_consistent_while_another_process_writes(database: Path, tmp_path: Path) -> None:
    # Another process has committed a change that is still only in the WAL (it never checkpoints), and
    # has a second change open in a transaction. The backup has the first, not the second.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('PRAGMA wal_autocheckpoint=0')\n"
            "conn.execute(\"UPDATE contact SET party = 'Gecommitteerd' WHERE id = 1\")\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "conn.execute(\"UPDATE contact SET party = 'Half' WHERE id = 2\")\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        plain = tmp_path / "plain.db"
        shutil.copy(database, plain)  # what a user's `cp` gets: the committed change is missing
        with sqlite3.connect(plain) as conn:
            assert conn.execute("SELECT party FROM contact WHERE id = 1").fetchone()[0] != "Gecommitteerd"

        done = outreach(tmp_path, "backup", str(tmp_path / "kopie.db"))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(
            f"Backed up sqlite:///{database} to {tmp_path / 'kopie.db'} (sqlite backup API"
        )
        assert "55 contacts" in done.stdout
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=10)
    copy = tmp_path / "kopie.db"
    assert sorted(p.name for p in tmp_path.glob("kopie.db*")) == ["kopie.db"]
    assert not list(tmp_path.glob(".kopie.db.*"))  # no temporary file left
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
        assert conn.execute("SELECT party FROM contact WHERE id = 1").fetchone()[0] == "Gecommitteerd"
        assert conn.execute("SELECT party FROM contact WHERE id = 2").fetchone()[0] != "Half"
    listed = outreach(tmp_path, "--database", f"sqlite:///{copy}", "contacts", "list")
    assert listed.returncode == 0 and "daan.dewit@utrecht.example.nl" in listed.stdout


def test_backup_never_overwrites(database: Path, tmp_path: Path) -> None:
    existing = tmp_path / "bestaat.db"
    existing.write_bytes(b"precious")
    done = outreach(tmp_path, "backup", str(existing))
    assert done.returncode == 2
    assert done.stderr.splitlines()[0] == f"Error: {existing} exists: a backup never overwrites a file"
    assert existing.read_bytes() == b"precious"


def test_backup_to_a_full_disk_leaves_nothing(database: Path, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    folder = tmp_path / "vol"
    folder.mkdir()
    # The temporary file the backup writes is a link to /dev/full: every write fails with ENOSPC.
    os.symlink("/dev/full", folder / f".kopie.db.{os.getpid()}.tmp")
    runner = CliRunner()
    result = runner.invoke(app, ["--database", f"sqlite:///{database}", "backup", str(folder / "kopie.db")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot write the backup {folder / 'kopie.db'}: ")
    assert "Traceback" not in result.stderr
    assert not (folder / "kopie.db").exists()


def test_backup_of_postgres_uses_pg_dump(pg_url: str, tmp_path: Path) -> None:
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump/pg_restore (postgresql-client) not installed")
    runner = CliRunner()
    assert runner.invoke(app, ["--database", pg_url, "init"]).exit_code == 0
    sample = str(REPO / "data" / "sample-contacts.csv")
    imported = runner.invoke(
        app, ["--database", pg_url, "contacts", "import", sample, "--rejects", str(tmp_path / "r.csv")]
    )
    assert imported.exit_code == 0, imported.stderr
    dump = tmp_path / "outreach.pgdump"
    result = runner.invoke(app, ["--database", pg_url, "backup", str(dump)])
    assert result.exit_code == 0, result.stderr
    assert "(pg_dump," in result.stdout
    data = subprocess.run(
        ["pg_restore", "--data-only", "--table=contact", "--file=-", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "daan.dewit@utrecht.example.nl" in data


def test_backup_of_postgres_without_pg_dump_says_what_to_install(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--database", pg_url, "init"]).exit_code == 0
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_dump on it
    result = runner.invoke(app, ["--database", pg_url, "backup", str(tmp_path / "x.pgdump")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: cannot back up a PostgreSQL database without pg_dump",
        "Hint: install the PostgreSQL client tools (Debian: apt-get install postgresql-client), "
        "or use the server's own backup",
    ]
