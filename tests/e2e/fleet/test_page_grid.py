"""The fleet view page's data on a real fleet: the controller's grid lists every sidecar with
its flip and wave as a rolling release steps, and a sidecar serves itself as a fleet of one.
Real redis-server, controller and sidecar processes, the fake provider."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

import httpx

from testing.fleet import NEW, Fleet, Member, rolling_routes, wait_for
from testing.redis import RedisServer
from tests.e2e.admin.test_page_data import events

REGIONS = ["us-east", "us-west", "eu"]


def page_state(member: Member) -> dict[str, Any]:
    answer = httpx.get(f"{member.router.metrics_url}/ui/state", timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def cells(member: Member) -> dict[str, dict[str, Any]]:
    return {cell["instance"]: cell for cell in page_state(member)["grid"]}


def test_the_controllers_grid_shows_every_sidecar_with_its_flip_and_wave(
    start_fleet: Callable[..., Fleet],
) -> None:
    # One sidecar per region, waves of one by region, and a bake too long to end in the test:
    # the release flips wave 1 (us-east) at once and stays there.
    fleet = start_fleet(
        [(region, "paid") for region in REGIONS],
        config={"routes": rolling_routes(bake="10m")},
    )
    controller, (east, west, eu) = fleet.controller, fleet.sidecars
    wait_for("every sidecar in the grid", lambda: len(cells(controller)) == 3, timeout=30)
    before = cells(controller)
    assert {c["region"] for c in before.values()} == set(REGIONS)
    assert all(c["routes"]["refund-agent"]["flipped"] is None for c in before.values())

    controller.admin("POST", "/rollout", {"route": "refund-agent", "action": "start"})

    def flipped() -> bool:
        grid = cells(controller)
        return grid[east.name]["routes"]["refund-agent"]["flipped"] is True

    wait_for("sidecar-0's flip in the controller's grid", flipped, timeout=30)
    seen = page_state(controller)
    assert seen["process"]["role"] == "controller" and seen["process"]["leading"] is True
    grid = {cell["instance"]: cell for cell in seen["grid"]}
    assert list(grid) == [eu.name, east.name, west.name]  # by region, pool, instance
    shown = {
        name: (
            cell["mark"],
            cell["routes"]["refund-agent"]["flipped"],
            cell["routes"]["refund-agent"]["wave"],
        )
        for name, cell in grid.items()
    }
    assert shown[east.name] == ("ok", True, 1), shown
    assert shown[west.name][1:] == (False, 2) and shown[eu.name][1:] == (False, 3), shown
    assert grid[east.name]["routes"]["refund-agent"]["served"] == {"v1.4": 0, NEW: 10000}
    route = seen["routes"]["refund-agent"]
    assert (route["waves"]["wave"], route["waves"]["waves"]) == (1, 3)
    assert route["waves"]["flipped"] == [east.name]
    assert route["next_step"].startswith(f"wave 2/3: us-west flips {west.name} when the bake ends")

    # A sidecar is a fleet of one: its own cell, with its own flip and wave.
    (own,) = page_state(east)["grid"]
    assert own["instance"] == east.name and own["region"] == "us-east"
    assert own["routes"]["refund-agent"]["flipped"] is True
    assert own["routes"]["refund-agent"]["wave"] == 1
    assert page_state(east)["process"]["role"] == "sidecar"


def next_change(received: queue.Queue[tuple[float, str, str]], within: float) -> float:
    """When the next `change` event came (pings skipped); fails after `within` s."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        try:
            at, event, _ = received.get(timeout=left)
        except queue.Empty:
            break
        if event == "change":
            return at
    raise AssertionError(f"no change event within {within}s")


def test_an_open_page_is_told_when_its_sidecar_loses_redis_and_gets_it_back(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    """No change record marks these: the page's own watch tells of them, within a second
    on a quiet machine (the banner says the grid is stale, then clears)."""
    fleet = start_fleet([("us-east", "paid")])
    sidecar = fleet.sidecars[0]
    wait_for("the sidecar has the fleet's state", lambda: sidecar.epoch() > 0)
    with events(sidecar.router) as received:
        next_change(received, 10)  # sent on connect
        while True:  # until the stream is quiet
            try:
                received.get(timeout=1.5)
            except queue.Empty:
                break
        lost = time.monotonic()
        redis_server.kill()
        told = next_change(received, 5) - lost
        assert page_state(sidecar)["process"]["redis_connected"] is False
        redis_server.start()
        back = time.monotonic()
        wait_for(
            "the page says Redis is back",
            lambda: page_state(sidecar)["process"]["redis_connected"] is True,
            timeout=15,
        )
        told_back = next_change(received, 5) - back
    print(f"an open page was told of the loss in {told:.2f}s, of the return in {told_back:.2f}s")
