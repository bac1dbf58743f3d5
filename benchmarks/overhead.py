"""Added latency and throughput of the router, side by side with a direct call.

    python -m benchmarks.overhead [--requests 2000] [--concurrency 50]

Starts the fake provider (zero latency) and the router as separate processes, then drives
both the provider directly and the router with the same asyncio load generator in this
process, and prints ratios plus this machine's absolute numbers. Not a test: timings on a
shared machine are noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import BODY, pct
from benchmarks.harness import latencies as drive
from testing.servers import ProviderProcess, Router, router_config


async def measure(direct_url: str, router_url: str, requests: int, concurrency: int) -> None:
    direct_body = {**BODY, "model": "claude-sonnet-4-6-20260215"}
    await drive(direct_url, direct_body, 200, 10)  # warm both up
    await drive(router_url, BODY, 200, 10)

    direct = await drive(direct_url, direct_body, requests // 4, 1)
    routed = await drive(router_url, BODY, requests // 4, 1)
    print(f"concurrency 1, {requests // 4} requests each")
    for name, p in (("p50", 0.50), ("p99", 0.99)):
        d, r = pct(direct, p) * 1000, pct(routed, p) * 1000
        print(f"  {name}: direct {d:7.3f} ms  router {r:7.3f} ms  added {r - d:7.3f} ms")

    start = time.perf_counter()
    await drive(direct_url, direct_body, requests, concurrency)
    direct_rps = requests / (time.perf_counter() - start)
    start = time.perf_counter()
    await drive(router_url, BODY, requests, concurrency)
    router_rps = requests / (time.perf_counter() - start)
    print(f"concurrency {concurrency}, {requests} requests each")
    print(
        f"  direct {direct_rps:8.0f} req/s  router {router_rps:8.0f} req/s  "
        f"ratio {router_rps / direct_rps:.2f}"
    )
    print(f"  (this machine: {statistics.mean(routed) * 1000:.3f} ms mean at concurrency 1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        provider = ProviderProcess(Path(tmp))
        router = None
        try:
            router = Router(Path(tmp) / "router", router_config(provider.url))
            asyncio.run(
                measure(
                    f"{provider.url}/v1/messages",
                    f"{router.url}/v1/messages",
                    args.requests,
                    args.concurrency,
                )
            )
        finally:
            if router:
                router.stop()
            provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
