"""The controller's rolling releases against a real change core (its durable store in a temp
folder), with the fleet's evidence given by the test: races with operators, a pause, a halt
cut off half way, and the moves a rolling release refuses. No Redis, no processes: the
end-to-end behaviour is in tests/e2e/fleet/test_rolling.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.catalog import load_catalog
from router.control.build import build_routes, build_upstreams
from router.control.moves import PAUSED, RouteState, deploy, pause_ramp, reverse_waves, set_weights
from router.control.notify import Notifier
from router.control.plane import ControlPlane
from router.errors import Refused
from router.fleet.rolling import RollingReleases
from router.proxy.telemetry import GUARD_LATENCY_BOUNDS, Totals
from router.server import build_control
from testing.fleet import NEW, rolling_routes
from testing.servers import router_config

ROUTE = "refund-agent"
SIDECARS = [
    {"instance": f"{region}-{i}", "region": region, "pool": "paid"}
    for region in ("us-east", "us-west", "eu")
    for i in range(2)
]


class Evidence:
    """The fleet's pooled counts as the test sets them: `answers` per version, `failing`
    versions answer with errors only."""

    def __init__(self) -> None:
        self.answers = 0
        self.failing: set[str] = set()

    def totals(
        self, route: str, version: str, where: Callable[[Mapping[str, str]], bool] | None = None
    ) -> Totals:
        errors = self.answers if version in self.failing else 0
        latency = (0,) * (len(GUARD_LATENCY_BOUNDS) + 1)
        return Totals(requests=self.answers, errors=errors, latency=latency)


@dataclass
class Rig:
    control: ControlPlane
    rolling: RollingReleases
    evidence: Evidence

    @property
    def state(self) -> RouteState:
        return self.control.core.states[ROUTE]

    async def step(self) -> None:
        """One tick of the rolling loop for the route, as the loop runs it."""
        state = self.state
        assert state.ramp is not None and state.ramp.waves is not None
        await self.rolling._step(ROUTE, state, state.ramp.status, state.ramp.waves)

    async def change(self, move: Callable[[RouteState], RouteState], action: str) -> Any:
        return await self.control.core.change(ROUTE, move, actor="op", action=action, reason="op")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = router_config(
        "http://127.0.0.1:9",
        routes=rolling_routes(),
        fleet={"name": "t"},
        state_dir=str(tmp_path / "state"),
    )
    (tmp_path / "router.yaml").write_text(yaml.safe_dump(config))
    catalog = load_catalog(tmp_path / "router.yaml")
    routes = build_routes(catalog, build_upstreams(catalog.config))
    control, restored = build_control(catalog, routes, Notifier(None))
    await control.core.start(restored)
    evidence = Evidence()

    async def sidecars() -> list[dict[str, str]]:
        return SIDECARS

    rolling = RollingReleases(
        control.core,
        evidence,
        control.rollouts.plan,
        lambda name: control.watcher.guards.get(name),
        sidecars,
        lambda: True,
    )
    control.rollouts.next_phase = rolling.begin
    try:
        yield Rig(control, rolling, evidence)
    finally:
        await control.core.close()


async def started(rig: Rig) -> Rig:
    """A rolling release whose first wave has flipped and baked, with enough answers."""
    await rig.control.rollouts.command(ROUTE, "start", actor="op", reason="op")
    await rig.step()  # wave 1 flips
    assert rig.state.ramp is not None and rig.state.ramp.waves is not None
    assert rig.state.ramp.waves.done == 1
    await rig.step()  # its bake starts
    rig.rolling.progress[ROUTE].baked = 100.0
    rig.evidence.answers += 1000
    return rig


async def test_a_pause_that_lands_while_a_wave_is_decided_stops_the_next_flip(rig: Rig) -> None:
    await started(rig)
    tick = asyncio.ensure_future(rig.step())  # decides: wave 1 baked, flip wave 2
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.gather(tick, rig.change(pause_ramp, "rollout_pause"), return_exceptions=True)
    ramp = rig.state.ramp
    assert ramp is not None and ramp.waves is not None
    assert ramp.status == PAUSED
    assert ramp.waves.done == 1, "a wave flipped after the pause"


async def test_rollback_rolling_in_flight_is_not_overwritten_by_a_bake(rig: Rig) -> None:
    await started(rig)
    stale = rig.state  # the loop read this at the top of its tick
    assert stale.ramp is not None and stale.ramp.waves is not None
    operator = asyncio.ensure_future(rig.change(reverse_waves, "rollback_rolling"))
    await asyncio.sleep(0)
    tick = asyncio.ensure_future(
        rig.rolling._step(ROUTE, stale, stale.ramp.status, stale.ramp.waves)
    )
    await asyncio.gather(operator, tick, return_exceptions=True)
    ramp = rig.state.ramp
    assert ramp is not None and ramp.waves is not None
    assert ramp.waves.direction == "reverse", "the operator's rollback --rolling was lost"
    assert ramp.waves.done == 1


async def test_a_paused_release_is_still_judged_and_halts(rig: Rig) -> None:
    await started(rig)
    await rig.change(pause_ramp, "rollout_pause")
    await rig.step()  # the groups' baselines
    rig.evidence.failing.add(NEW)
    rig.evidence.answers += 100
    await rig.step()
    assert rig.state.candidate_state == "rolled_back"  # halted, then reverse-rolled
    ramp = rig.state.ramp
    assert ramp is not None and ramp.waves is not None and not ramp.waves.flipped


async def test_a_halt_cut_off_before_its_reverse_roll_is_finished_later(rig: Rig) -> None:
    await started(rig)
    await rig.step()  # baselines
    rig.evidence.failing.add(NEW)
    rig.evidence.answers += 100

    async def lost_the_lead(action: str, route: str, details: Mapping[str, Any]) -> None:
        if action == "wave_reverse":
            raise Refused("standing by", code="not_leader")

    rig.control.core.gate = lost_the_lead
    with pytest.raises(Refused):  # (the loop logs it and goes on)
        await rig.step()  # halts; the reverse-roll is refused
    ramp = rig.state.ramp
    assert ramp is not None and ramp.waves is not None
    assert ramp.status == "halted" and ramp.waves.flipped
    rig.control.core.gate = None  # the lead is back (or a new leader's loop runs)
    await rig.step()
    ramp = rig.state.ramp
    assert ramp is not None and ramp.waves is not None
    assert not ramp.waves.flipped and rig.state.candidate_state == "rolled_back"


async def test_deploy_and_weights_are_refused_during_a_rolling_release(rig: Rig) -> None:
    await started(rig)
    digest = rig.state.digests[NEW]
    with pytest.raises(Refused, match="rolling release"):
        deploy(rig.state, NEW, digest)
    await rig.change(pause_ramp, "rollout_pause")
    with pytest.raises(Refused, match="serve by wave, not by weight"):
        set_weights(rig.state, {"v1.4": 5000, NEW: 5000})
