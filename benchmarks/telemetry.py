"""What the telemetry costs: requests/s through the router with it on and off.

    python -m benchmarks.telemetry [--requests 3000] [--concurrency 50]

Starts one fake provider and two routers that differ only in `telemetry.enabled`, then drives
both with the same load generator, alternating rounds so machine noise hits both alike, and
prints the ratio. JSON and streamed requests, with tool calls to validate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import BODY
from benchmarks.harness import latencies as drive
from testing.servers import ProviderProcess, Router, router_config

ROUNDS = 3


async def rate(url: str, body: dict[str, object], requests: int, concurrency: int) -> float:
    start = time.perf_counter()
    await drive(url, body, requests, concurrency)
    return requests / (time.perf_counter() - start)


async def measure(on: Router, off: Router, requests: int, concurrency: int) -> None:
    for name, body in (("json", BODY), ("stream", {**BODY, "stream": True})):
        totals = {"on": 0.0, "off": 0.0}
        await rate(f"{on.url}/v1/messages", body, 200, 10)  # warm up
        await rate(f"{off.url}/v1/messages", body, 200, 10)
        for _ in range(ROUNDS):
            for label, router in (("on", on), ("off", off)):
                totals[label] += await rate(
                    f"{router.url}/v1/messages", body, requests, concurrency
                )
        on_rps, off_rps = totals["on"] / ROUNDS, totals["off"] / ROUNDS
        print(
            f"{name:6} telemetry on {on_rps:7.0f} req/s  off {off_rps:7.0f} req/s  "
            f"ratio on/off {on_rps / off_rps:.3f}   (this machine, concurrency {concurrency})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        provider = ProviderProcess(Path(tmp), {"default": {"tool_call_rate": 0.5}})
        routers: list[Router] = []
        try:
            for enabled in (True, False):
                config = router_config(provider.url, telemetry={"enabled": enabled})
                routers.append(Router(Path(tmp) / f"router-{enabled}", config))
            asyncio.run(measure(routers[0], routers[1], args.requests, args.concurrency))
        finally:
            for router in routers:
                router.stop()
            provider.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
