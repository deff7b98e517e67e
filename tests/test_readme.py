"""The README's command table names every command the CLI has, and nothing it lacks."""

from __future__ import annotations

import re
from pathlib import Path

import click

from meshpki.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def _commands(group: click.Group, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            names |= _commands(command, f"{prefix}{name} ")
        else:
            names.add(f"{prefix}{name}")
    return names


def _table_commands() -> set[str]:
    """Commands in the first column of the README's command table; `reissue`
    after `meshpki rotate-root begin` means `rotate-root reissue`."""
    found: set[str] = set()
    text = README.read_text()
    table = text[text.index("| command | what it does |"):].split("\n\n", 1)[0]
    for line in table.splitlines():
        if not line.startswith("| `meshpki "):
            continue
        parent = ""
        for cell in re.findall(r"`([^`]+)`", line.split("|")[1]):
            words = cell.removeprefix("meshpki ").split()
            if cell.startswith("meshpki "):
                parent = " ".join(words[:-1]) + " " if len(words) > 1 else ""
                found.add(" ".join(words))
            else:
                found.add(parent + cell)
    return found


def test_the_command_table_matches_the_cli():
    in_cli, in_readme = _commands(cli), _table_commands()
    assert in_cli - in_readme == set(), "commands missing from the README's table"
    assert in_readme - in_cli == set(), "the README's table names commands the CLI lacks"
