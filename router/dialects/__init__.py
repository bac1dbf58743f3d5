"""API dialects: one module each, one small interface (`base.Dialect`)."""

from __future__ import annotations

from router.dialects.anthropic import ANTHROPIC
from router.dialects.base import Dialect, Injection
from router.dialects.openai import OPENAI

DIALECTS: dict[str, Dialect] = {OPENAI.name: OPENAI, ANTHROPIC.name: ANTHROPIC}

__all__ = ["ANTHROPIC", "DIALECTS", "OPENAI", "Dialect", "Injection"]
