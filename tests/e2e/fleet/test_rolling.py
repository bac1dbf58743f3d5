"""Rolling releases across a real fleet: waves by region, the halt, the reverse-roll, and
restarts mid-wave. Real redis-server, real controller and sidecar processes, the fake
provider; the waves' order, sizes and bakes are read back from the controller's audit log,
and what each sidecar served from its X-Bundle-Version headers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from testing.fleet import NEW, OLD, Fleet, Member, rolling_routes, wait_for
from testing.servers import ProviderProcess

REGIONS = ["us-east", "us-west", "eu"]
NEW_MODEL = "claude-opus-4-7-20260108"


def turn(client: httpx.Client, member: Member, session: str) -> httpx.Response:
    """One turn of refund-agent's `session` on this sidecar."""
    return client.post(
        f"{member.router.url}/v1/messages",
        json={
            "model": "refund-agent",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "hello"}],
        },
        headers={"X-Session-Id": session},
    )


class Traffic:
    """Requests to every sidecar, each with a new session, until stopped (bounded): what
    each sidecar served, in order."""

    def __init__(self, sidecars: list[Member], seconds: float = 120.0) -> None:
        self.sidecars = sidecars
        self.deadline = time.monotonic() + seconds
        self.served: dict[str, list[str]] = {m.name: [] for m in sidecars}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < self.deadline:
                for member in self.sidecars:
                    try:
                        answer = turn(client, member, uuid.uuid4().hex)
                    except httpx.HTTPError as exc:  # a sidecar being restarted
                        self.failures.append(f"{member.name}: {exc}")
                        continue
                    version = answer.headers.get("X-Bundle-Version")
                    if version:
                        self.served[member.name].append(version)
                time.sleep(0.01)

    def versions(self, member: Member) -> Counter[str]:
        return Counter(self.served[member.name])

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=15)


def serves(member: Member, versions: set[str]) -> Callable[[], bool]:
    return lambda: member.served("refund-agent", 5) == versions


def records(fleet: Fleet, *actions: str) -> list[dict[str, Any]]:
    return [r for r in fleet.controller.router.audit() if r["action"] in actions]


def start_rollout(fleet: Fleet) -> None:
    # Every sidecar must report before the plan is made from them.
    wait_for(
        "every sidecar reports",
        lambda: len(fleet.controller.admin("GET", "/fleet")["sidecars"]) == len(fleet.sidecars),
        timeout=30,
    )
    fleet.controller.admin("POST", "/rollout", {"route": "refund-agent", "action": "start"})


def cli(fleet: Fleet, *args: str) -> subprocess.CompletedProcess[str]:
    """`bundle-router ARGS` on the controller's socket, as an operator types it."""
    config = str(fleet.controller.router.config_path)
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--config", config],
        capture_output=True,
        text=True,
        timeout=60,
    )


def state_of(fleet: Fleet) -> dict[str, Any]:
    routes: dict[str, Any] = fleet.controller.status()["routes"]
    return dict(routes["refund-agent"])


def waves_of(fleet: Fleet) -> dict[str, Any]:
    status = fleet.controller.status()["routes"]["refund-agent"]
    return status.get("waves") or {}


