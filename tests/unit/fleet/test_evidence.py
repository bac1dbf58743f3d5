"""Pooled evidence on fakeredis: a sidecar's flush (what it writes, and when), the controller's
pool (baselines, increases, no double count, a restart, a new sidecar, counts that go
down, per-label totals), and the local floor's alpha."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import orjson
import pytest

from router.catalog import Catalog, load_catalog
from router.config import Guardrails
from router.control.build import build_routes, build_upstreams
from router.control.guardrails import Guard
from router.control.moves import RouteState
from router.control.restore import digests_of
from router.fleet.evidence import TTL_SECONDS, Counts, Flusher, decode, encode
from router.fleet.keys import Keys
from router.fleet.pool import Pool
from router.proxy.live import LiveRoute
from router.proxy.telemetry import (
    GUARD_LATENCY_BOUNDS,
    Outcome,
    TokenPrice,
    Totals,
    Usage,
    VersionStats,
)
from testing.servers import REPO

KEYS = Keys("unit")
ROUTE, CANDIDATE, ACTIVE = "refund-agent", "v1.5", "v1.4"
EAST = {"region": "us-east", "pool": "paid", "instance": "east-1"}
WEST = {"region": "us-west", "pool": "free", "instance": "west-1"}


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(REPO / "config" / "router.yaml")


def live(catalog: Catalog) -> dict[str, LiveRoute]:
    """The example config's routes, as one process serves them (fresh counters)."""
    return build_routes(catalog, build_upstreams(catalog.config))


def states(catalog: Catalog) -> dict[str, RouteState]:
    return {
        name: RouteState.from_config(spec.config, digests_of(spec))
        for name, spec in catalog.routes.items()
    }


async def field(redis: fakeredis.FakeAsyncRedis, name: str) -> bytes:
    """One field of the candidate's evidence hash (it must be there)."""
    raw = await redis.hget(KEYS.evidence(ROUTE, CANDIDATE), name)
    assert isinstance(raw, bytes), f"no field {name}"
    return raw


def serve(stats: VersionStats, n: int, *, errors: int = 0, seconds: float = 0.25) -> None:
    """`n` requests as the data path counts them, `errors` of them 5xx."""
    for i in range(n):
        outcome = Outcome.PROVIDER_5XX if i < errors else Outcome.OK
        stats.record_request(outcome, seconds, 0.0002, ttft=seconds / 2)
        stats.record_usage(Usage(input=100, output=20))
        stats.record_tool_call("valid" if i % 2 else "invalid_json")


def requests_by_instance(pool: Pool) -> dict[str, int]:
    """The candidate's requests the pool added, per sidecar instance (restarts summed)."""
    return {i: c.requests for i, (_, c) in pool.by_instance(ROUTE, CANDIDATE).items()}


def candidate(routes: dict[str, LiveRoute]) -> VersionStats:
    return routes[ROUTE].targets[CANDIDATE].stats


@pytest.fixture
def fleet(catalog: Catalog, redis: fakeredis.FakeAsyncRedis) -> Iterator[tuple[Pool, LiveRoute]]:
    """A controller's pool, on its own routes (what it adds shows in their counters)."""
    routes = live(catalog)
    yield Pool(redis, KEYS, states(catalog), routes), routes[ROUTE]


def sidecar(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, labels: dict[str, str], boot: str
) -> tuple[Flusher, dict[str, LiveRoute]]:
    routes = live(catalog)
    return Flusher(redis, KEYS, routes, labels, interval=1.0, boot=boot), routes


# -- the flush ---------------------------------------------------------------------------


async def test_a_flush_writes_the_cumulative_counters_of_versions_that_moved(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis
) -> None:
    flusher, routes = sidecar(catalog, redis, EAST, "boot1")
    assert await flusher.flush() == 0  # nothing served: nothing written
    stats = candidate(routes)
    serve(stats, 7, errors=2)
    stats.record_refusal()
    stats.record_feedback(True, 0.9)
    assert await flusher.flush() == 1
    key = KEYS.evidence(ROUTE, CANDIDATE)
    assert await redis.hkeys(key) == [b"east-1@boot1"]
    assert 0 < await redis.ttl(key) <= TTL_SECONDS
    reading = decode(await field(redis, "east-1@boot1"))
    assert reading.labels == EAST
    assert reading.counts == Counts.of(stats)
    assert reading.counts.requests == 7 and reading.counts.errors == 2
    assert reading.counts.totals() == stats.totals()  # what the guardrails read, unchanged
    assert await flusher.flush() == 0  # no new counts: no write
    serve(stats, 1)
    assert await flusher.flush() == 1
    again = decode(await field(redis, "east-1@boot1"))
    assert again.counts.requests == 8  # cumulative, not the difference


