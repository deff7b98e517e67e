"""The README's tables and lists name what the code defines, and nothing it lacks: the
commands, audit's Prometheus metrics, the exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from meshpki.audit import Grade
from meshpki.cli import cli
from meshpki.errors import ExitCode
from meshpki.render import AUDIT_METRICS

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


def _documented_metrics() -> dict[str, tuple[str, ...]]:
    """Audit's metric list in the README: `name{labels}`, where `{...}` repeats the previous labels."""
    text = README.read_text()
    start = text.index("`prometheus`:\n\n", text.index("### `meshpki audit")) + len("`prometheus`:\n\n")
    listing = text[start:text.index("\n\n", start)]
    found: dict[str, tuple[str, ...]] = {}
    labels: tuple[str, ...] = ()
    for name, braces in re.findall(r"`(meshpki_[a-z_]+)(\{[^}]*\})?`", listing):
        if braces != "{...}":
            labels = tuple(braces.strip("{}").split(",")) if braces else ()
        found[name] = labels
    return found


def test_the_metric_list_matches_what_audit_exposes():
    assert _documented_metrics() == AUDIT_METRICS


def _table(header: str, doc: Path = README) -> list[list[str]]:
    """The cells of the table in `doc` whose header line starts with `header`, one list per row."""
    text = doc.read_text()
    lines = text[text.index(header):].split("\n\n", 1)[0].splitlines()[2:]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


@pytest.mark.parametrize("doc", [README, README.parent / "docs" / "design.md"], ids=lambda p: p.name)
def test_the_exit_code_table_matches_the_code(doc):
    assert [int(row[0]) for row in _table("| exit | meaning |", doc)] == sorted(ExitCode)
    # click's own exits (a ClickException, a usage error) are meshpki's too
    assert click.ClickException.exit_code == ExitCode.FAILED and click.UsageError.exit_code == ExitCode.USAGE


def test_every_exit_code_sentence_names_only_defined_codes():
    """Commands' own `Exit codes: 0 ...; 1 ...` sentences (audit's are its grades, checked below)."""
    text = README.read_text()
    sentences = [text[i:text.index("\n\n", i)] for i in (m.start() for m in re.finditer("Exit codes: ", text))]
    assert sentences
    for sentence in sentences:
        codes = {int(c) for c in re.findall(r"[:;]\s+(\d) ", sentence)}
        assert codes and codes <= set(ExitCode), sentence


def test_the_audit_grade_table_gives_each_grade_its_exit_code_most_urgent_first():
    rows = _table("| grade | exit | when |")
    assert {row[0]: int(row[1]) for row in rows} == {grade.name: int(grade) for grade in Grade}
    assert [row[0] for row in rows] == [g.name for g in sorted(Grade, key=lambda g: g.urgency, reverse=True)]


def test_audit_help_gives_each_grade_its_exit_code_and_the_urgency_order():
    """`meshpki audit --help` spells the codes out for cron users: it must say what Grade says."""
    from click.testing import CliRunner

    text = " ".join(CliRunner().invoke(cli, ["audit", "--help"]).output.split())
    codes = dict(re.findall(r"(\d) ([A-Z]+)", text[text.index("Exit 0 OK"):text.index("(the most urgent wins")]))
    assert {name: int(code) for code, name in codes.items()} == {grade.name: int(grade) for grade in Grade}
    order = text[text.index("the most urgent wins:"):].split(")")[0]
    named = re.findall(r"[A-Z]{4,}", order)
    urgent_first = [g.name for g in sorted(Grade, key=lambda g: g.urgency, reverse=True) if g is not Grade.OK]
    assert named == urgent_first


def test_ci_runs_the_readmes_test_command_then_the_suite_at_the_floors():
    text = README.read_text()
    command = text[text.index("run the whole test suite (this is what CI runs):"):].split("\n\n")[1].strip()
    ci = [line.strip() for line in (README.parent / ".ci" / "run").read_text().splitlines()]
    steps = [ci.index(step.strip()) for step in command.split("&&")]
    assert steps == sorted(steps) and ci.index(".ci/min-versions") > steps[-1]


def test_token_ttl_examples_outlive_audits_warn_days():
    """A --token-ttl the README suggests must not make audit WARN from the token's first day."""
    from meshpki.dates import DAY, parse_duration
    from meshpki.limits import DEFAULT_WARN_DAYS

    examples = re.findall(r"--token-ttl ([0-9][0-9dhms]*)", README.read_text())
    assert examples, "the README shows a --token-ttl"
    for example in examples:
        assert parse_duration(example) > DEFAULT_WARN_DAYS * DAY, f"--token-ttl {example} is within --warn-days"
