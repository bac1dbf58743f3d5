"""The Redis URL: from the variable the config names, never logged with its password."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from router.config import Fleet
from router.errors import ConfigError
from router.fleet.connect import connect, redacted, redis_url
from router.fleet.follower import labels


def test_the_url_comes_from_the_named_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = Fleet(name="f", redis_url_env="MY_REDIS")
    monkeypatch.delenv("MY_REDIS", raising=False)
    with pytest.raises(ConfigError) as caught:
        redis_url(fleet, "router.yaml")
    text = str(caught.value)
    assert "MY_REDIS is not set" in text and "export MY_REDIS=redis://" in text
    monkeypatch.setenv("MY_REDIS", "http://example")
    with pytest.raises(ConfigError, match="use redis://, rediss://, unix:// or redis"):
        redis_url(fleet, "router.yaml")
    monkeypatch.setenv("MY_REDIS", "redis://:Zk3/q+Tw9@db:6379/0")  # a base64 password
    with pytest.raises(ConfigError) as unparsed:
        redis_url(fleet, "router.yaml")
    assert "percent-encode" in str(unparsed.value) and "Zk3" not in str(unparsed.value)
    monkeypatch.setenv("MY_REDIS", "rediss://:s3cret@db:6380/0")
    assert redis_url(fleet, "router.yaml") == "rediss://:s3cret@db:6380/0"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("rediss://user:s3cret@db:6380/1", "rediss://user:***@db:6380/1"),
        ("redis://db:6379/0", "redis://db:6379/0"),
        ("redis://:Zk3/q+Tw9#x@db:6379/0", "redis://:***@db:6379/0"),
        ("redis+sentinel://a:26379/m?sentinel_password=s3cret", "redis+sentinel://a:26379/m?***"),
        (
            "redis+sentinel://:s3cret@a:26379,b:26379/main",
            "redis+sentinel://:***@a:26379,b:26379/main",
        ),
    ],
)
def test_a_logged_url_never_holds_the_password(url: str, shown: str) -> None:
    assert redacted(url) == shown


def test_a_sentinel_url_names_its_hosts_and_service() -> None:
    client = connect("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2/fleet-master/2")
    assert isinstance(client, Redis)
    pool = client.connection_pool
    assert pool.service_name == "fleet-master"  # type: ignore[attr-defined]
    hosts = [c.connection_pool.connection_kwargs for c in pool.sentinel_manager.sentinels]  # type: ignore[attr-defined]
    assert [(h["host"], h["port"]) for h in hosts] == [("10.0.0.1", 26379), ("10.0.0.2", 26379)]
    assert pool.connection_kwargs["db"] == 2
    with pytest.raises(ValueError, match="names its service"):
        connect("redis+sentinel://10.0.0.1:26379")


def test_labels_come_from_the_config_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION", "eu")
    monkeypatch.setenv("POD_NAME", "agent-7")
    assert labels("$REGION", "paid", "$POD_NAME") == {
        "region": "eu",
        "pool": "paid",
        "instance": "agent-7",
    }
    monkeypatch.delenv("POOL", raising=False)
    with pytest.raises(
        ValueError, match=r"fleet.pool is \$POOL, and the environment variable POOL"
    ):
        labels("eu", "$POOL", "x")
