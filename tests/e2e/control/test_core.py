"""Guardrail trips on a real router: each regression injected through the fake provider
trips its rule, the canary is drained at once, and the decision survives a crash."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
import yaml

from router.control.durable import AuditLog, verify
from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_api import cli
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.traffic import burst, served_by

CONTROL_MODEL = "claude-sonnet-4-6-20260215"  # refund-agent v1.4, the active version
CANARY_MODEL = "claude-opus-4-7-20260108"  # refund-agent v1.5, the candidate
TRIP_BUDGET = 3000  # requests; every drive loop in this file is bounded by this and by time
TRIP_SECONDS = 60.0


def half_canary(provider_url: str, canary_percent: int = 50) -> dict[str, Any]:
    """The example config with refund-agent's canary at 50 %, so rules fill up quickly."""
    config = router_config(provider_url)
    config["routes"]["refund-agent"]["weights"] = {
        "v1.4": 100 - canary_percent,
        "v1.5": canary_percent,
    }
    return config


async def drive_until_trip(router: Router, route: str = "refund-agent") -> dict[str, Any]:
    """Send bursts until the route's candidate is rolled back; returns the trip."""
    sent, deadline = 0, time.monotonic() + TRIP_SECONDS
    while sent < TRIP_BUDGET and time.monotonic() < deadline:
        await burst(router.url, 40, route=route)
        sent += 40
        state = router.rollouts()[route]
        if state["candidate_state"] == "rolled_back":
            return dict(state["trip"])
    raise AssertionError(f"no trip after {sent} requests: {router.rollouts()[route]}")


REGRESSIONS: dict[str, dict[str, dict[str, Any]]] = {
    "error_rate": {CANARY_MODEL: {"error_rate": 1.0, "error_kind": "500"}},
    "p95_latency": {CANARY_MODEL: {"latency_ms": 400}},
    "tool_call_failure_rate": {
        CONTROL_MODEL: {"tool_call_rate": 1.0},
        CANARY_MODEL: {"tool_call_rate": 1.0, "invalid_tool_call_rate": 1.0},
    },
    "refusal_rate": {CANARY_MODEL: {"refusal_rate": 1.0}},
    "cost_per_request": {CANARY_MODEL: {"output_tokens": 2000}},
}


