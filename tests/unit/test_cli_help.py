"""The CLI's parser: the documented commands are there (their `--help`, through the real entry
point, is tested end to end in tests/e2e/test_cli_help.py).

The subcommands are read from the CLI's own parser, so a command added later is covered
without touching these files.
"""

from __future__ import annotations

import argparse

from router.cli import _parser


def _commands() -> list[str]:
    for action in _parser()._actions:  # argparse keeps subcommands on a private action
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("the CLI parser has no subcommands")


COMMANDS = _commands()


def test_the_parser_has_the_documented_commands() -> None:
    assert {"serve", "fake-provider", "validate", "demo", "audit", "promote"} <= set(COMMANDS)
