"""Agent traffic for the tests: bounded bursts of concurrent requests to a router."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import aiohttp

_sessions = itertools.count()


async def burst(
    url: str, n: int, *, route: str = "refund-agent", concurrency: int = 20
) -> Counter[str]:
    """Send `n` Anthropic-dialect requests, each from a new session, `concurrency` at a time.
    Counts the answers as "STATUS VERSION" (the X-Bundle-Version that served it)."""
    results: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession) -> None:
        body = {"model": route, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"X-Session-Id": f"session-{next(_sessions)}"}
        async with gate, session.post(f"{url}/v1/messages", json=body, headers=headers) as answer:
            await answer.read()
            results[f"{answer.status} {answer.headers.get('X-Bundle-Version')}"] += 1

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session) for _ in range(n)))
    return results


def served_by(results: Counter[str], version: str) -> int:
    return sum(count for key, count in results.items() if key.endswith(f" {version}"))
