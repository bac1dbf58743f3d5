"""require_redis: without redis-server a test skips, except in CI, where it fails (the
convention of the Prometheus and tmpfs tests)."""

from __future__ import annotations

import pytest

import testing.redis
from testing.redis import require_redis


def test_without_the_binary_a_test_skips_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing.redis, "redis_server_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install redis-server"):
        require_redis()


def test_without_the_binary_a_test_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing.redis, "redis_server_binary", lambda: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match=r"\.ci/run installs it"):
        require_redis()


def test_with_the_binary_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testing.redis, "redis_server_binary", lambda: "/opt/redis-server")
    monkeypatch.setenv("CI", "1")
    assert require_redis() == "/opt/redis-server"
