"""The process fixtures of the end-to-end tier: the shared fake provider, the example router in
front of it, and routers a test configures itself. The unit tier cannot reach them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.servers import ProviderProcess, Router, router_config


@pytest.fixture(scope="session")
def fake_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProviderProcess]:
    provider = ProviderProcess(tmp_path_factory.mktemp("fake-provider"))
    yield provider
    provider.stop()


@pytest.fixture
def fake(fake_provider: ProviderProcess) -> Iterator[ProviderProcess]:
    """The shared fake provider, reset to its defaults after the test."""
    yield fake_provider
    fake_provider.reset()


@pytest.fixture(scope="session")
def router(
    fake_provider: ProviderProcess, tmp_path_factory: pytest.TempPathFactory
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
