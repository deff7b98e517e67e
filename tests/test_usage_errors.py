"""Usage errors are one line naming the help to read (README: errors are one
line), exit 2 as click's own; a group called without a command still shows its help."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import one_line_error


@pytest.mark.parametrize("args,needle,command", [
    (("push", "--bogus"), "--bogus", "meshpki push"),
    (("issue",), "Missing argument 'CLUSTERS...'", "meshpki issue"),
    (("push", "c1", "--format", "pkcs12"), "Invalid value for '--format'", "meshpki push"),
    (("no-such-command",), "No such command 'no-such-command'", "meshpki"),
    (("--bogus",), "--bogus", "meshpki"),
    (("rotate-root", "finish", "--grace", "soon"), "invalid duration 'soon'", "meshpki rotate-root finish"),
    (("rotate-root", "nope"), "No such command 'nope'", "meshpki rotate-root"),
    (("audit", "--at", "next june"), "'next june' is not a date", "meshpki audit"),
    (("audit", "--warn-days", "-1"), "Invalid value for '--warn-days'", "meshpki audit"),
])
def test_usage_errors_are_one_line_naming_the_help(cli, args, needle, command):
    result = cli(*args)
    line = one_line_error(result)
    assert result.exit_code == 2
    assert line.startswith("Error: ") and needle in line, line
    assert line.endswith(f"(see {command} --help)"), line


def test_usage_error_one_line_through_python_dash_m():
    done = subprocess.run([sys.executable, "-m", "meshpki", "history", "list", "a", "b"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("Error: "), done.stderr
    assert done.stderr.rstrip().endswith("--help)"), done.stderr


def test_a_group_without_a_command_still_shows_its_help(cli):
    for args in ((), ("rotate-root",)):
        result = cli(*args)
        assert "Usage:" in result.output and "Commands:" in result.output
