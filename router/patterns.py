"""Regexes from config and bundles, compiled for RE2.

Tool-call arguments (chosen by a model) and answer text (written by one) are matched on the
event loop. A backtracking engine can take time exponential in the text on a pattern such
as ^(a+)+$, and every route waits meanwhile; RE2 takes time linear in the text whatever the
pattern (Envoy uses it for the same reason). The price is syntax: RE2 has no backreferences
and no look-around, so such a pattern is refused when it is loaded, with RE2's reason. `$`
is the end of the text, as in JSON Schema (Python's also matches before a final newline).
"""

from __future__ import annotations

from typing import Protocol

import re2

RE2_FIX = (
    "write it in RE2 syntax, which has no backreferences (\\1) and no look-around "
    "((?=, (?!, (?<=, (?<!); see github.com/google/re2/wiki/Syntax"
)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print to stderr; the reason goes into our error


class Regex(Protocol):
    pattern: str

    def search(self, text: str, /) -> object | None: ...


class RegexError(ValueError):
    """A pattern RE2 cannot compile: the message is RE2's reason."""


def compile_pattern(pattern: str) -> Regex:
    """The pattern compiled for RE2; raises RegexError with RE2's reason."""
    try:
        regex: Regex = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise RegexError(f"RE2 cannot run it: {reason}") from None
    return regex
