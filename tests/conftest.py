"""What both tiers use. The process fixtures (the fake provider and routers) are in
tests/e2e/conftest.py, out of the unit tier's reach."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import pytest

from testing.servers import REPO


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# tests/compat needs the agent frameworks, which live in .venv-compat (scripts/setup makes it,
# scripts/check runs the suite there); a venv without them leaves the folder out.
collect_ignore = [] if _installed("openai-agents") else ["compat"]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the example config folder, to edit."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"
