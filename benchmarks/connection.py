"""The client connection's cost: aiohttp's RequestHandler against the router's ClientConnection
(header timeout and JSON parse errors), fed the same request bytes, in alternating rounds.

    python -m benchmarks.connection [--rounds 15] [--connections 2000]

Each round opens N protocol objects on a stub transport, times one `data_received` of a whole
request head and body on each, lets them answer, and closes them. Prints the median per call
for each class and their difference. Not a test: the numbers are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.proxy.connection import ClientConnection

REQUEST = (
    b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\nX-Session-Id: s1\r\n\r\n{}"
)


class StubTransport(asyncio.Transport):
    """Takes the answers and drops them: only the protocol's own work is timed."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


async def one_round(server: web.Server, kind: type[RequestHandler], connections: int) -> float:
    extra: dict[str, Any] = {"header_timeout": 10.0} if kind is ClientConnection else {}
    loop = asyncio.get_running_loop()
    protocols = [kind(server, loop=loop, **extra) for _ in range(connections)]
    for protocol in protocols:
        protocol.connection_made(StubTransport())
    await asyncio.sleep(0)  # each connection now waits for a request head
    started = time.perf_counter()
    for protocol in protocols:
        protocol.data_received(REQUEST)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.05)  # let each connection answer its request
    for protocol in protocols:
        protocol.connection_lost(None)
    return seconds / connections


async def compare(rounds: int, connections: int) -> None:
    async def handler(request: web.BaseRequest) -> web.Response:
        return web.Response()

    server = web.Server(handler)
    times: dict[type[RequestHandler], list[float]] = {RequestHandler: [], ClientConnection: []}
    for _ in range(rounds):
        for kind, results in times.items():
            results.append(await one_round(server, kind, connections))
    plain, ours = (statistics.median(times[kind]) * 1e6 for kind in times)
    print(f"data_received of one request, median of {rounds} alternating rounds (this machine):")
    print(f"  aiohttp RequestHandler  {plain:6.2f} us")
    print(
        f"  router ClientConnection {ours:6.2f} us  ({ours - plain:+.2f} us, {ours / plain:.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    uvloop.run(compare(args.rounds, args.connections))


if __name__ == "__main__":
    main()
