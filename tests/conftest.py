"""What both tiers use. The process fixtures (the fake provider and routers) are in
tests/e2e/conftest.py, out of the unit tier's reach."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from testing.servers import REPO


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A copy of the example config folder, to edit."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    return tmp_path / "config"