@pytest.mark.parametrize("rule", list(REGRESSIONS))
async def test_a_regression_trips_its_rule_and_drains_the_canary(
    rule: str, fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    for model, behaviour in REGRESSIONS[rule].items():
        fake.behave(model, **behaviour)
    # The latency rule bounds the control's p95 first, which takes a few hundred control
    # answers; at 10 % the control has them by the time the canary has its 30.
    canary_percent = 10 if rule == "p95_latency" else 50
    router = start_router(half_canary(fake.url, canary_percent))
    trip = await drive_until_trip(router)
    assert trip["rule"] == rule, trip
    assert trip["samples"] >= trip["min_samples"] and trip["confidence"] == 0.9998

    after = await burst(router.url, 200, concurrency=50)
    assert served_by(after, "v1.5") == 0 and served_by(after, "v1.4") == 200, after
    state = router.rollouts()["refund-agent"]
    assert state["weights"] == {"v1.4": 10000, "v1.5": 0}
    record = router.audit()[-1]
    assert (record["action"], record["actor"], record["route"]) == (
        "trip",
        "guardrail",
        "refund-agent",
    )
    assert record["reason"].startswith(f"guardrail {rule} (")
    assert record["before"]["weights"] == {
        "v1.4": 10000 - canary_percent * 100,
        "v1.5": canary_percent * 100,
    }
    assert record["after"]["candidate_state"] == "rolled_back"
    metrics = scrape(router)
    rv = {"route": "refund-agent", "version": "v1.5"}
    assert value(metrics, "router_weight_ratio", **rv) == 0.0
    assert value(metrics, "router_candidate_rolled_back", **rv) == 1.0
    assert value(metrics, "router_guardrail_trips_total", rule=rule, **rv) == 1.0


async def test_a_healthy_canary_under_sustained_traffic_does_not_trip(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """The same behaviour on both versions (Opus costs about 6x per answer, under the
    example's limit of 8x): sustained traffic with tool calls, refusals and errors at
    everyday rates."""
    everyday = {
        "tool_call_rate": 0.3,
        "invalid_tool_call_rate": 0.02,
        "refusal_rate": 0.02,
        "error_rate": 0.005,
        "latency_ms": 5,
        "latency_jitter_ms": 5,
    }
    for model in (CONTROL_MODEL, CANARY_MODEL):
        fake.behave(model, **everyday)
    router = start_router(half_canary(fake.url))
    results = await burst(router.url, 2000, concurrency=40)
    assert served_by(results, "v1.5") > 800
    state = router.rollouts()["refund-agent"]
    assert state["candidate_state"] == "live" and state["trip"] is None, state
    assert all(not v["waiting"] and not v["tripped"] for v in state["verdicts"]), state
    assert [r["action"] for r in router.audit()] == ["init", "init"]


async def test_a_rolled_back_canary_stays_at_zero_after_a_restart(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    fake.behave(CANARY_MODEL, error_rate=1.0)
    router = start_router(half_canary(fake.url))
    await drive_until_trip(router)
    router.stop()
    fake.reset()  # even healthy now, it waits for a person
    router.start()
    results = await burst(router.url, 200)
    assert served_by(results, "v1.5") == 0, results
    assert router.rollouts()["refund-agent"]["candidate_state"] == "rolled_back"
    log = (router.tmp / "router-2.log").read_text()
    assert "the config asks for" in log and "Live state is kept" in log


def test_an_unguarded_canary_is_said_so(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = half_canary(fake.url)
    config["routes"]["refund-agent"]["guardrails"] = "off"
    router = start_router(config)
    state = router.rollouts()["refund-agent"]
    assert not state["guarded"] and state["verdicts"] == []
    assert "the canary is unguarded" in router.process.output()


async def test_kill_9_around_a_trip_never_loses_it(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """20 crashes at random moments while a bad canary is being tripped. After each restart:
    the audit chain verifies, and a trip that reached the log holds from the first request;
    one that had not is made again. Either way the canary ends at 0."""
    fake.behave(CANARY_MODEL, error_rate=1.0)
    rng = random.Random(20261126)
    durable_before_kill = 0
    for loop in range(20):
        router = start_router(half_canary(fake.url))
        traffic = burst(router.url, 400, concurrency=10)
        try:
            await _with_kill_after(traffic, router, rng.uniform(0.0, 0.4))
        finally:
            router.kill()
        assert verify(router.state_dir / "audit.jsonl").ok, f"loop {loop}"
        tripped_before = any(r["action"] == "trip" for r in router.audit())
        router.start()
        if tripped_before:
            durable_before_kill += 1
            first = await burst(router.url, 100)
            assert served_by(first, "v1.5") == 0, (loop, first)
        else:
            await drive_until_trip(router)
        assert router.rollouts()["refund-agent"]["weights"]["v1.5"] == 0
        router.stop()
        assert verify(router.state_dir / "audit.jsonl").ok, f"loop {loop}"
    assert durable_before_kill >= 5  # most kills land after the trip, some before it


async def _with_kill_after(traffic: Any, router: Router, seconds: float) -> None:
    task = asyncio.ensure_future(traffic)
    await asyncio.sleep(seconds)
    router.kill()
    with contextlib.suppress(aiohttp.ClientError):  # the router died under the traffic
        await task


async def test_a_change_that_reached_the_audit_log_but_not_the_state_file_is_replayed(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """A crash between the audit append and the state write: at start, the newer audit
    record wins over the older state file."""
    router = start_router(half_canary(fake.url))
    router.stop()
    before = router.audit()[0]["after"]
    after = {**before, "weights": {"v1.4": 10000, "v1.5": 0}, "candidate_state": "rolled_back"}
    log = AuditLog(router.state_dir)
    log.open()
    log.append(
        {
            "action": "trip",
            "actor": "guardrail",
            "route": "refund-agent",
            "reason": "guardrail error_rate (50.0% > 2.0%, n=20)",
            "before": before,
            "after": after,
            "details": {},
        }
    )
    log.close()
    router.start()
    results = await burst(router.url, 100)
    assert served_by(results, "v1.5") == 0, results
    assert "replayed audit record 3 (trip on refund-agent)" in router.process.output()
    assert orjson.loads((router.state_dir / "state.json").read_bytes())["audit_seq"] == 3


def test_a_broken_audit_chain_stops_the_start_with_the_way_out(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(half_canary(fake.url))
    router.stop()
    path = router.state_dir / "audit.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"actor":"config"', b'"actor":"mallory"', 1))
    with pytest.raises(RuntimeError, match="exited 2") as failure:
        router.start()
    assert "audit log" in str(failure.value) and "broken at line 1" in str(failure.value)
    assert "bundle-router audit --archive" in str(failure.value)


async def reload_with(router: Router, config: dict[str, Any]) -> None:
    """Write `config` over the router's and reload it with the CLI."""
    router.config_path.write_text(yaml.safe_dump(config))
    done = await asyncio.to_thread(cli, router, "reload")
    assert done.returncode == 0, done.stderr


async def test_a_reload_that_gives_the_canary_fresh_counters_keeps_it_guarded(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """A new price gives the canary's version fresh counters; the guardrails must judge
    those, not the old ones that no request updates any more."""
    router = start_router(half_canary(fake.url))
    config = dict(router.config)
    config["prices"] = {**config["prices"], CANARY_MODEL: {"input": 20.0, "output": 80.0}}
    await reload_with(router, config)
    fake.behave(CANARY_MODEL, error_rate=1.0, error_kind="500")
    trip = await drive_until_trip(router)
    assert trip["rule"] == "error_rate"


async def test_a_route_removed_and_reloaded_back_keeps_its_trip(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """A reload that drops a route keeps its live state; one that brings it back serves that
    state, not the config's: the tripped canary stays at 0 %, as after a restart."""
    fake.behave(CANARY_MODEL, error_rate=1.0, error_kind="500")
    router = start_router(half_canary(fake.url))
    await drive_until_trip(router)
    fake.reset()
    full = dict(router.config)
    await reload_with(
        router, {**full, "routes": {"support-agent": full["routes"]["support-agent"]}}
    )
    assert "refund-agent" not in router.rollouts()
    await reload_with(router, full)
    state = router.rollouts()["refund-agent"]
    assert state["candidate_state"] == "rolled_back" and state["weights"]["v1.5"] == 0, state
    results = await burst(router.url, 100)
    assert served_by(results, "v1.5") == 0, results
    assert router.audit()[-2]["action"] == "restore"  # then the reload's own record
