"""The fleet view page on a real fleet's controller: 6 sidecars in 2 regions on a real Redis.
The grid shows every instance, grouped by region, and a wave flip recolours its cells."""

from __future__ import annotations

from collections.abc import Callable
from itertools import groupby

from testing.fleet import NEW, OLD, Fleet, rolling_routes
from tests.e2e.page.conftest import OpenPage
from tests.e2e.page.test_router_page import cli
from tests.e2e.page.view import LOAD_TIMEOUT_MS, grid, until_shown

REGIONS = ["us-east", "us-west"]
FLIPPED_FIRST = "sidecar-0"  # wave 1 of 6: us-east's first instance by name


async def test_the_grid_shows_every_instance_and_a_wave_flip_recolours_its_cell(
    start_fleet: Callable[..., Fleet], open_page: OpenPage
) -> None:
    sidecars = [(region, "paid") for region in REGIONS for _ in range(3)]
    # Waves of one instance; a long bake, so that only the first wave flips in this test.
    routes = rolling_routes(groups=REGIONS, bake="120s")
    fleet = start_fleet(sidecars, config={"routes": routes})
    region_of = {m.name: region for m, (region, _) in zip(fleet.sidecars, sidecars, strict=True)}
    watched = await open_page(f"{fleet.controller.router.metrics_url}/ui")
    page = watched.page
    await until_shown(page, "refund-agent", OLD)
    # Every sidecar reports within a few heartbeats; the grid shows each once.
    await page.wait_for_function(
        "(n) => document.querySelectorAll('[data-route=\"refund-agent\"] .grid-cell').length >= n",
        arg=len(sidecars),
        timeout=LOAD_TIMEOUT_MS * 2,
    )
    before = {c["instance"]: c for c in await grid(page, "refund-agent")}
    assert sorted(before) == sorted(region_of), before
    assert all(c["version"] == OLD and c["flipped"] != "true" for c in before.values()), before
    for instance, cell in before.items():
        assert region_of[instance] in cell["title"], cell
    # Grouped by region: the cells of a region are side by side.
    order = [region_of[c["instance"]] for c in await grid(page, "refund-agent")]
    assert [region for region, _ in groupby(order)] in (REGIONS, REGIONS[::-1]), order

    out = await cli(fleet.controller.router, "rollout", "start", "refund-agent")
    assert "rollout" in out.lower(), out
    await page.wait_for_function(
        """([instance, version]) => {
            const cell = document.querySelector(
                `[data-route="refund-agent"] .grid-cell[data-instance="${instance}"]`);
            return cell !== null && cell.dataset.version === version
                && cell.dataset.flipped === 'true';
        }""",
        arg=[FLIPPED_FIRST, NEW],
        timeout=LOAD_TIMEOUT_MS,
    )
    after = {c["instance"]: c for c in await grid(page, "refund-agent")}
    assert after[FLIPPED_FIRST]["colour"] != before[FLIPPED_FIRST]["colour"], after
    for instance in sorted(set(after) - {FLIPPED_FIRST}):
        assert after[instance]["version"] == OLD, after[instance]
        assert after[instance]["colour"] == before[instance]["colour"], after[instance]
    # The controller's own state agrees: wave 1 flipped sidecar-0 alone.
    waves = fleet.controller.status()["routes"]["refund-agent"]["waves"]
    assert (waves["wave"], waves["flipped"]) == (1, [FLIPPED_FIRST]), waves
    assert watched.problems() == []
