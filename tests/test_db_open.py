"""Opening the database as a user meets it: a file that is not SQLite, a mistyped path, a database another
process is writing to, a read-only copy (issue 11, items 4, 9 and 16)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from outreach.cli import app
from outreach.db import open_database
from outreach.errors import DatabaseError
from tests.conftest import REPO

# Every command that opens the database, with the arguments it needs to get that far.
DATABASE_COMMANDS = [
    ["init"],
    ["contacts", "list"],
    ["contacts", "show", "iemand@gemeente.nl"],
    ["contacts", "import", str(REPO / "data" / "sample-contacts.csv")],
    ["contacts", "export", "iemand@gemeente.nl"],
    ["campaign", "list"],
    ["check", "--campaign", "2026"],
    ["preview", "--campaign", "2026"],
    ["approve", "--campaign", "2026", "--by", "Freke"],
    ["send", "--campaign", "2026", "--yes", "--dry-run"],
    ["status", "--campaign", "2026"],
    ["report", "--campaign", "2026"],
    ["inbox", "unmatched"],
    ["track", "optout", "--contact", "iemand@gemeente.nl"],
]


def run(runner: CliRunner, database: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--database", database, *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_csv_given_as_database_is_one_line_for_every_command(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    csv = tmp_path / "raadsleden.csv"
    csv.write_text("Voornaam;Achternaam;E-mail\nAnouk;Jansen;a.jansen@utrecht.nl\n", encoding="utf-8")
    before = csv.read_bytes()
    code, out, err = run(runner, f"sqlite:///{csv}", *command)
    assert code == 1, out + err
    assert err.splitlines()[0] == (
        f"Error: {csv} is not an SQLite database (it looks like a text file, a CSV list?)"
    )
    assert "Traceback" not in out + err
    assert len(err.splitlines()) <= 2  # the error and its hint
    assert csv.read_bytes() == before  # nothing written into the user's file


def test_an_xlsx_given_as_database_is_named_as_such(
    runner: CliRunner, tmp_path: Path, write_xlsx: object
) -> None:
    from openpyxl import Workbook

    book = tmp_path / "lijst.xlsx"
    Workbook().save(book)
    code, _, err = run(runner, f"sqlite:///{book}", "contacts", "list")
    assert code == 1
    assert err.splitlines()[0] == (
        f"Error: {book} is not an SQLite database (it looks like a ZIP archive, such as an XLSX workbook)"
    )


@pytest.mark.parametrize(
    "command", [c for c in DATABASE_COMMANDS if c[0] != "init"], ids=lambda c: " ".join(c[:2])
)
def test_a_mistyped_path_creates_no_database(runner: CliRunner, tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "outreahc.db"
    code, out, err = run(runner, f"sqlite:///{missing}", *command)
    assert code == 1, out + err
    assert err.splitlines() == [
        f"Error: there is no database at {missing}",
        "Hint: create one with `outreach init`, or point --database (OUTREACH_DATABASE_URL) at yours",
    ]
    assert not missing.exists()
    assert not list(tmp_path.glob("outreahc.db*"))


def test_an_empty_sqlite_file_is_not_an_outreach_database(runner: CliRunner, tmp_path: Path) -> None:
    other = tmp_path / "andere.db"
    sqlite3.connect(other).execute("CREATE TABLE notities (tekst TEXT)").connection.commit()
    code, _, err = run(runner, f"sqlite:///{other}", "contacts", "list")
    assert code == 1
    assert err.splitlines()[0] == f"Error: {other} is an SQLite database, but not one of outreach"
    with sqlite3.connect(other) as conn:  # left as it was: no outreach tables added
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == [
            "notities"
        ]


def test_init_and_demo_are_the_commands_that_create(runner: CliRunner, tmp_path: Path) -> None:
    fresh = tmp_path / "nieuw.db"
    code, out, err = run(runner, f"sqlite:///{fresh}", "init")
    assert code == 0, err
    assert out.startswith(f"Created database sqlite:///{fresh}")
    code, _, err = run(runner, f"sqlite:///{fresh}", "contacts", "list")
    assert code == 0, err
    assert "No contacts match." in err


def test_the_library_can_still_create_a_database(tmp_path: Path) -> None:
    path = tmp_path / "lib.db"
    with pytest.raises(DatabaseError, match="there is no database at"):
        open_database(f"sqlite:///{path}", create=False)
    assert not path.exists()
    open_database(f"sqlite:///{path}").dispose()  # tests and scripts: create=True by default
    open_database(f"sqlite:///{path}", create=False).dispose()


def test_postgres_without_outreach_tables_is_not_created(pg_url: str, runner: CliRunner) -> None:
    code, _, err = run(runner, pg_url, "contacts", "list")
    assert code == 1
    assert err.splitlines()[0].startswith("Error: there is no outreach database at postgresql+psycopg://")
    engine = open_database(pg_url, upgrade=False)
    with engine.connect() as conn:
        tables = conn.execute(
            text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
        )
        assert tables.scalar() == 0
    engine.dispose()


# ---- item 9: readers are never blocked ---------------------------------------------------------------


@pytest.fixture
def populated(tmp_path: Path, runner: CliRunner) -> str:
    url = f"sqlite:///{tmp_path / 'outreach.db'}"
    assert run(runner, url, "init")[0] == 0
    sample = str(REPO / "data" / "sample-contacts.csv")
    code, _, err = run(runner, url, "contacts", "import", sample, "--rejects", str(tmp_path / "r.csv"))
    assert code == 0, err
    return url


@pytest.fixture
def writer_holding_the_lock(tmp_path: Path, populated: str) -> Iterator[None]:
    """Another process in the middle of a write transaction, as a sender or an import is."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "conn.execute('BEGIN IMMEDIATE')\n"
            "conn.execute(\"UPDATE contact SET party = 'X' WHERE id = 1\")\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(tmp_path / "outreach.db"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    try:
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


