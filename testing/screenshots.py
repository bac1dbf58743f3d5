"""Screenshots of the fleet view page on real processes, for the README and docs/page.md.

    python -m testing.screenshots [--out docs/images] [--seconds 25]

page-router.png: a router (no fleet) with the fake provider under light agent traffic (a series
point every 2 s instead of 10, so that a short run draws lines), after
two rollback drills, with refund-agent's rollout under way. page-fleet.png (only where
redis-server is installed): a controller and 6 sidecars in 2 regions on a real Redis, a rolling
release a few waves in. Debian's chromium takes them, headless (testing/browser.py); nothing is
downloaded. Each PNG is kept under MAX_BYTES.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, Page

from router.admin.client import call
from testing.browser import VIEWPORT, chromium, chromium_binary, watch
from testing.fleet import Fleet, Member, rolling_routes, wait_for
from testing.redis import RedisServer, redis_server_binary
from testing.servers import REPO, ProviderProcess, Router, router_config

OUT = REPO / "docs" / "images"
MAX_BYTES = 300_000
SHOWN_TIMEOUT_MS = 30_000
REGIONS = ["us-east", "us-west"]
# Answers take a while and vary, as a real provider's do: the charts have something to show.
EVERYDAY: dict[str, Any] = {
    "latency_ms": 120,
    "latency_jitter_ms": 60,
    "tool_call_rate": 0.3,
    "error_rate": 0.01,
}
# A point every 2 s instead of 10, so that a short run draws lines (telemetry.series_step).
SERIES = {"series_step": "2s"}
_sessions = itertools.count()


@contextlib.asynccontextmanager
async def traffic(urls: list[str], routes: list[str], concurrency: int = 4) -> AsyncIterator[None]:
    """Agent traffic to every URL and route, `concurrency` requests at a time, until the
    block ends. Errors are part of the picture (the fake provider injects some)."""

    async def worker(session: aiohttp.ClientSession) -> None:
        for url, route in itertools.cycle(itertools.product(urls, routes)):
            body = {
                "model": route,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
            }
            headers = {"X-Session-Id": f"screenshot-{next(_sessions)}"}
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.post(f"{url}/v1/messages", json=body, headers=headers) as r:
                    await r.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        try:
            yield
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


async def admin(socket: Path, method: str, path: str, body: dict[str, Any]) -> Any:
    """One admin call, as `bundle-router` makes it, off the event loop."""
    return await asyncio.to_thread(call, socket, method, path, body, "screenshots")


async def shoot(page: Page, path: Path, route: str = "refund-agent") -> None:
    """The page from its top down to the end of `route`'s section (the banner, the answers to
    the three questions, the stack, the margins, the charts, the grid, the drills) as a PNG at
    `path`; an error if it is too big for the docs."""
    await page.wait_for_function(
        "() => /^live\\b/i.test(document.querySelector('#connection')?.textContent.trim() ?? '')",
        timeout=SHOWN_TIMEOUT_MS,
    )
    section = page.locator(f'#routes > [data-route="{route}"]')  # audit items have one too
    await section.wait_for(timeout=SHOWN_TIMEOUT_MS)
    await page.wait_for_timeout(1000)  # the last state and series fetches drawn
    box = await section.bounding_box()
    assert box is not None, f"{route}'s section is not shown"
    bottom = box["y"] + box["height"] + 12
    png = await page.screenshot(
        full_page=True, clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": bottom}
    )
    size = len(png)
    if size > MAX_BYTES:
        raise RuntimeError(f"{path} is {size} bytes, over {MAX_BYTES}: show less of the page")
    await asyncio.to_thread(path.write_bytes, png)
    print(f"wrote {path} ({size // 1000} KB)")


async def router_scene(browser: Browser, tmp: Path, out: Path, seconds: float) -> None:
    provider = ProviderProcess(tmp / "provider")
    try:
        provider.behave(**EVERYDAY)
        config = router_config(provider.url, telemetry=SERIES)
        config["routes"]["refund-agent"]["rollout"] = {
            "steps": [5, 25, 50, 100],
            "bake": ["10s", "10m", "10m"],
            "min_samples": 30,
        }
        router = Router(tmp / "router", config)
        try:
            socket = router.tmp / "run" / "admin.sock"
            async with traffic([router.url], ["refund-agent", "support-agent"]):
                await asyncio.sleep(seconds / 2)
                for _ in range(2):
                    await admin(socket, "POST", "/drill", {"route": "refund-agent", "force": True})
                await admin(
                    socket, "POST", "/rollout", {"route": "refund-agent", "action": "start"}
                )
                await asyncio.sleep(seconds / 2)
                watched = await watch(browser, f"{router.metrics_url}/ui")
                await shoot(watched.page, out / "page-router.png")
                await watched.page.context.close()
        finally:
            router.stop()
    finally:
        provider.stop()


async def fleet_scene(browser: Browser, tmp: Path, out: Path, seconds: float) -> None:
    provider = ProviderProcess(tmp / "provider")
    redis = RedisServer(tmp)
    try:
        provider.behave(**EVERYDAY)
        sidecars = [(region, pool) for region in REGIONS for pool in ("paid", "paid", "free")]
        routes = rolling_routes(groups=REGIONS, bake="8s")
        fleet = Fleet(
            tmp / "fleet",
            provider.url,
            redis.url,
            sidecars,
            config={"routes": routes, "telemetry": SERIES},
        )
        try:
            control = fleet.controller
            await asyncio.to_thread(
                wait_for, "every sidecar reports", lambda: reported(control) == len(sidecars), 30
            )
            urls = [m.router.url for m in fleet.sidecars]
            async with traffic(urls, ["refund-agent", "support-agent"], concurrency=6):
                await asyncio.sleep(seconds / 2)
                await admin(
                    control.socket, "POST", "/rollout", {"route": "refund-agent", "action": "start"}
                )
                await asyncio.to_thread(wait_for, "wave 3", lambda: wave(control) >= 3, 120)
                watched = await watch(browser, f"{control.router.metrics_url}/ui")
                await shoot(watched.page, out / "page-fleet.png")
                await watched.page.context.close()
        finally:
            fleet.stop()
    finally:
        redis.stop()
        provider.stop()


def reported(control: Member) -> int:
    return len(control.admin("GET", "/fleet")["sidecars"])


def wave(control: Member) -> int:
    waves = control.status()["routes"]["refund-agent"].get("waves") or {}
    return int(waves.get("wave") or 0)


async def main_async(out: Path, seconds: float, work: Path) -> int:
    """Both scenes; `work` holds a folder for each (made beforehand: the loop never blocks)."""
    binary = chromium_binary()
    if binary is None:
        print("screenshots: chromium is not installed (Debian: apt-get install chromium)")
        return 1
    async with chromium(binary) as browser:
        await router_scene(browser, work / "router", out, seconds)
        if redis_server_binary() is None:
            print("screenshots: no redis-server, so no fleet (apt-get install redis-server)")
        else:
            await fleet_scene(browser, work / "fleet", out, seconds)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the PNGs")
    parser.add_argument(
        "--seconds", type=float, default=25.0, help="traffic before each screenshot"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as folder:
        work = Path(folder)
        for scene in ("router", "fleet"):
            (work / scene / "provider").mkdir(parents=True)
        code = asyncio.run(main_async(args.out, args.seconds, work))
    sys.exit(code)


if __name__ == "__main__":
    main()
