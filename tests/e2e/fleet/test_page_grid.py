"""The fleet view page's data on a real fleet: the controller's grid lists every sidecar with
its flip and wave as a rolling release steps, and a sidecar serves itself as a fleet of one.
Real redis-server, controller and sidecar processes, the fake provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from testing.fleet import NEW, Fleet, Member, rolling_routes, wait_for

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
