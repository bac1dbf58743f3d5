"""Soak: minutes of mixed agent traffic while the weights flip every 100 ms. Every request
sent is answered, and the router's memory, file descriptors and tasks stay flat.

`SOAK_SECONDS` sets the length (default 120). Leaks show as growth between the samples
taken just after the warm-up and those at the end, both under the same load.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from router.admin.client import call
from testing.servers import ProviderProcess, Router, router_config

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
WARM_UP = 0.25  # of the run: pools fill and the allocator settles before the baseline
CONCURRENCY = 16
# Tasks alive besides the agents' requests (up to 3 each): the scrape that takes the sample,
# and one weight change in flight (its admin request, the change, its announcement).
BESIDES_THE_AGENTS = 4
RSS_GROWTH_LIMIT = 8 * 1024 * 1024  # far below what a per-request leak adds over a run
FD_GROWTH_LIMIT = 8
HI = [{"role": "user", "content": "hi"}]


@dataclass
class Sample:
    at: float
    rss: float
    fds: float
    tasks: float


async def sample(session: aiohttp.ClientSession, router: Router, started: float) -> Sample:
    async with session.get(f"{router.metrics_url}/metrics") as answer:
        text = await answer.text()
    values = {
        s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
    }
    return Sample(
        time.monotonic() - started,
        values["process_resident_memory_bytes"],
        values["process_open_fds"],
        values["router_event_loop_tasks"],
    )


class Agents:
    """`CONCURRENCY` agents, each sending its next request as soon as the last is answered:
    both dialects, JSON and streams, and every 50th stream abandoned after its first bytes."""

    def __init__(self, router: Router) -> None:
        self.url = router.url
        self.numbers = itertools.count()
        self.outcomes: Counter[str] = Counter()

    async def run(self, session: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            await self.one(session, next(self.numbers))

    async def one(self, session: aiohttp.ClientSession, n: int) -> None:
        anthropic, stream = n % 2 == 0, n % 4 >= 2
        if anthropic:
            path, end = "/v1/messages", b"message_stop"
            body = {"model": "refund-agent", "max_tokens": 32, "messages": HI, "stream": stream}
        else:
            path, end = "/v1/chat/completions", b"[DONE]"
            body = {"model": "support-agent", "messages": HI, "stream": stream}
        headers = {"X-Session-Id": f"soak-{n % 500}"}
        self.outcomes["sent"] += 1
        async with session.post(self.url + path, json=body, headers=headers) as answer:
            if stream and n % 50 == 2:
                await answer.content.readany()
                answer.close()  # the agent goes away mid-stream
                self.outcomes["abandoned"] += 1
                return
            data = await answer.read()
        complete = answer.status == 200 and (not stream or end in data)
        self.outcomes["answered" if complete else f"failed {answer.status}"] += 1


def flip_weights(router: Router, stop: threading.Event) -> int:
    socket_path = router.tmp / "run" / "admin.sock"
    flips = 0
    while not stop.is_set():
        share = (flips % 5) * 10
        weights = {"v1.4": 100 - share, "v1.5": share}
        call(socket_path, "POST", "/weights", {"route": "refund-agent", "weights": weights})
        flips += 1
        time.sleep(0.1)
    return flips


def middle(samples: list[Sample], field: str) -> float:
    values: list[float] = [getattr(s, field) for s in samples]
    return statistics.median(values)


async def test_soak_with_weight_flips_answers_everything_and_leaks_nothing(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    assert SOAK_SECONDS >= 20, "SOAK_SECONDS under 20 leaves too few samples to judge growth"
    config = router_config(fake.url)
    # The feedback memory grows by design until it holds `feedback_capacity` request ids
    # (100,000 by default, minutes of this load); a small one fills during the warm-up.
    config["telemetry"] = {"feedback_capacity": 5000}
    router = start_router(config)
    agents = Agents(router)
    stop = threading.Event()
    flips: list[int] = []
    flipper = threading.Thread(target=lambda: flips.append(flip_weights(router, stop)))
    samples: list[Sample] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        started = time.monotonic()
        idle_before = await sample(session, router, started)
        until = started + SOAK_SECONDS
        load = [asyncio.create_task(agents.run(session, until)) for _ in range(CONCURRENCY)]
        flipper.start()
        try:
            while time.monotonic() < until:
                await asyncio.sleep(min(5.0, max(0.0, until - time.monotonic())))
                samples.append(await sample(session, router, started))
            await asyncio.gather(*load)
        finally:
            stop.set()
            flipper.join(timeout=30)
            for task in load:
                task.cancel()
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.sleep(1.0)  # let the router notice the agents' connections closed
        idle_after = await sample(session, router, started)

    outcomes = agents.outcomes
    print(f"soak {SOAK_SECONDS:g} s: {dict(outcomes)}, {flips} weight flips")
    for s in [idle_before, *samples, idle_after]:
        print(
            f"  {s.at:6.1f} s  rss {s.rss / 2**20:6.1f} MiB  fds {s.fds:4.0f}  tasks {s.tasks:4.0f}"
        )
    assert outcomes["sent"] == outcomes["answered"] + outcomes["abandoned"], outcomes
    assert outcomes["abandoned"] > 0 and flips and flips[0] >= SOAK_SECONDS * 5

    steady = [s for s in samples if s.at >= WARM_UP * SOAK_SECONDS]
    first, last = steady[:3], steady[-3:]
    growth = middle(last, "rss") - middle(first, "rss")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB under steady load"
    assert middle(last, "fds") - middle(first, "fds") <= FD_GROWTH_LIMIT
    busiest = idle_before.tasks + 3 * CONCURRENCY + BESIDES_THE_AGENTS
    assert max(s.tasks for s in samples) <= busiest
    assert idle_after.tasks == idle_before.tasks, "tasks outlived their requests"
