"""The fleet tests' shared processes: a real redis-server and a fake provider of the test's
own (a fleet test changes how the provider behaves, so it does not share the session's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