async def test_the_json_is_compact_and_sparse(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis
) -> None:
    flusher, routes = sidecar(catalog, redis, EAST, "b")
    serve(candidate(routes), 3)
    await flusher.flush()
    raw = await field(redis, "east-1@b")
    data = orjson.loads(raw)
    assert len(data["guard_latency"]) == 1  # one bucket with counts, not 1,250 zeros
    assert len(raw) < 700, raw


@pytest.mark.parametrize(
    "broken",
    [
        b"not json",
        b'{"labels": {"region": "r"}, "at": 1}',
        orjson.dumps({**orjson.loads(encode(EAST, 1.0, Counts())), "outcomes": [1, 2]}),
        orjson.dumps({**orjson.loads(encode(EAST, 1.0, Counts())), "latency": {"9999": 1}}),
        orjson.dumps({**orjson.loads(encode(EAST, 1.0, Counts())), "refusals": -1}),
    ],
)
def test_a_malformed_field_is_refused_with_a_reason(broken: bytes) -> None:
    with pytest.raises(ValueError):
        decode(broken)


# -- the pool ----------------------------------------------------------------------------


async def test_the_first_read_is_a_baseline_and_then_only_increases_are_added(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    flusher, routes = sidecar(catalog, redis, EAST, "b1")
    serve(candidate(routes), 50, errors=5)  # counted before this controller ran
    await flusher.flush()
    assert await pool.read() == 1
    pooled = route.targets[CANDIDATE].stats
    assert pooled.totals().requests == 0  # history: nothing added
    serve(candidate(routes), 10, errors=3)
    await flusher.flush()
    await pool.read()
    totals = pooled.totals()
    assert (totals.requests, totals.errors) == (10, 3)
    assert pooled.window().requests == 10  # the window (and so status, blast radius) too
    assert pooled.window().errors == 3
    assert sum(pooled.latency.counts) == 10  # and the /metrics histogram
    assert pool.totals(ROUTE, CANDIDATE) == totals
    assert requests_by_instance(pool) == {"east-1": 10}


async def test_the_same_numbers_sent_again_count_once(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    """A sidecar that reconnects writes its cumulative counts again: nothing doubles."""
    pool, route = fleet
    await pool.read()  # started before any sidecar wrote
    flusher, routes = sidecar(catalog, redis, EAST, "b1")
    serve(candidate(routes), 12, errors=1)
    await flusher.flush()
    await pool.read()
    flusher.sent.clear()  # as after a lost connection: everything is written again
    assert await flusher.flush() == 1
    await pool.read()
    await pool.read()
    stats = route.targets[CANDIDATE].stats
    assert (stats.totals().requests, stats.totals().errors) == (12, 1)


async def test_a_restarted_sidecar_adds_its_new_process_and_keeps_the_old_ones_counts(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    await pool.read()
    before, routes = sidecar(catalog, redis, EAST, "boot-a")
    serve(candidate(routes), 20)
    await before.flush()
    await pool.read()
    after, routes = sidecar(catalog, redis, EAST, "boot-b")  # same instance, counters at 0
    serve(candidate(routes), 4)
    await after.flush()
    await pool.read()
    key = KEYS.evidence(ROUTE, CANDIDATE)
    assert sorted(await redis.hkeys(key)) == [b"east-1@boot-a", b"east-1@boot-b"]
    assert route.targets[CANDIDATE].stats.totals().requests == 24
    assert requests_by_instance(pool) == {"east-1": 24}


async def test_a_sidecar_first_seen_later_is_added_whole(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    east, east_routes = sidecar(catalog, redis, EAST, "e")
    serve(candidate(east_routes), 30)
    await east.flush()
    await pool.read()  # east's 30 are a baseline
    west, west_routes = sidecar(catalog, redis, WEST, "w")
    serve(candidate(west_routes), 9, errors=9)
    await west.flush()
    await pool.read()
    stats = route.targets[CANDIDATE].stats
    assert (stats.totals().requests, stats.totals().errors) == (9, 9)


async def test_counts_that_go_down_add_nothing_until_they_pass_the_mark(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    await pool.read()
    flusher, routes = sidecar(catalog, redis, EAST, "b")
    serve(candidate(routes), 10)
    await flusher.flush()
    await pool.read()
    key, name = KEYS.evidence(ROUTE, CANDIDATE), "east-1@b"
    older = VersionStats(ROUTE, CANDIDATE, None, 60)
    serve(older, 3)
    await redis.hset(key, name, encode(EAST, 1.0, Counts.of(older)))  # Redis from an old copy
    await pool.read()
    stats = route.targets[CANDIDATE].stats
    assert stats.totals().requests == 10  # nothing added, nothing taken away
    # The sidecar's counters only rise: its next write is above the mark, by what is new.
    serve(candidate(routes), 2)
    await flusher.flush()
    await pool.read()
    assert stats.totals().requests == 12  # not 10 + (12 - 3): nothing counted twice


async def test_a_field_gone_quiet_is_retired_and_its_counts_stay(
    catalog: Catalog,
    redis: fakeredis.FakeAsyncRedis,
    fleet: tuple[Pool, LiveRoute],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool, route = fleet
    await pool.read()
    flusher, routes = sidecar(catalog, redis, EAST, "b")
    serve(candidate(routes), 10)
    await flusher.flush()
    monkeypatch.setattr("router.fleet.pool.RETIRE_AFTER", 0.0)  # every field is old at once
    await pool.read()
    key = KEYS.evidence(ROUTE, CANDIDATE)
    assert await redis.hkeys(key) == []  # deleted from Redis
    assert pool.totals(ROUTE, CANDIDATE).requests == 10  # what it added stays
    assert requests_by_instance(pool) == {"east-1": 10}
    # The same process comes back (cut off that long): a baseline, never counted twice.
    serve(candidate(routes), 2)
    await flusher.flush()
    monkeypatch.setattr("router.fleet.pool.RETIRE_AFTER", 600.0)
    await pool.read()
    assert route.targets[CANDIDATE].stats.totals().requests == 10
    serve(candidate(routes), 3)
    await flusher.flush()
    await pool.read()
    assert pool.totals(ROUTE, CANDIDATE).requests == 13


async def test_totals_where_keeps_the_fields_whose_labels_pass(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, _ = fleet
    await pool.read()
    east, east_routes = sidecar(catalog, redis, EAST, "e")
    west, west_routes = sidecar(catalog, redis, WEST, "w")
    serve(candidate(east_routes), 8, errors=4)
    serve(candidate(west_routes), 5, errors=0)
    await east.flush()
    await west.flush()
    await pool.read()
    in_east = pool.totals(ROUTE, CANDIDATE, lambda labels: labels["region"] == "us-east")
    paid = pool.totals(ROUTE, CANDIDATE, lambda labels: labels["pool"] == "paid")
    everyone = pool.totals(ROUTE, CANDIDATE)
    assert (in_east.requests, in_east.errors) == (8, 4)
    assert paid == in_east
    assert (everyone.requests, everyone.errors) == (13, 4)
    assert pool.totals(ROUTE, ACTIVE).requests == 0
    assert everyone.since(in_east).requests == 5


async def test_a_malformed_field_is_skipped_and_the_others_are_read(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    await pool.read()
    key = KEYS.evidence(ROUTE, CANDIDATE)
    await redis.hset(key, "bad@x", b"{broken")
    flusher, routes = sidecar(catalog, redis, EAST, "b")
    serve(candidate(routes), 6)
    await flusher.flush()
    await pool.read()
    assert route.targets[CANDIDATE].stats.totals().requests == 6


async def test_cost_tokens_and_ttft_reach_the_controllers_counters(
    catalog: Catalog, redis: fakeredis.FakeAsyncRedis, fleet: tuple[Pool, LiveRoute]
) -> None:
    pool, route = fleet
    await pool.read()
    routes = live(catalog)
    stats = candidate(routes)
    stats.price = TokenPrice(input=1e-6, output=2e-6, cache_read=0.0, cache_write=0.0)
    flusher = Flusher(redis, KEYS, routes, EAST, interval=1.0, boot="b")
    serve(stats, 4)
    await flusher.flush()
    await pool.read()
    pooled = route.targets[CANDIDATE].stats
    assert pooled.tokens == stats.tokens
    assert pooled.priced == 4 and pooled.cost_usd == pytest.approx(stats.cost_usd)
    assert pooled.ttft.counts == stats.ttft.counts
    assert pooled.tool_calls == stats.tool_calls
    assert pooled.window().tool_failures == 2


def test_blast_radius_is_each_versions_share_of_the_last_minute(catalog: Catalog) -> None:
    route = live(catalog)[ROUTE]
    assert route.blast_radius() == {}  # nothing served: no share to report
    serve(route.targets[CANDIDATE].stats, 1)
    serve(route.targets[ACTIVE].stats, 3)
    assert route.blast_radius() == {CANDIDATE: 0.25, ACTIVE: 0.75}


# -- the local floor ---------------------------------------------------------------------


def test_a_floor_judges_at_alpha_over_the_split() -> None:
    rules = Guardrails(confidence=0.9998)
    assert Guard(rules).alpha == pytest.approx(2e-4)
    floor = Guard(rules, split=1000)
    assert floor.alpha == pytest.approx(2e-7)
    # A judge at the route's confidence trips on evidence the floor does not yet accept.
    latency = (0,) * (len(GUARD_LATENCY_BOUNDS) + 1)
    candidate_totals = Totals(requests=30, errors=7, latency=latency)
    control = Totals(requests=1000, errors=5, latency=latency)
    tripped = [v.rule for v in Guard(rules).judge(candidate_totals, control) if v.tripped]
    assert "error_rate" in tripped
    assert not any(v.tripped for v in floor.judge(candidate_totals, control))
    assert floor.judge(candidate_totals, control)[0].confidence == pytest.approx(1 - 2e-7)
