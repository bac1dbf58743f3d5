"""The accept loop's cost: uvloop's own (web.TCPSite) against the router's (ListenerSite,
which sees EMFILE), on the same small app, in alternating rounds.

    python -m benchmarks.accept [--rounds 6] [--connections 3000]

Each server is its own process on core 0; the client shares core 1 with nothing else. Each
client connection sends one `GET /` with `Connection: close`, reads the answer and closes,
32 at a time: all accept, no keep-alive. Prints connections per second and server CPU per
connection for each, and their ratio. Not a test: the numbers are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from aiohttp import web

from benchmarks.harness import LOAD_CORE, ROUTER_CORE, cpu_seconds, pin
from router.config import Limits
from router.proxy.connection import ConnectionStats, ProxyRunner
from router.proxy.listener import ListenerSite
from router.server import run, stop_on_signals

REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def serve(kind: str, port: int) -> int:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", hello)
    limits = Limits()
    runner = ProxyRunner(
        app,
        stats=ConnectionStats("bench"),
        max_connections=limits.max_connections,
        header_timeout=10.0,
    )
    await runner.setup()
    if kind == "router":
        await ListenerSite(runner, "127.0.0.1", port).start()
    else:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await stop_on_signals().wait()
    await runner.cleanup()
    return 0


async def load(port: int, connections: int, concurrency: int = 32) -> float:
    left = connections

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(REQUEST)
            answer = await reader.read()
            assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--serve", choices=["uvloop", "router"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.serve:
        sys.exit(run(lambda: serve(args.serve, args.port)))
    pin(0, LOAD_CORE)
    servers = {}
    for n, kind in enumerate(("uvloop", "router")):
        port = 18431 + n
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.accept", "--serve", kind, "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pin(proc.pid, ROUTER_CORE)
        servers[kind] = (proc, port)
    rates: dict[str, list[float]] = {kind: [] for kind in servers}
    cpu: dict[str, list[float]] = {kind: [] for kind in servers}
    try:
        for _ in range(args.rounds):
            for kind, (proc, port) in servers.items():
                before = cpu_seconds(proc.pid)
                seconds = asyncio.run(load(port, args.connections))
                cpu[kind].append((cpu_seconds(proc.pid) - before) / args.connections)
                rates[kind].append(args.connections / seconds)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait()
    for kind in servers:
        print(
            f"{kind:>7} accept loop: {statistics.median(rates[kind]):8.0f} connections/s, "
            f"{statistics.median(cpu[kind]) * 1e6:6.0f} us server CPU per connection "
            f"(median of {args.rounds} rounds of {args.connections})"
        )
    ratio = statistics.median(rates["router"]) / statistics.median(rates["uvloop"])
    print(f"router / uvloop connections per second: {ratio:.2f}")


if __name__ == "__main__":
    main()
