from __future__ import annotations

from pathlib import Path

from outreach.cli import docs

REPO = Path(__file__).resolve().parent.parent


def test_every_command_has_help() -> None:
    missing = [" ".join(path) or "outreach" for path, cmd in docs.commands() if not (cmd.help or "").strip()]
    assert missing == []


def test_cli_reference_is_current() -> None:
    expected = docs.render()
    actual = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/cli.md is stale: run `make docs`"