def test_a_canary_then_a_three_region_rolling_release_completes_in_order(
    start_fleet: Callable[..., Fleet],
) -> None:
    # One plan: a canary at 50 % in the canary pool (one sidecar per region), then waves.
    sidecars = [(region, pool) for region in REGIONS for pool in ("canary", "paid")]
    routes = rolling_routes()
    routes["refund-agent"]["rollout"].update(
        steps=[50, 100], bake=["3s"], min_samples=5, canary_pool="canary"
    )
    fleet = start_fleet(sidecars, config={"routes": routes})
    with Traffic(fleet.sidecars).running() as traffic:
        start_rollout(fleet)
        ramp = fleet.controller.status()["routes"]["refund-agent"]["rollout"]
        assert (ramp["phase"], ramp["percent"]) == ("canary", 50), ramp
        # The canary's weights apply in the canary pool only.
        assert NEW in fleet.sidecars[0].served("refund-agent", 20)
        assert fleet.sidecars[1].served("refund-agent", 20) == {OLD}
        wait_for("the waves begin", lambda: (waves_of(fleet).get("wave") or 0) >= 1, timeout=60)
        shown = cli(fleet, "rollout", "status", "refund-agent")
        assert shown.returncode == 0, shown.stderr
        assert "the fleet flips in waves" in shown.stdout and "us-east" in shown.stdout
        assert "blast radius" in shown.stdout, shown.stdout
        wait_for(
            "the release is promoted",
            lambda: fleet.controller.status()["routes"]["refund-agent"]["active"] == NEW,
            timeout=120,
        )
    # A fleet drill, timed to the last sidecar's swap.
    drill = fleet.controller.admin("POST", "/drill", {"route": "refund-agent", "force": True})
    assert drill["timed_to"] == "last sidecar's swap" and drill["sidecars"] == 6, drill
    assert drill["rolled_back_to"] == OLD
    assert all(m.served("refund-agent", 3) == {NEW} for m in fleet.sidecars)  # rolled forward
    plan = records(fleet, "waves_start")
    assert len(plan) == 1, plan
    assert plan[0]["reason"].startswith("canary baked"), plan[0]["reason"]
    assert records(fleet, "rollout_start")[0]["after"]["ramp"]["scope"] == "canary"
    assert [w["group"] for w in plan[0]["details"]["plan"]] == [r for r in REGIONS for _ in (0, 1)]
    starts = records(fleet, "wave_start")
    assert [r["details"]["group"] for r in starts] == [r for r in REGIONS for _ in (0, 1)]
    assert all(len(r["details"]["instances"]) == 1 for r in starts)
    baked = records(fleet, "wave_baked")
    assert [r["details"]["wave"] for r in baked] == list(range(1, 7))
    assert all(r["details"]["baked"] >= 1.0 for r in baked), [r["details"] for r in baked]
    assert all(r["details"]["samples"] >= 5 for r in baked), [r["details"] for r in baked]
    # Every wave baked before the next flipped: the audit order is start, baked, start, ...
    sequence = [r["action"] for r in records(fleet, "wave_start", "wave_baked", "ramp_promote")]
    assert sequence == ["wave_start", "wave_baked"] * 6 + ["ramp_promote"]
    # Every sidecar ends on the new version.
    for member in fleet.sidecars:
        wait_for(f"{member.name} serves {NEW}", serves(member, {NEW}))
    assert not traffic.failures


