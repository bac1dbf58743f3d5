"""The canary ramp on a real router, with bakes compressed to a second."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_api import cli, ok
from tests.e2e.control.test_core import CANARY_MODEL
from tests.e2e.traffic import burst, served_by

RAMP_SECONDS = 60.0  # every drive loop here is bounded by this and by RAMP_REQUESTS
RAMP_REQUESTS = 40_000


def ramp_config(provider_url: str, **plan: Any) -> dict[str, Any]:
    config = router_config(provider_url)
    route = config["routes"]["refund-agent"]
    route["weights"] = {"v1.4": 100, "v1.5": 0}
    route["rollout"] = {"steps": [1, 5, 25, 50, 100], "bake": ["1s"], "min_samples": 20, **plan}
    return config


def ramp(router: Router) -> dict[str, Any]:
    return dict(router.rollouts()["refund-agent"]["ramp"] or {})


async def drive_until(router: Router, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Send agent traffic until `done(refund-agent's state)`; returns that state."""
    sent, deadline = 0, time.monotonic() + RAMP_SECONDS
    while sent < RAMP_REQUESTS and time.monotonic() < deadline:
        await burst(router.url, 200, concurrency=40)
        sent += 200
        state = router.rollouts()["refund-agent"]
        if done(state):
            return dict(state)
    raise AssertionError(f"not reached after {sent} requests: {router.rollouts()['refund-agent']}")


def actions(router: Router) -> list[str]:
    return [r["action"] for r in router.audit() if r.get("route") == "refund-agent"]


async def test_a_healthy_ramp_walks_every_step_to_promotion(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url))
    out = ok(router, "rollout", "start", "refund-agent")
    assert "rollout running at 1%" in out
    state = await drive_until(router, lambda s: s["active"] == "v1.5")
    assert state["candidate"] is None and state["weights"]["v1.5"] == 10000
    assert state["ramp"]["status"] == "promoted"
    assert actions(router) == [
        "init",
        "rollout_start",
        "ramp_step",
        "ramp_step",
        "ramp_step",
        "ramp_promote",
    ]
    steps = [r["after"]["weights"]["v1.5"] for r in router.audit() if r["action"] == "ramp_step"]
    assert steps == [500, 2500, 5000]
    results = await burst(router.url, 100)
    assert served_by(results, "v1.5") == 100


async def test_a_ramp_that_trips_at_25_percent_rolls_back(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url))
    ok(router, "rollout", "start", "refund-agent")
    await drive_until(router, lambda s: s["ramp"]["percent"] == 25)
    fake.behave(CANARY_MODEL, error_rate=0.5)
    state = await drive_until(router, lambda s: s["candidate_state"] == "rolled_back")
    assert state["ramp"]["status"] == "rolled_back" and state["ramp"]["percent"] == 25
    assert state["weights"] == {"v1.4": 10000, "v1.5": 0}
    assert state["trip"]["rule"] == "error_rate"
    assert actions(router)[-1] == "trip"
    assert served_by(await burst(router.url, 200), "v1.5") == 0


async def test_with_auto_rollback_off_a_breach_halts_and_alerts(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url, auto_rollback=False))
    ok(router, "rollout", "start", "refund-agent")
    await drive_until(router, lambda s: s["ramp"]["percent"] == 5)
    fake.behave(CANARY_MODEL, error_rate=0.5)
    state = await drive_until(router, lambda s: s["ramp"]["status"] == "halted")
    assert state["candidate_state"] == "live" and state["weights"]["v1.5"] == 500  # kept
    assert "guardrail error_rate" in state["ramp"]["note"]
    # The announcement follows the change once it is durable, a moment after the swap that
    # /rollouts shows.
    deadline = time.monotonic() + 5
    while "rollout of v1.5 HALTED at 5%" not in router.process.output():
        assert time.monotonic() < deadline, router.process.output()
        await asyncio.sleep(0.05)
    assert "rollout halted: step 2/5 at 5%" in ok(router, "status")
    ok(router, "rollback", "refund-agent", "--reason", "the halt was right")
    assert router.rollouts()["refund-agent"]["ramp"]["status"] == "rolled_back"


async def test_a_restart_mid_ramp_resumes_the_same_step(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url, bake=["1s", "1h", "1h", "1h"]))
    ok(router, "rollout", "start", "refund-agent")
    await drive_until(router, lambda s: s["ramp"]["percent"] == 5)
    await asyncio.sleep(6)  # past one bake checkpoint (every 5 s)
    before = ramp(router)
    router.kill()
    router.start()
    after = ramp(router)
    assert (after["status"], after["step"], after["percent"]) == ("running", 1, 5)
    assert 4.5 <= after["baked"] <= before["baked"] + 6  # the bake it had, not the downtime
    results = await burst(router.url, 400)
    assert 0 < served_by(results, "v1.5") < 80  # still about 5 %


async def test_pause_resume_and_abort(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url, steps=[5, 25, 100]))
    ok(router, "rollout", "start", "refund-agent")
    ok(router, "rollout", "pause", "refund-agent", "--reason", "hold for the launch")
    await burst(router.url, 2000, concurrency=40)  # plenty of evidence, but paused
    await asyncio.sleep(1.5)  # and longer than the bake
    assert ramp(router)["status"] == "paused" and ramp(router)["percent"] == 5

    ok(router, "weights", "refund-agent", "v1.4=50", "v1.5=50")  # paused: people decide
    ok(router, "rollout", "resume", "refund-agent")
    assert router.rollouts()["refund-agent"]["weights"]["v1.5"] == 500  # the step's weight again
    refused = cli(router, "weights", "refund-agent", "v1.4=50", "v1.5=50")
    assert refused.returncode == 1 and "a rollout is running" in refused.stderr

    ok(router, "rollout", "abort", "refund-agent", "--reason", "not today")
    state = router.rollouts()["refund-agent"]
    assert state["ramp"]["status"] == "aborted" and state["weights"]["v1.5"] == 0
    assert state["candidate_state"] == "live"  # still deployed, for another try
    assert served_by(await burst(router.url, 100), "v1.5") == 0
    refused = cli(router, "rollout", "resume", "refund-agent")
    assert refused.returncode == 1 and "it is aborted" in refused.stderr
    assert actions(router)[1:] == [
        "rollout_start",
        "rollout_pause",
        "weights",
        "rollout_resume",
        "rollout_abort",
    ]


async def test_too_little_traffic_extends_the_bake_and_says_so(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(ramp_config(fake.url, min_samples=10_000))
    ok(router, "rollout", "start", "refund-agent")
    await burst(router.url, 400)
    await asyncio.sleep(1.5)  # the 1 s bake is over
    status = ok(router, "status")
    assert "bake extended, too little traffic to judge" in status, status
    assert "/10000 answers at this step" in status
    assert ramp(router)["percent"] == 1  # it did not advance blind
