"""Found in review (issue 16): a trip is never undone, not by Redis coming back empty while the
controller is down, nor by a sidecar refusing the fleet's snapshot; a broken snapshot in Redis
does not stop a controller from taking the lead; a Redis that lost its last writes is brought
forward again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testing.fleet import Fleet, Member, wait_for
from testing.redis import RedisServer
from testing.servers import ProviderProcess
from tests.e2e.fleet.test_propagation import (
    APPLIED_WITHIN,
    EIGHT,
    ROUTE,
    bundle_key,
    change,
    publish,
    reached_every_sidecar,
    stack,
    with_v16,
)

SUPPORT = "support-agent"


def weights(member: Member, route: str) -> dict[str, float]:
    versions = member.status()["routes"][route]["versions"]
    return {v["version"]: v["weight_percent"] for v in versions if v["weight_percent"]}


def test_a_trip_outlives_redis_coming_back_empty_while_the_controller_is_down(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    fleet = start_fleet(EIGHT[:2], fleet={"lease": "1s"})
    controller, tripping, other = fleet.controller, *fleet.sidecars
    reached_every_sidecar(
        fleet, change(controller, "/weights", {"weights": {"v1.4": 50, "v1.5": 50}}), None
    )
    controller.router.stop()
    tripping.admin("POST", "/rollback", {"route": ROUTE, "reason": "incident"})  # a trip by hand
    wait_for("the trip reaches the other sidecar", lambda: weights(other, ROUTE) == {"v1.4": 100.0})

    redis_server.kill()
    redis_server.start(wipe=True)  # the trip is gone from Redis; the controller's log lacks it
    controller.router.start()

    def recorded() -> bool:
        return any(r["action"] == "trip" for r in controller.admin("GET", f"/audit?route={ROUTE}"))

    wait_for("the controller takes the trip in", recorded, APPLIED_WITHIN)
    wait_for(
        "the controller keeps the canary drained",
        lambda: stack(controller.status())["candidate_state"] == "rolled_back",
    )
    epoch = controller.epoch()
    for sidecar in fleet.sidecars:

        def caught_up(sidecar: Member = sidecar) -> bool:
            return sidecar.epoch() >= epoch

        wait_for(f"{sidecar.name} at epoch {epoch}", caught_up, APPLIED_WITHIN)
        assert weights(sidecar, ROUTE) == {"v1.4": 100.0}, sidecar.name
        assert sidecar.served(ROUTE, 10) == {"v1.4"}
    wait_for(
        "the outbox empties once taken in",
        lambda: tripping.status()["fleet"]["trips_not_taken_in"] == 0,
    )


def test_a_sidecar_that_refuses_the_snapshot_still_applies_a_trip(
    tmp_path: Path,
    provider: ProviderProcess,
    redis_server: RedisServer,
    start_fleet: Callable[..., Fleet],
) -> None:
    fleet = start_fleet(EIGHT[:2], controller_config={"routes": with_v16(tmp_path, provider)})
    controller, tripping, refusing = fleet.controller, *fleet.sidecars
    assert publish(fleet, "v1.6").returncode == 0
    redis_server.client().delete(bundle_key(fleet, redis_server, "v1.6"))
    change(controller, "/rollback", {})
    change(controller, "/deploy", {"version": "v1.6"})
    wait_for("the sidecars refuse v1.6", lambda: refusing.status()["fleet"]["refused"] is not None)
    assert weights(refusing, SUPPORT) == {"v2.0": 90.0, "v2.1": 10.0}

    tripping.admin("POST", "/rollback", {"route": SUPPORT, "reason": "support canary bad"})
    wait_for(
        "the refusing sidecar drains support-agent's canary",
        lambda: weights(refusing, SUPPORT) == {"v2.0": 100.0},
        APPLIED_WITHIN,
    )
    assert refusing.status()["fleet"]["refused"] is not None  # still refusing v1.6
    assert refusing.served(ROUTE, 5) == {"v1.4"}


def test_a_takeover_over_a_snapshot_that_is_not_json_leads_and_repairs_it(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    fleet = start_fleet([], controllers=2, fleet={"lease": "1s"})
    client = redis_server.client()
    state = f"br:{{{fleet.name}}}:state"

    def leader() -> Member | None:
        return next((c for c in fleet.controllers if c.status()["fleet"]["leading"]), None)

    wait_for("a leader", lambda: leader() is not None and client.hget(state, "body") is not None)
    old = leader()
    assert old is not None
    good: Any = client.hget(state, "body")
    client.hset(state, "body", "not json")  # what the next takeover reads
    os.kill(old.router.process.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past the lease: the standby takes it over a broken snapshot
    finally:
        os.kill(old.router.process.proc.pid, signal.SIGCONT)
    wait_for("one controller leads again", lambda: leader() is not None, APPLIED_WITHIN)
    new = leader()
    assert new is not None
    answer = change(new, "/weights", {"weights": {"v1.4": 100, "v1.5": 0}})
    assert answer > 0
    assert client.hget(state, "body") not in (None, "not json", good)


def test_redis_back_behind_the_controller_is_published_again(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    """Redis lost its last writes (as with an append-only file fsynced every second): its
    snapshot is older than the controller's. The controller publishes again, above it."""
    fleet = start_fleet(EIGHT[:1])
    controller, sidecar = fleet.controller, fleet.sidecars[0]
    before = change(controller, "/weights", {"weights": {"v1.4": 90, "v1.5": 10}})
    client = redis_server.client()
    state = f"br:{{{fleet.name}}}:state"
    client.hset(state, mapping={"epoch": before - 1})  # the last write lost
    wait_for(
        "the controller publishes again",
        lambda: int(client.hget(state, "epoch") or 0) > before,
        APPLIED_WITHIN,
    )
    wait_for("the sidecar follows", lambda: sidecar.epoch() > before, APPLIED_WITHIN)
    assert weights(sidecar, ROUTE) == {"v1.4": 90.0, "v1.5": 10.0}
