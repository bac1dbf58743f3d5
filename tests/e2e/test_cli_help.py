"""`--help` of the program and of every subcommand, through the real entry point.

The subcommands are read from the CLI's own parser, so a command added later is covered
without touching this file (tests/unit/test_cli_help.py reads them).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from testing.servers import REPO
from tests.unit.test_cli_help import COMMANDS


def help_of(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )


def test_program_help_lists_every_command() -> None:
    done = help_of()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: bundle-router") and done.stderr == ""
    for command in COMMANDS:
        assert command in done.stdout
    assert "active at 100%;" in done.stdout  # the promote help, with its percent sign


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command: str) -> None:
    done = help_of(command)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: bundle-router {command}") and done.stderr == ""
