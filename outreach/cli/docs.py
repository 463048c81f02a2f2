"""Generate docs/cli.md from the commands' own --help (python -m outreach.cli.docs > docs/cli.md).

tests/test_docs.py fails when docs/cli.md is stale or a command has no help text, so the reference
cannot drift from the code (the approach of sqlite-utils' tests/test_docs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name in sorted(subcommands):
            yield from _walk(subcommands[name], (*path, name))


def commands() -> list[tuple[tuple[str, ...], Any]]:
    from outreach.cli import app

    return list(_walk(typer.main.get_command(app)))


def render() -> str:
    from outreach.cli import app

    runner = CliRunner()
    parts = [
        "# Command reference\n",
        "Generated from the commands' `--help` by `make docs` (`python -m outreach.cli.docs`);",
        "`tests/test_docs.py` fails when this file is out of date.\n",
    ]
    for path, _command in commands():
        title = " ".join(("outreach", *path))
        result = runner.invoke(app, [*path, "--help"], prog_name="outreach", env={"COLUMNS": "100"})
        parts.append(f"## `{title}`\n\n```\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
