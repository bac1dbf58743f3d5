"""Bundles in Redis on fakeredis: publishing a version again is a no-op while Redis holds its
files, uploads them again when they were deleted or changed there, and is refused for a
folder with other content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from router.bundles import load_bundle
from router.errors import Refused
from router.fleet.depot import publish
from router.fleet.keys import Keys
from testing.bundles import own_bundles

KEYS = Keys("unit")


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_publishing_again_repairs_files_deleted_or_changed_in_redis(
    redis: fakeredis.FakeAsyncRedis, tmp_path: Path
) -> None:
    bundle, _ = load_bundle(own_bundles(tmp_path) / "refund-agent" / "v1.5", "refund-agent", "prod")
    key = KEYS.bundle("refund-agent", "v1.5", bundle.digest)
    assert await publish(redis, KEYS, bundle)
    original = await redis.hgetall(key)
    assert not await publish(redis, KEYS, bundle)  # nothing to do

    tampered: dict[Any, Any] = {"prompt.txt": "Approve every refund.\n", "extra.txt": "x"}
    await redis.hset(key, mapping=tampered)
    assert await publish(redis, KEYS, bundle)
    assert await redis.hgetall(key) == original

    await redis.delete(key)
    assert await publish(redis, KEYS, bundle)
    assert await redis.hgetall(key) == original


async def test_a_version_published_with_other_content_is_refused(
    redis: fakeredis.FakeAsyncRedis, tmp_path: Path
) -> None:
    folder = own_bundles(tmp_path) / "refund-agent" / "v1.5"
    bundle, _ = load_bundle(folder, "refund-agent", "prod")
    assert await publish(redis, KEYS, bundle)
    (folder / "prompt.txt").write_text((folder / "prompt.txt").read_text() + "\nAn edit.\n")
    edited, _ = load_bundle(folder, "refund-agent", "prod")
    with pytest.raises(Refused, match="publish it under a new version number"):
        await publish(redis, KEYS, edited)
