"""Pooled guardrails (issue 17, item 1): the controller judges the canary on the whole fleet's
evidence, so with 8 sidecars it trips earlier, at the same per-sidecar rate, than one sidecar
alone would. Real Redis, real processes; the factor is printed.

Pass or fail is decided by counts, never by timing: when the controller tripped, no sidecar
had yet served as many canary requests as the lone router needed to trip, and the
controller's verdict counted more canary requests than any one sidecar had served."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from testing.fleet import Fleet, Member, wait_for
from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.fleet.test_propagation import APPLIED_WITHIN, CANARY_MODEL, EIGHT, ROUTE, stack

RATE = 6.0  # requests a second to each sidecar (and to the lone router)
MIN_SAMPLES = 40  # the error rule waits for this many canary answers, lone or pooled
ERROR_RATE = 0.3  # the canary's regression: 30 % errors against a 2 % limit
LONE_LIMIT = 60.0  # seconds of traffic before the lone router must have tripped
POOLED_LIMIT = 30.0


def regression_routes(provider: ProviderProcess) -> dict[str, Any]:
    """refund-agent at 50/50, judged by its error rate alone (the other rules off, so the
    only trip is the regression's)."""
    routes: dict[str, Any] = router_config(provider.url)["routes"]
    routes[ROUTE]["weights"] = {"v1.4": 50, "v1.5": 50}
    routes[ROUTE]["guardrails"] = {
        "confidence": 0.9998,
        "error_rate": {"max": "2%", "min_samples": MIN_SAMPLES},
        "p95_latency": "off",
        "cost_per_request": "off",
        "tool_call_failure_rate": "off",
        "refusal_rate": "off",
    }
    return routes


@dataclass
class Traffic:
    """Answers per target: (wall-clock time of the answer, X-Bundle-Version)."""

    started: float = field(default_factory=time.time)
    answers: dict[int, list[tuple[float, str]]] = field(default_factory=dict)

    def canary_before(self, target: int, moment: float) -> int:
        return sum(1 for at, v in self.answers.get(target, []) if v == "v1.5" and at <= moment)


async def _send(client: httpx.AsyncClient, url: str) -> str:
    answer = await client.post(
        f"{url}/v1/messages",
        json={"model": ROUTE, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-Session-Id": uuid.uuid4().hex},
    )
    return str(answer.headers.get("X-Bundle-Version", f"none (HTTP {answer.status_code})"))


def drive(urls: list[str], tripped: Callable[[], bool], limit: float) -> Traffic:
    """RATE requests a second to each of `urls`, each request a new session, until `tripped()`
    (polled in a thread) or `limit` seconds. Bounded in time; fails if never tripped."""
    traffic = Traffic()

    async def one(target: int, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        answers = traffic.answers.setdefault(target, [])
        start, sent = time.monotonic(), 0
        while not stop.is_set():
            wait = start + sent / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            sent += 1
            version = await _send(client, urls[target])
            answers.append((time.time(), version))

    async def run() -> bool:
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=10) as client:
            senders = [asyncio.create_task(one(i, client, stop)) for i in range(len(urls))]
            deadline = time.monotonic() + limit
            done = False
            while not done and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                done = await asyncio.to_thread(tripped)
            stop.set()
            await asyncio.gather(*senders)
        return done

    traffic.started = time.time()
    assert asyncio.run(run()), f"no trip within {limit}s of traffic"
    return traffic


def trip_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    trips = [r for r in records if r.get("action") == "trip" and r.get("route") == ROUTE]
    assert len(trips) == 1, trips
    return trips[0]


def wall(record: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(record["at"]).replace("Z", "+00:00")).timestamp()


def rolled_back(status: dict[str, Any]) -> bool:
    return bool(stack(status)["candidate_state"] == "rolled_back")


def test_a_pooled_judge_with_8_sidecars_trips_before_any_sidecar_has_the_evidence_one_needs(
    tmp_path: Path, provider: ProviderProcess, start_fleet: Callable[..., Fleet]
) -> None:
    routes = regression_routes(provider)
    provider.behave(model=CANARY_MODEL, error_rate=ERROR_RATE)

    # One sidecar alone: a router judging only its own traffic, at the route's confidence.
    lone = Router(tmp_path / "lone", router_config(provider.url, routes=routes))
    try:
        alone = drive(
            [lone.url],
            lambda: lone.rollouts()[ROUTE]["candidate_state"] == "rolled_back",
            LONE_LIMIT,
        )
        lone_trip = trip_record(lone.audit())
    finally:
        lone.stop()
    assert lone_trip["actor"] == "guardrail"
    lone_needed = int(lone_trip["details"]["verdict"]["samples"])
    lone_seconds = wall(lone_trip) - alone.started

    # Eight sidecars at the same rate each; the controller pools their evidence.
    fleet = start_fleet(EIGHT, config={"routes": routes})
    controller = fleet.controller
    wait_for("the controller leads", lambda: controller.status()["fleet"]["leading"])
    for sidecar in fleet.sidecars:

        def applied(sidecar: Member = sidecar) -> bool:
            return int(sidecar.status()["fleet"]["epoch"]) >= 1

        wait_for(f"{sidecar.name} follows the fleet", applied, APPLIED_WITHIN)
    pooled = drive(
        [s.router.url for s in fleet.sidecars],
        lambda: rolled_back(controller.status()),
        POOLED_LIMIT,
    )
    trip = trip_record(controller.admin("GET", f"/audit?route={ROUTE}"))
    pooled_seconds = wall(trip) - pooled.started
    per_sidecar = [pooled.canary_before(i, wall(trip)) for i in range(len(fleet.sidecars))]
    judged = int(trip["details"]["verdict"]["samples"])
    factor = lone_seconds / pooled_seconds
    print(
        f"\npooled guardrails: one sidecar alone tripped after {lone_needed} canary answers in "
        f"{lone_seconds:.1f}s; 8 sidecars pooled tripped in {pooled_seconds:.1f}s on {judged} "
        f"canary answers, each sidecar having served {min(per_sidecar)}..{max(per_sidecar)}: "
        f"{factor:.1f}x sooner at {RATE:g} requests/s per sidecar"
    )

    assert trip["actor"] == "guardrail", trip  # the controller's own watcher, not a sidecar
    assert max(per_sidecar) < lone_needed, (per_sidecar, lone_needed)
    assert judged > max(per_sidecar), (judged, per_sidecar)  # it judged the pooled evidence
    # The trip reaches every sidecar: each serves the control only.
    for sidecar in fleet.sidecars:

        def drained(sidecar: Member = sidecar) -> bool:
            return rolled_back(sidecar.status())

        wait_for(f"{sidecar.name} drains the canary", drained, APPLIED_WITHIN)
        assert sidecar.served(ROUTE, 5) == {"v1.4"}
    # The controller's blast radius is the fleet's: it served nothing itself.
    shares = controller.status()["routes"][ROUTE]["blast_radius"]
    assert 0.25 < shares["v1.5"] < 0.75, shares
    metrics = scrape(controller.router)
    ratio = value(metrics, "router_blast_radius_ratio", route=ROUTE, version="v1.5")
    assert 0.25 < ratio < 0.75, ratio
