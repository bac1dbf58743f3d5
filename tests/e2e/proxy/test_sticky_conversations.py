"""Conversations stay on one version with no session key from the client: agent frameworks
send none, but every turn re-sends the conversation from its first user message."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp
import httpx

from testing.servers import ProviderProcess, Router, router_config

RUNS = 120  # two-call agent runs, each with its own opening and no session header


def cached(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}]


def uncached(content: Any) -> Any:
    if isinstance(content, list):
        return [{k: v for k, v in block.items() if k != "cache_control"} for block in content]
    return content


async def agent_run(session: aiohttp.ClientSession, url: str, n: int) -> tuple[str, str]:
    """A two-call tool loop as an agent framework sends it: the second call repeats the
    history with the tool result appended. Returns the versions that served each call."""
    history: list[dict[str, Any]] = [{"role": "user", "content": cached(f"Refund order A-{n}")}]
    versions = []
    for turn in range(2):
        body = {"model": "refund-agent", "max_tokens": 64, "messages": history}
        async with session.post(f"{url}/v1/messages", json=body) as answer:
            assert answer.status == 200, await answer.text()
            versions.append(answer.headers["X-Bundle-Version"])
            content = (await answer.json())["content"]
        # As agent frameworks do with prompt caching: the cache mark moves to the newest
        # message, so the first message's blocks change between turns; its words do not.
        history = [
            *(dict(m, content=uncached(m["content"])) for m in history),
            {"role": "assistant", "content": content},
            {"role": "user", "content": cached(f"turn {turn + 2}")},
        ]
    return versions[0], versions[1]


async def test_two_call_agent_runs_never_switch_versions_without_a_session_key(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url)
    config["routes"]["refund-agent"]["weights"] = {"v1.4": 50, "v1.5": 50}
    router = start_router(config)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        gate = asyncio.Semaphore(16)

        async def bounded(n: int) -> tuple[str, str]:
            async with gate:
                return await agent_run(session, router.url, n)

        runs = await asyncio.gather(*(bounded(n) for n in range(RUNS)))
    switched = [run for run in runs if run[0] != run[1]]
    assert switched == []
    spread = Counter(first for first, _ in runs)
    assert spread["v1.4"] > RUNS // 5 and spread["v1.5"] > RUNS // 5, spread  # not one bucket


def test_the_fallbacks_can_be_turned_off(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """`fallback: []` is the old behaviour: a request with no key gets a random bucket."""
    config = router_config(fake.url)
    route = config["routes"]["refund-agent"]
    route["weights"] = {"v1.4": 50, "v1.5": 50}
    route["session_key"] = {"header": "X-Session-Id", "fallback": []}
    router = start_router(config)
    body = {
        "model": "refund-agent",
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    }
    versions = {
        httpx.post(f"{router.url}/v1/messages", json=body, timeout=10).headers["X-Bundle-Version"]
        for _ in range(40)
    }
    assert versions == {"v1.4", "v1.5"}  # the same opening, yet both: random buckets
