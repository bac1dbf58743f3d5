"""Sticky sessions across a flip: the session memory, the tables that use it, and the
handler's choice on the example config's real routes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import make_mocked_request

from router.catalog import load_catalog
from router.config import load_config
from router.control.build import build_route, build_routes, build_upstreams
from router.errors import ConfigError
from router.proxy.access_log import AccessLog
from router.proxy.exchange import Exchange
from router.proxy.feedback import RecentRequests
from router.proxy.handler import Proxy
from router.proxy.live import LiveRoute
from router.proxy.routing import BASIS_POINTS, SessionHold, WeightTable
from router.proxy.sessions import SessionMemory
from testing.servers import REPO, router_config

# --- the memory ---------------------------------------------------------------------------


def test_remembers_when_it_last_saw_a_session() -> None:
    memory = SessionMemory(10)
    assert memory.seen("s1") is None
    memory.remember("s1", 5.0)
    memory.remember("s1", 7.5)
    assert memory.seen("s1") == 7.5
    assert len(memory) == 1


def test_past_capacity_the_least_recently_seen_session_goes() -> None:
    memory = SessionMemory(3)
    for n, key in enumerate(["a", "b", "c"]):
        memory.remember(key, float(n))
    memory.remember("a", 3.0)  # seen again: now the newest
    memory.remember("d", 4.0)
    assert memory.seen("b") is None, "b was the least recently seen"
    assert [memory.seen(k) for k in ("a", "c", "d")] == [3.0, 2.0, 4.0]
    assert len(memory) == 3


def test_stays_bounded_over_many_sessions() -> None:
    memory = SessionMemory(1000)
    for n in range(20_000):
        memory.remember(f"session-{n}", float(n))
    assert len(memory) == 1000
    assert memory.seen("session-18999") is None
    assert memory.seen("session-19000") == 19000.0


def test_a_long_key_is_kept_by_its_hash_not_its_text() -> None:
    memory = SessionMemory(10)
    opening = "\x00opening\x00" + "a whole first message " * 10_000
    memory.remember(opening, 1.0)
    assert memory.seen(opening) == 1.0
    assert memory.seen(opening[:-1]) is None
    assert all(isinstance(k, int) for k in memory._last_seen)


def test_resize_keeps_the_newest_sessions() -> None:
    memory = SessionMemory(5)
    for n in range(5):
        memory.remember(str(n), float(n))
    memory.resize(2)
    assert [memory.seen(str(n)) for n in range(5)] == [None, None, None, 3.0, 4.0]
    memory.remember("5", 5.0)
    assert len(memory) == 2


@pytest.mark.parametrize("capacity", [0, -1])
def test_a_memory_holds_at_least_one_session(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1 session"):
        SessionMemory(capacity)
    with pytest.raises(ValueError, match="at least 1 session"):
        SessionMemory(5).resize(capacity)


# --- the tables ---------------------------------------------------------------------------

OLD_ONLY = {"v1.4": BASIS_POINTS, "v1.5": 0}
NEW_ONLY = {"v1.4": 0, "v1.5": BASIS_POINTS}


def test_a_plain_table_tracks_no_sessions() -> None:
    table = WeightTable.build(OLD_ONLY, "v1.4", "v1.5")
    assert table.hold is None and not table.remember_sessions
    assert not table.tracks_sessions


def test_a_table_that_holds_or_remembers_tracks_sessions() -> None:
    hold = SessionHold("v1.4", until=time.monotonic() + 60, idle=30)
    holding = WeightTable.build(NEW_ONLY, "v1.4", "v1.5", hold=hold)
    remembering = WeightTable.build(OLD_ONLY, "v1.4", "v1.5", remember_sessions=True)
    assert holding.tracks_sessions and holding.hold == hold and not holding.remember_sessions
    assert remembering.tracks_sessions and remembering.hold is None
    assert holding.choose(0) == "v1.5" and remembering.choose(0) == "v1.4"  # weights as ever


def test_a_table_may_not_hold_and_remember_at_once() -> None:
    """Under an active hold, remembering a new session would send its next turn to the held
    version: new -> old within one session."""
    hold = SessionHold("v1.4", until=time.monotonic() + 60, idle=30)
    with pytest.raises(ValueError, match="not both"):
        WeightTable.build(NEW_ONLY, "v1.4", "v1.5", hold=hold, remember_sessions=True)


# --- the handler's choice, on the example config's routes -----------------------------------


@pytest.fixture
def routes() -> dict[str, LiveRoute]:
    catalog = load_catalog(REPO / "config" / "router.yaml")
    return build_routes(catalog, build_upstreams(catalog.config))


@pytest.fixture
def proxy(routes: dict[str, LiveRoute]) -> Proxy:
    return Proxy(routes, 1 << 20, RecentRequests(1000, 60.0))


def choose(
    proxy: Proxy,
    route: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[str, str | None]:
    """The version `Proxy.choose` picks, and where it says the session key came from."""
    live = proxy.routes[route]
    dialect = live.dialect
    request = make_mocked_request("POST", dialect.path, headers=headers or {})
    x = Exchange(dialect, "req-1", AccessLog("off"), "POST", dialect.path)
    target = proxy.choose(x, live, request, {"model": route, **(body or {})})
    return target.bundle.version, x.session


def refund(proxy: Proxy, session: str) -> str:
    return choose(proxy, "refund-agent", headers={"X-Session-Id": session})[0]


def flip(route: LiveRoute, *, max_age: float = 900.0, idle: float = 300.0) -> None:
    """What a rolling release does to this instance: all new traffic to v1.5, and the
    sessions it saw on v1.4 held there."""
    hold = SessionHold("v1.4", until=time.monotonic() + max_age, idle=idle)
    route.table = WeightTable.build(NEW_ONLY, "v1.4", "v1.5", hold=hold)


def unflipped(route: LiveRoute) -> None:
    route.table = WeightTable.build(OLD_ONLY, "v1.4", "v1.5", remember_sessions=True)


def test_the_configs_tables_leave_the_memory_alone(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    assert not route.table.tracks_sessions
    for n in range(50):
        refund(proxy, f"s{n}")
    assert len(route.sessions) == 0


def test_sessions_seen_before_a_flip_stay_on_the_old_version(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    unflipped(route)
    before = [f"old-{n}" for n in range(100)]
    assert {refund(proxy, key) for key in before} == {"v1.4"}
    assert len(route.sessions) == 100

    flip(route)
    assert {refund(proxy, key) for key in before} == {"v1.4"}, "held on the old version"
    fresh = [f"new-{n}" for n in range(100)]
    assert {refund(proxy, key) for key in fresh} == {"v1.5"}, "new sessions go to v1.5 at once"
    assert {refund(proxy, key) for key in fresh} == {"v1.5"}, "and are never held later"
    assert route.sessions.seen("new-0") is None


def test_serving_a_held_session_refreshes_it(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    route.sessions.remember("talking", time.monotonic() - 200)
    flip(route, idle=300)
    seen = route.sessions.seen("talking")
    assert refund(proxy, "talking") == "v1.4"
    after = route.sessions.seen("talking")
    assert seen is not None and after is not None and after > seen + 199


def test_a_session_quiet_for_longer_than_idle_has_ended(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    route.sessions.remember("quiet", time.monotonic() - 301)
    route.sessions.remember("recent", time.monotonic() - 10)
    flip(route, idle=300)
    assert refund(proxy, "quiet") == "v1.5"
    assert refund(proxy, "recent") == "v1.4"
    assert refund(proxy, "quiet") == "v1.5", "an ended session does not come back"


def test_no_session_is_held_past_the_max_age(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    route.sessions.remember("s1", time.monotonic())
    flip(route, max_age=-1)  # the deadline has passed
    assert refund(proxy, "s1") == "v1.5"


def test_a_held_version_that_is_no_longer_served_holds_nothing(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    route.sessions.remember("s1", time.monotonic())
    hold = SessionHold("v0.9", until=time.monotonic() + 60, idle=60)  # not a version here
    route.table = WeightTable.build(NEW_ONLY, "v1.4", "v1.5", hold=hold)
    assert refund(proxy, "s1") == "v1.5"


def test_a_reverse_flip_holds_nothing(proxy: Proxy) -> None:
    """Halt or rollback: the instance's table goes back to v1.4 with no hold, and every
    session, the ones that started on v1.5 included, leaves v1.5 at once."""
    route = proxy.routes["refund-agent"]
    flip(route)
    assert refund(proxy, "on-new") == "v1.5"
    route.table = WeightTable.build(OLD_ONLY, "v1.4", "v1.5")
    assert refund(proxy, "on-new") == "v1.4"


def test_a_request_with_no_session_key_is_never_remembered(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    unflipped(route)
    assert choose(proxy, "refund-agent", {"messages": []})[1] == "random"
    assert len(route.sessions) == 0


def test_a_fingerprinted_session_is_remembered_and_held(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    unflipped(route)
    turn = {"messages": [{"role": "user", "content": "refund order 42"}]}
    assert choose(proxy, "refund-agent", turn) == ("v1.4", "fingerprint")
    assert len(route.sessions) == 1
    flip(route)
    assert choose(proxy, "refund-agent", turn) == ("v1.4", "fingerprint")
    other = {"messages": [{"role": "user", "content": "refund order 43"}]}
    assert choose(proxy, "refund-agent", other) == ("v1.5", "fingerprint")


def test_an_override_is_neither_remembered_nor_held(proxy: Proxy) -> None:
    route = proxy.routes["support-agent"]  # allow_version_override: true
    old_only = {"v2.0": BASIS_POINTS, "v2.1": 0}
    route.table = WeightTable.build(old_only, "v2.0", "v2.1", remember_sessions=True)
    body = {"user": "u1", "messages": [{"role": "user", "content": "hi"}]}
    pinned = choose(proxy, "support-agent", body, {"X-Bundle-Version": "v2.1"})
    assert pinned == ("v2.1", "override")
    assert len(route.sessions) == 0
    assert choose(proxy, "support-agent", body) == ("v2.0", "field")
    assert len(route.sessions) == 1

    hold = SessionHold("v2.0", until=time.monotonic() + 60, idle=60)
    new_only = {"v2.0": 0, "v2.1": BASIS_POINTS}
    route.table = WeightTable.build(new_only, "v2.0", "v2.1", hold=hold)
    pinned = choose(proxy, "support-agent", body, {"X-Bundle-Version": "v2.1"})
    assert pinned == ("v2.1", "override"), "the override wins over the hold"
    assert choose(proxy, "support-agent", body) == ("v2.0", "field")


def test_a_chained_turn_is_neither_remembered_nor_held(proxy: Proxy) -> None:
    route = proxy.routes["refund-agent"]
    # A Responses chain: the id was answered by v1.5, so its next turn goes there.
    proxy.answered.put("resp_1", route.targets["v1.5"].stats)
    route.table = WeightTable.build(
        {"v1.4": 5000, "v1.5": 5000}, "v1.4", "v1.5", remember_sessions=True
    )
    turn = {"previous_response_id": "resp_1", "messages": []}
    assert choose(proxy, "refund-agent", turn) == ("v1.5", "previous_response")
    assert len(route.sessions) == 0


# --- the configuration and a reload ---------------------------------------------------------


def test_session_memory_comes_from_the_config(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(router_config("http://127.0.0.1:9")))
    assert load_config(path).limits.session_memory == 100_000
    path.write_text(
        yaml.safe_dump(router_config("http://127.0.0.1:9", limits={"session_memory": 0}))
    )
    with pytest.raises(ConfigError) as failed:
        load_config(path)
    (problem,) = failed.value.problems
    assert problem.key == "limits.session_memory"


def test_a_rebuilt_route_keeps_its_sessions_and_takes_the_new_capacity(
    routes: dict[str, LiveRoute],
) -> None:
    catalog = load_catalog(REPO / "config" / "router.yaml")
    old = routes["refund-agent"]
    assert old.sessions.capacity == catalog.config.limits.session_memory
    for n in range(5):
        old.sessions.remember(f"s{n}", float(n))
    spec = catalog.routes["refund-agent"]
    upstreams = build_upstreams(catalog.config)
    same = build_route(catalog.config, spec, upstreams, old)
    assert same.sessions is old.sessions and len(same.sessions) == 5

    smaller = catalog.config.model_copy(
        update={"limits": catalog.config.limits.model_copy(update={"session_memory": 2})}
    )
    again = build_route(smaller, spec, upstreams, same)
    assert again.sessions.capacity == 2
    assert [again.sessions.seen(f"s{n}") for n in range(5)] == [None, None, None, 3.0, 4.0]
