from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import FakeProvider, Router, router_config


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# tests/compat needs the agent frameworks, which live in .venv-compat (scripts/setup makes it,
# scripts/check runs the suite there); a venv without them leaves the folder out.
collect_ignore = [] if _installed("openai-agents") else ["compat"]


@pytest.fixture(scope="session")
def fake_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    provider = FakeProvider(tmp_path_factory.mktemp("fake-provider"))
    yield provider
    provider.stop()


@pytest.fixture
def fake(fake_provider: FakeProvider) -> Iterator[FakeProvider]:
    """The shared fake provider, reset to its defaults after the test."""
    yield fake_provider
    fake_provider.reset()


@pytest.fixture(scope="session")
def router(
    fake_provider: FakeProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    """The example config in front of the shared fake provider."""
    running = Router(tmp_path_factory.mktemp("router"), router_config(fake_provider.url))
    yield running
    running.stop()


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., Router]]:
    """Start a router with a config of the test's own; all are stopped afterwards."""
    started: list[Router] = []

    def start(
        config: dict[str, Any], env: dict[str, str] | None = None, log_level: str = "INFO"
    ) -> Router:
        running = Router(tmp_path / f"router-{len(started)}", config, env, log_level)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
