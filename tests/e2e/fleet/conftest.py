"""The fleet tests' shared processes: a real redis-server and a fake provider of the test's
own (a fleet test changes how the provider behaves, so it does not share the session's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.fleet import Fleet
from testing.redis import RedisServer, require_redis
from testing.servers import ProviderProcess


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server on a free port, in memory (skips outside CI without the binary)."""
    require_redis()
    server = RedisServer(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[ProviderProcess]:
    running = ProviderProcess(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def start_fleet(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer
) -> Iterator[Callable[..., Fleet]]:
    """Start a fleet on the test's provider and Redis (`Fleet`'s keyword arguments); every
    one started is stopped at the end, whatever happened."""
    started: list[Fleet] = []

    def start(sidecars: list[tuple[str, str]], **more: Any) -> Fleet:
        fleet = Fleet(
            tmp_path / f"fleet-{len(started)}", provider.url, redis_server.url, sidecars, **more
        )
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()
