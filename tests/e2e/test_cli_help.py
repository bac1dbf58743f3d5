"""`--help` of the program and of every subcommand, through the real entry point.

The subcommands are read from the CLI's own parser, so a command added later is covered
without touching this file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from router.cli import _parser
from testing.servers import REPO


def _commands() -> list[str]:
    for action in _parser()._actions:  # argparse keeps subcommands on a private action
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("the CLI parser has no subcommands")


COMMANDS = _commands()


def help_of(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )


def test_the_parser_has_the_documented_commands() -> None:
    assert {"serve", "fake-provider", "validate", "demo", "audit", "promote"} <= set(COMMANDS)


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
