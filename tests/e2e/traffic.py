"""Agent traffic for the tests: bounded bursts of concurrent requests to a router, and a client
that leaves mid-stream."""

from __future__ import annotations

import asyncio
import itertools
import socket
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


def leave_mid_stream(router_url: str, header: bytes) -> bytes:
    """Start a streamed refund-agent request over a raw socket, read the answer up to its
    first event (`message_start`, so the stream has really begun: the headers alone come
    before the provider's first event), then close the connection as a client that goes away
    would. `header` is one extra request header line, such as b"X-Session-Id: leaver"."""
    body = (
        b'{"model": "refund-agent", "max_tokens": 5, "stream": true, '
        b'"messages": [{"role": "user", "content": "hi"}]}'
    )
    host, port = router_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + header
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        received = b""
        while b"message_start" not in received:
            chunk = sock.recv(4096)  # the socket's 5 s timeout bounds the wait
            if not chunk:
                break
            received += chunk
        return received
