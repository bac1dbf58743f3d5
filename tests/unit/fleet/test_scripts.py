"""The Lua scripts on fakeredis (with its Lua runtime): epochs only go up, a stale fencing
token is refused, trips need no lease, the lease is held by one owner at a time."""

from __future__ import annotations

from typing import Any

import fakeredis
import orjson
import pytest

from router.fleet.keys import Keys
from router.fleet.scripts import TRIPS_KEPT, Scripts, StaleFence, last_event_id

KEYS = Keys("unit")


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


async def test_every_key_shares_the_fleets_hash_tag() -> None:
    names = [KEYS.state, KEYS.epoch, KEYS.events, KEYS.trips, KEYS.leader, KEYS.fence]
    names += [KEYS.acks, KEYS.sidecars, KEYS.seen, KEYS.published, KEYS.bundle("r", "v1", "d")]
    assert all(name.startswith("br:{unit}:") for name in names)
    assert len(set(names)) == len(names)


async def test_the_lease_has_one_holder_and_each_new_holder_a_higher_token(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    scripts = Scripts(redis, KEYS)
    first = await scripts.acquire("a", 5.0, floor=0)
    assert first == 1
    assert await scripts.acquire("b", 5.0, floor=0) is None
    assert await scripts.renew("a", 5.0)
    assert not await scripts.renew("b", 5.0)
    await scripts.resign("b")  # not the holder: nothing happens
    assert await redis.get(KEYS.leader) == b"a"
    await scripts.resign("a")
    second = await scripts.acquire("b", 5.0, floor=0)
    assert second == 2
    await scripts.resign("b")
    assert await scripts.acquire("c", 5.0, floor=7) == 8  # never at or below a token seen


async def test_a_publish_with_a_stale_token_is_refused_and_changes_nothing(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    scripts = Scripts(redis, KEYS)
    old = await scripts.acquire("a", 5.0, floor=0)
    assert old is not None
    assert await scripts.publish(old, "a", 0, b'{"routes": {}}') == 1
    await redis.delete(KEYS.leader)  # the lease ran out while "a" was paused
    new = await scripts.acquire("b", 5.0, floor=0)
    assert new is not None and new > old
    with pytest.raises(StaleFence, match="STALE fencing token 1 refused: the fleet is at 2"):
        await scripts.publish(old, "a", 0, b'{"routes": {"late": 1}}')
    read = await scripts.read()
    assert read.epoch == 1 and read.body == {"routes": {}}
    assert await scripts.publish(new, "b", 0, b'{"routes": {}}') == 2


async def test_a_publish_needs_the_lease_as_well_as_the_token(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    """After Redis lost its counters a new leader can be handed a token an old one still
    holds: the lease's owner tells them apart."""
    scripts = Scripts(redis, KEYS)
    token = await scripts.acquire("a", 5.0, floor=0)
    assert token == 1
    await redis.delete(KEYS.leader, KEYS.fence)  # Redis came back empty
    assert await scripts.acquire("b", 5.0, floor=0) == 1  # the same token, another owner
    with pytest.raises(StaleFence, match="STALE lease: a does not hold it"):
        await scripts.publish(1, "a", 0, b"{}")
    assert await scripts.publish(1, "b", 0, b"{}") == 1


async def test_epochs_never_go_below_an_ack_or_the_callers_floor(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    """After Redis comes back empty the counter restarts at 0: the next epoch is still above
    every epoch a sidecar acknowledged and the one the caller knows."""
    scripts = Scripts(redis, KEYS)
    token = await scripts.acquire("a", 5.0, floor=0)
    assert token is not None
    await redis.hset(KEYS.acks, mapping={"s1": "41", "s2": "40"})
    assert await scripts.publish(token, "a", 0, b"{}") == 42
    assert await scripts.publish(token, "a", 50, b"{}") == 51
    assert await scripts.trip(0, {"uid": "t"}) == 52


async def test_a_trip_needs_no_lease_and_rings_the_doorbell(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    scripts = Scripts(redis, KEYS)
    epoch = await scripts.trip(3, {"uid": "u1", "route": "r", "version": "v2"})
    assert epoch == 4
    read = await scripts.read()
    assert read.epoch is None and read.body is None  # no snapshot yet: never "no config"
    assert read.trips == [(4, {"uid": "u1", "route": "r", "version": "v2"})]
    assert read.latest == 4
    events: Any = await redis.xrange(KEYS.events)
    assert [fields[b"kind"] for _, fields in events] == [b"trip"]


async def test_redis_keeps_only_the_last_trips(redis: fakeredis.FakeAsyncRedis) -> None:
    scripts = Scripts(redis, KEYS)
    for n in range(TRIPS_KEPT + 5):
        await scripts.trip(0, {"uid": str(n)})
    trips = await redis.lrange(KEYS.trips, 0, -1)
    assert len(trips) == TRIPS_KEPT
    assert orjson.loads(orjson.loads(trips[0])["trip"])["uid"] == "5"


async def test_a_publish_takes_the_trips_it_has_taken_in_off_the_list(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    """Sidecars read every pending trip on every sync: the list holds only those."""
    scripts = Scripts(redis, KEYS)
    token = await scripts.acquire("a", 5.0, floor=0)
    assert token is not None
    for uid in ("t1", "t2", "t3"):
        await scripts.trip(0, {"uid": uid, "route": "r", "version": "v2"})
    # A hand-written entry is kept, and not choked on.
    await redis.rpush(KEYS.trips, b"not json")
    await scripts.publish(token, "a", 0, b"{}", taken=["t1", "t3", "never-written"])
    read_back = await redis.lrange(KEYS.trips, 0, -1)
    assert read_back[-1] == b"not json"
    assert [orjson.loads(orjson.loads(raw)["trip"])["uid"] for raw in read_back[:-1]] == ["t2"]
    assert [trip["uid"] for _, trip in (await scripts.read()).trips] == ["t2"]


def test_the_newest_event_id_in_either_protocols_reply() -> None:
    entries = [(b"1-0", {b"epoch": b"1"}), (b"2-0", {b"epoch": b"2"})]
    assert last_event_id([[b"events", entries]], "0-0") == b"2-0"  # XREAD
    assert last_event_id([(b"7-0", {b"epoch": b"7"})], "0-0") == b"7-0"  # XREVRANGE
    assert last_event_id([], "0-0") == "0-0"
    assert last_event_id(None, "$") == "$"


async def test_forget_drops_only_sidecars_silent_since_the_cutoff(
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    scripts = Scripts(redis, KEYS)
    for name, last_seen in (("old", 1_000.0), ("edge", 2_000.0), ("new", 3_000.0)):
        await redis.hset(KEYS.sidecars, name, "{}")
        await redis.zadd(KEYS.seen, {name: int(last_seen * 1000)})
        await redis.hset(KEYS.acks, name, "7")
    assert await scripts.forget(2_000.0) == ["old"]  # silent since before the cutoff only
    assert sorted(await redis.hkeys(KEYS.sidecars)) == [b"edge", b"new"]
    assert sorted(await redis.hkeys(KEYS.acks)) == [b"edge", b"new"]
    assert await redis.zscore(KEYS.seen, "old") is None
    assert await scripts.forget(2_000.0) == []
    # A beat after the forgetting registers the sidecar again, whole.
    await redis.hset(KEYS.sidecars, "old", "{}")
    await redis.zadd(KEYS.seen, {"old": 4_000_000})
    assert await scripts.forget(2_000.0) == []
    assert await redis.hexists(KEYS.sidecars, "old")