@pytest.fixture
def bad_provider(tmp_path: Path) -> Iterator[ProviderProcess]:
    """A second provider, for one region: the new model fails there."""
    (tmp_path / "bad").mkdir()
    running = ProviderProcess(tmp_path / "bad")
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("auto_rollback", ["reverse", "halt"])
def test_a_regression_in_one_region_halts_before_the_next_and_reverse_rolls(
    start_fleet: Callable[..., Fleet], bad_provider: ProviderProcess, auto_rollback: str
) -> None:
    sidecars = [(region, "paid") for region in REGIONS for _ in range(2)]
    # sidecar-2 and sidecar-3 are us-west: their provider fails the new model.
    bad_provider.behave(model=NEW_MODEL, error_rate=1.0)
    # The sidecars' own guardrails (the local floor) are off here, so that the group gauge
    # on the controller is the one that decides, and its halt is the one under test.
    routes = rolling_routes(auto_rollback=auto_rollback, bake="2s", reverse_bake="1s")
    unguarded = {name: {**route, "guardrails": "off"} for name, route in routes.items()}
    fleet = start_fleet(
        sidecars,
        config={"routes": unguarded},
        controller_config={"routes": routes},
        provider_urls={"sidecar-2": bad_provider.url, "sidecar-3": bad_provider.url},
    )
    east, west, eu = fleet.sidecars[0:2], fleet.sidecars[2:4], fleet.sidecars[4:6]
    with Traffic(fleet.sidecars).running() as traffic:
        start_rollout(fleet)
        wait_for("the halt", lambda: bool(records(fleet, "wave_halt")), timeout=90)
        if auto_rollback == "reverse":
            wait_for("the reverse-roll", lambda: len(records(fleet, "wave_reverse")) == 2)
        time.sleep(1.5)  # traffic after the halt, to see where it goes
    (halt,) = records(fleet, "wave_halt")
    assert halt["details"]["group"] == "us-west", halt
    assert "us-west" in halt["reason"] and "eu never received it" in halt["reason"]
    assert halt["details"]["never_flipped"] == ["eu"]
    # Halted before us-west's second wave and before eu's first.
    flipped = [i for r in records(fleet, "wave_start") for i in r["details"]["instances"]]
    assert flipped == ["sidecar-0", "sidecar-1", "sidecar-2"], flipped
    # eu never served the new version, not once.
    for member in eu:
        assert traffic.versions(member)[NEW] == 0, (member.name, traffic.versions(member))
        assert member.served("refund-agent", 5) == {OLD}
    state = fleet.controller.status()["routes"]["refund-agent"]
    if auto_rollback == "reverse":
        first, rest = records(fleet, "wave_reverse")
        assert first["details"]["instances"] == ["sidecar-2"]  # the breached group first
        assert sorted(rest["details"]["instances"]) == ["sidecar-0", "sidecar-1"]
        assert state["candidate_state"] == "rolled_back"
        for member in [*east, *west]:
            wait_for(
                f"{member.name} is back on {OLD}",
                serves(member, {OLD}),
            )
    else:
        assert state["rollout"]["status"] == "halted"
        # Halt only: the flipped instances stay flipped for a person to decide.
        assert east[0].served("refund-agent", 5) == {NEW}
        assert west[1].served("refund-agent", 5) == {OLD}
        # ... who walks them back wave by wave, the newest wave first.
        walk = cli(fleet, "rollback", "refund-agent", "--rolling")
        assert walk.returncode == 0, walk.stderr
        assert "walking 3 flipped instance(s) back" in walk.stdout
        wait_for(
            "the walk back", lambda: state_of(fleet)["candidate_state"] == "rolled_back", timeout=30
        )
        walked = [r["details"]["instances"] for r in records(fleet, "wave_reverse")]
        assert walked == [["sidecar-2"], ["sidecar-1"], ["sidecar-0"]], walked
        for member in [*east, *west]:
            wait_for(f"{member.name} is back on {OLD}", serves(member, {OLD}))


def version_for(member: Member, session: str) -> str:
    """The version that answers one turn of `session` on this sidecar."""
    with httpx.Client(timeout=10) as client:
        answer = turn(client, member, session)
    answer.raise_for_status()
    return answer.headers["X-Bundle-Version"]


def test_sessions_stick_across_a_flip_and_restarts_mid_wave_resume_the_same_wave(
    start_fleet: Callable[..., Fleet],
) -> None:
    sidecars = [(region, "paid") for region in REGIONS[:2] for _ in range(2)]
    fleet = start_fleet(sidecars, config={"routes": rolling_routes(bake="60s")})
    first = fleet.sidecars[0]  # wave 1: us-east's first instance by name
    ongoing = f"ongoing-{uuid.uuid4().hex}"
    assert version_for(first, ongoing) == OLD  # a session that began before the release
    with Traffic(fleet.sidecars).running():
        start_rollout(fleet)
        wait_for("wave 1 flips", lambda: waves_of(fleet).get("wave") == 1, timeout=30)
        wait_for("sidecar-0 flips", serves(first, {NEW}))
        # The session that began on the old version keeps it; a new one gets the new version.
        assert version_for(first, ongoing) == OLD
        assert version_for(first, f"new-{uuid.uuid4().hex}") == NEW
        wait_for(
            "the bake is checkpointed", lambda: waves_of(fleet).get("baked", 0) >= 6, timeout=30
        )
        fleet.controller.router.stop()
        fleet.controller.router.start()
        waves = waves_of(fleet)
        assert waves["wave"] == 1 and waves["status"] == "running"
        assert waves["baked"] >= 5.0, waves  # the checkpointed bake, not zero
        flipped, unflipped = fleet.sidecars[0], fleet.sidecars[1]
        for member in (flipped, unflipped):
            member.router.stop()
            member.router.start()
        wait_for(
            "the flipped sidecar serves the new version",
            lambda: flipped.served("refund-agent", 5) == {NEW},
        )
        # A restarted sidecar has forgotten its sessions: it sends them to its role's version.
        assert version_for(flipped, ongoing) == NEW
        assert unflipped.served("refund-agent", 5) == {OLD}
        assert fleet.sidecars[2].served("refund-agent", 5) == {OLD}
