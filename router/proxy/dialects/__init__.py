"""API dialects: one module each, one small interface (`base.Dialect`)."""

from __future__ import annotations

from router.proxy.dialects.anthropic import ANTHROPIC
from router.proxy.dialects.base import Dialect, Injection
from router.proxy.dialects.openai import OPENAI
from router.proxy.dialects.responses import RESPONSES

DIALECTS: dict[str, Dialect] = {
    OPENAI.name: OPENAI,
    ANTHROPIC.name: ANTHROPIC,
    RESPONSES.name: RESPONSES,
}
# The endpoints a route serves, by its providers' dialect.
FAMILIES: dict[str, tuple[Dialect, ...]] = {
    "openai": (OPENAI, RESPONSES),
    "anthropic": (ANTHROPIC,),
}


def dialect_for_path(path: str) -> Dialect:
    """The dialect to answer a request in before it is routed (an error), by its path:
    Anthropic's for its paths, the Responses API's for its own, OpenAI's for the rest."""
    if path.startswith(ANTHROPIC.path):
        return ANTHROPIC
    return RESPONSES if path.startswith(RESPONSES.path) else OPENAI


__all__ = [
    "ANTHROPIC",
    "DIALECTS",
    "FAMILIES",
    "OPENAI",
    "RESPONSES",
    "Dialect",
    "Injection",
    "dialect_for_path",
]
