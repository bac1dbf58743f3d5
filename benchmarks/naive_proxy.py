"""The floor: a naive aiohttp pass-through with none of the router's features.

    python -m benchmarks.naive_proxy PORT UPSTREAM_URL

It reads the body, swaps the route name for the model, posts it upstream with one pooled
aiohttp ClientSession, and returns the answer. No routing table, session hash, injection,
telemetry, tool-call checks or guardrails. `python -m benchmarks` runs it beside the router
so that the router's cost can be split into aiohttp's part and its own.
"""

from __future__ import annotations

import asyncio
import sys

import aiohttp
import uvloop
from aiohttp import web

from benchmarks.harness import DIRECT_MODEL


async def main(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), skip_auto_headers=("User-Agent",)
    )
    swap = (b'"refund-agent"', f'"{DIRECT_MODEL}"'.encode())

    async def forward(request: web.Request) -> web.Response:
        body = (await request.read()).replace(*swap)
        headers = {"Content-Type": "application/json"}
        async with session.post(upstream, data=body, headers=headers) as answer:
            data = await answer.read()
            return web.Response(status=answer.status, body=data, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/messages", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