READERS = [
    ["status", "--campaign", "2026"],
    ["contacts", "list"],
    ["contacts", "show", "daan.dewit@utrecht.example.nl"],
    ["report", "--campaign", "2026"],
    ["campaign", "list"],
    ["check", "--campaign", "2026"],
]


def _outreach(url: str, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    as_user = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": "/tmp"}
    if user is not None:
        # Another user cannot write the coverage data file of `make test`'s measured subprocesses.
        env = {name: value for name, value in env.items() if not name.startswith("COVERAGE_")}
    return subprocess.run(
        [*as_user, sys.executable, "-m", "outreach", "--database", url, *args],
        env=env,
        cwd="/tmp",
        capture_output=True,
        text=True,
        timeout=25,  # the busy timeout is 30 s: a reader that waits for the lock fails here
    )


@pytest.mark.parametrize("command", READERS, ids=lambda c: " ".join(c[:2]))
def test_readers_are_not_blocked_by_a_writer(
    populated: str, writer_holding_the_lock: None, command: list[str]
) -> None:
    done = _outreach(populated, *command)
    assert done.returncode in (0, 1), done.stderr  # check: 1 when letters cannot render is fine
    assert "locked" not in done.stderr
    assert "Traceback" not in done.stderr
    if command[0] == "contacts" and command[1] == "list":
        assert "daan.dewit@utrecht.example.nl" in done.stdout


def test_a_writer_still_waits_for_the_lock_instead_of_failing(
    populated: str, writer_holding_the_lock: None, tmp_path: Path
) -> None:
    # The same situation for a writer: it queues behind the lock (busy_timeout), so it does not finish
    # while the other transaction is open. Shown with a short timeout on our side.
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "outreach",
                "--database",
                populated,
                "track",
                "optout",
                "--contact",
                "daan.dewit@utrecht.example.nl",
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            timeout=3,
        )


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder outside pytest's private tmp_path, so that another user (nobody) can reach it."""
    folder = Path(tempfile.mkdtemp(prefix="outreach-ro-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        (folder / "kopie").chmod(0o755) if (folder / "kopie").exists() else None
        shutil.rmtree(folder)


def _read_only_copy(source: str, folder: Path, *, writable_folder: bool) -> tuple[str, int | None]:
    """A copy of the database that this user cannot write: chmod 444, and as root (which ignores file
    modes) the commands run as nobody."""
    folder.mkdir()
    copy = folder / "kopie.db"
    shutil.copy(source.removeprefix("sqlite:///"), copy)
    user = 65534 if os.geteuid() == 0 else None
    if user is not None and shutil.which("setpriv") is None:
        pytest.skip("running as root, which ignores file modes, and setpriv (util-linux) is absent")
    if user is not None:
        os.chown(copy, user, user)
        if writable_folder:
            os.chown(folder, user, user)
    copy.chmod(0o444)
    folder.chmod(0o755 if writable_folder else 0o555)
    return f"sqlite:///{copy}", user


@pytest.mark.parametrize("writable_folder", [True, False], ids=["own-folder", "read-only-folder"])
def test_a_read_only_copy_can_be_read(populated: str, public_dir: Path, writable_folder: bool) -> None:
    url, user = _read_only_copy(populated, public_dir / "kopie", writable_folder=writable_folder)
    before = Path(url.removeprefix("sqlite:///")).read_bytes()
    for command in READERS:
        done = _outreach(url, *command, user=user)
        assert done.returncode in (0, 1), (command, done.stderr)
        assert "readonly" not in done.stderr and "Traceback" not in done.stderr, (command, done.stderr)
    listed = _outreach(url, "contacts", "list", user=user)
    assert "daan.dewit@utrecht.example.nl" in listed.stdout
    # A command that writes says why it cannot, in one line.
    optout = _outreach(url, "track", "optout", "--contact", "daan.dewit@utrecht.example.nl", user=user)
    assert optout.returncode == 1
    assert optout.stderr.splitlines()[0].startswith("Error: ")
    assert "read-only" in optout.stderr and "Traceback" not in optout.stderr
    assert Path(url.removeprefix("sqlite:///")).read_bytes() == before
