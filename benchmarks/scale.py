"""A large configuration: start, reload and scrape a router with N routes x V versions.

    python -m benchmarks.scale [--routes 1000] [--versions 4] [--from-routes 10]

Writes N routes of V bundle versions each (every route with a live 5 % canary, its own tools
and prompts) to a temp folder, runs the fake provider and the real router as processes, and
measures on the router:

- first start to ready (every route recorded in durable state for the first time), and a
  restart on that state;
- reload from a config of --from-routes routes to all N (once with no traffic, once with the
  probe below), and from N to N with a change (one model's price, so half the versions get
  fresh counters, and one new bundle version);
- one /metrics scrape: its duration and size;
- the router's RSS after each step, and its peak.

While a reload or a scrape runs, a probe in its own process sends small requests to one
route in a tight loop, one at a time; the longest answer and the longest gap between two
answers are how long the proxy stalled. The same probe over an idle stretch is the machine's
floor. The router gets core 0; the provider, the probe and this process share core 1. The
numbers are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

from benchmarks.harness import LOAD_CORE, ROUTER_CORE, pin, rss_mb
from router.dev.ports import free_port
from testing.servers import REPO, ProviderProcess

TARGETS = {"load": 2.0, "stall": 0.050, "scrape": 1.0}
MODELS = {  # model -> provider: every route speaks one dialect
    "claude-sonnet-4-6-20260215": "anthropic",
    "claude-opus-4-7-20260108": "anthropic",
    "gpt-5.4-2026-03-05": "openai",
}
PRICES = {
    "claude-opus-4-7-20260108": {"input": 15.0, "output": 75.0, "cached_input": 1.5},
    "claude-sonnet-4-6-20260215": {"input": 3.0, "output": 15.0, "cached_input": 0.3},
    "gpt-5.4-2026-03-05": {"input": 1.25, "output": 10.0, "cached_input": 0.125},
}
PROMPT = (
    "You are the {route} agent, bundle {version}. Answer the customer's question about their "
    "order, account or subscription. Look the order up before you promise anything, never "
    "invent a policy, and hand over to a person when the customer asks for one. "
) * 8
PROBE_BODY = {"max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}
START_TIMEOUT = 1800.0  # seconds; the unoptimised router took minutes at this size


def route_name(i: int) -> str:
    return f"route-{i:04d}"


def write_bundles(folder: Path, routes: int, versions: int) -> None:
    """`folder/route-NNNN/vK/` with bundle.yaml, prompt.txt and tools.yaml, as an operator
    would have them: each route its own tools, each version its own prompt."""
    for i in range(routes):
        name = route_name(i)
        anthropic = i % 2 == 0
        models = [m for m, p in MODELS.items() if (p == "anthropic") == anthropic]
        tools = [
            {
                "name": f"lookup_{name.replace('-', '_')}",
                "description": "Fetch a record by its id.",
                "input_schema": {
                    "type": "object",
                    "properties": {"id": {"type": "string", "pattern": "^[A-Z0-9-]{4,32}$"}},
                    "required": ["id"],
                    "additionalProperties": False,
                },
            },
            {
                "name": "issue_refund",
                "description": "Refund an order to the original payment method.",
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "order_id": {"type": "string", "minLength": 4},
                        "amount_cents": {"type": "integer", "minimum": 1 + i},
                        "reason": {"type": "string", "enum": ["damaged", "late", "other"]},
                    },
                    "required": ["order_id", "amount_cents", "reason"],
                    "additionalProperties": False,
                },
            },
        ]
        tools_text = yaml.safe_dump(tools, sort_keys=False)
        for v in range(1, versions + 1):
            write_version(folder / name, name, f"v{v}", models[v % len(models)], tools_text)


def write_version(
    folder: Path, route: str, version: str, model: str, tools: str, provider: str = ""
) -> None:
    where = folder / version
    where.mkdir(parents=True, exist_ok=True)
    (where / "prompt.txt").write_text(PROMPT.format(route=route, version=version))
    (where / "tools.yaml").write_text(tools)
    bundle = {
        "version": version,
        "provider": provider or MODELS[model],
        "model": model,
        "prompt": "prompt.txt",
        "tools": "tools.yaml",
        "params": {"max_tokens": 1024, "temperature": 0.2},
        "metadata": {"author": "bench@team", "commit": "0000000", "eval_set": "golden"},
    }
    (where / "bundle.yaml").write_text(yaml.safe_dump(bundle, sort_keys=False))


def config(tmp: Path, provider_url: str, routes: int, prices: dict[str, Any]) -> dict[str, Any]:
    """Every route: v1 active, v2 a live 5 % canary, the other versions loaded at 0."""
    return {
        "environment": "prod",
        "listen": f"127.0.0.1:{free_port()}",
        "metrics_listen": f"127.0.0.1:{free_port()}",
        "admin_socket": "run/admin.sock",
        "state_dir": "run/state",
        "providers": {
            "anthropic": {"dialect": "anthropic", "base_url": provider_url},
            "openai": {"dialect": "openai", "base_url": f"{provider_url}/v1"},
        },
        "prices": prices,
        "routes": {
            route_name(i): {
                "bundles": str(tmp / "bundles" / route_name(i)),
                "active": "v1",
                "candidate": "v2",
                "weights": {"v1": 95, "v2": 5},
            }
            for i in range(routes)
        },
    }


class RouterProcess:
    """`python -m router serve` on core 0, waited for with a long timeout."""

    def __init__(self, tmp: Path, settings: dict[str, Any]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.config_path = tmp / "router.yaml"
        self.write(settings)
        self.url = f"http://{settings['listen']}"
        self.metrics_url = f"http://{settings['metrics_listen']}"
        self.socket = tmp / "run" / "admin.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def write(self, settings: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(settings, sort_keys=False))

    def start(self) -> float:
        """Seconds from launching the process to /readyz answering 200."""
        self.starts += 1
        log = (self.tmp / f"router-{self.starts}.log").open("wb")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(self.config_path)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        pin(self.proc.pid, ROUTER_CORE)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the router exited {self.proc.returncode}: see {log.name}")
            try:
                if httpx.get(f"{self.metrics_url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"the router was not ready after {START_TIMEOUT:.0f} s")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# The probe: its own process, so that reading a large scrape never stalls it.


def _probe(url: str, route: str, pipe: Connection) -> None:
    """Send one request after another until told to stop; send back (sent, answered) pairs
    in CLOCK_MONOTONIC seconds, which every process on the machine shares."""
    pin(os.getpid(), LOAD_CORE)

    async def run() -> list[tuple[float, float]]:
        seen: list[tuple[float, float]] = []
        body = {**PROBE_BODY, "model": route}
        headers = {"X-Session-Id": "probe"}
        async with aiohttp.ClientSession() as session:
            pipe.send("ready")
            while not pipe.poll():
                sent = time.monotonic()
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"probe: HTTP {response.status}")
                seen.append((sent, time.monotonic()))
        return seen

    pipe.send(asyncio.run(run()))


@dataclass
class Stall:
    max_latency: float  # the longest answer sent during the window
    max_gap: float  # the longest time between two answers (or the window's ends)
    answers: int


class Probe:
    def __init__(self, url: str, route: str) -> None:
        self.parent, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_probe, args=(url, route, child), daemon=True
        )
        self.process.start()
        if self.parent.recv() != "ready":
            raise RuntimeError("the probe did not start")

    def finish(self, start: float, end: float) -> Stall:
        """Stop, and judge the answers around [start, end] (CLOCK_MONOTONIC seconds)."""
        self.parent.send("stop")
        seen: list[tuple[float, float]] = self.parent.recv()
        self.process.join(timeout=30)
        during = [(s, a) for s, a in seen if a >= start and s <= end]
        if not during:
            return Stall(end - start, end - start, 0)
        answers = [start] + [a for _, a in during] + [min(end, seen[-1][1])]
        gaps = [b - a for a, b in itertools.pairwise(answers)]
        return Stall(max(a - s for s, a in during), max(gaps), len(during))


async def probed(
    url: str, route: str, work: Callable[[], Awaitable[Any]]
) -> tuple[float, Stall, Any]:
    """Run `work` with the probe going: its seconds, the proxy's stall, its result."""
    probe = await asyncio.to_thread(Probe, url, route)
    await asyncio.sleep(0.3)  # the probe's connection is open and warm
    start = time.monotonic()
    result = await work()
    end = time.monotonic()
    await asyncio.sleep(0.1)
    return end - start, await asyncio.to_thread(probe.finish, start, end), result


async def admin_reload(socket: Path) -> dict[str, Any]:
    connector = aiohttp.UnixConnector(path=str(socket))
    timeout = aiohttp.ClientTimeout(total=None)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.post("http://admin/reload", json={"reason": "bench"}) as response,
    ):
        body: dict[str, Any] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"reload: HTTP {response.status}: {body}")
        return body


def scrape(address: str) -> int:
    """GET /metrics and count its bytes (headers included), reading into one buffer so that
    this process spends next to no CPU on it; the router closes the connection at the end."""
    host, port = address.rsplit(":", 1)
    size = 0
    buffer = bytearray(1 << 20)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        first = b""
        while received := sock.recv_into(buffer):
            if not first:
                first = bytes(buffer[:12])
            size += received
    if not first.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"/metrics: {first!r}")
    return size


async def traffic(url: str, routes: int, requests: int) -> None:
    """A few answers on a spread of routes, so the counters are not all zero."""
    async with aiohttp.ClientSession() as session:
        for n in range(requests):
            i = n * 7919 % routes
            path = "/v1/messages" if i % 2 == 0 else "/v1/chat/completions"  # see write_bundles
            body = {**PROBE_BODY, "model": route_name(i)}
            headers = {"X-Session-Id": f"s-{n}"}
            async with session.post(f"{url}{path}", json=body, headers=headers) as answer:
                await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"{route_name(i)}: HTTP {answer.status}")


def probe_url(router: RouterProcess) -> str:
    return f"{router.url}/v1/messages"  # route-0000 is an Anthropic route


@dataclass
class Row:
    measure: str
    value: str
    target: str = ""
    met: bool | None = None


def rss_row(what: str, pid: int) -> Row:
    """The router's resident memory now, and its peak so far."""
    return Row(what, f"{rss_mb(pid):.0f} MB ({rss_mb(pid, peak=True):.0f} MB)")


def stall_rows(what: str, stall: Stall, floor: Stall) -> list[Row]:
    met = stall.max_latency <= TARGETS["stall"]
    return [
        Row(
            f"{what}: proxy stall (longest answer / longest gap, {stall.answers} answers)",
            f"{stall.max_latency * 1000:.1f} ms / {stall.max_gap * 1000:.1f} ms "
            f"(idle floor {floor.max_latency * 1000:.1f} / {floor.max_gap * 1000:.1f} ms)",
            "<= 50 ms",
            met,
        )
    ]


async def measure(
    tmp: Path, provider: ProviderProcess, routes: int, versions: int, first: int
) -> list[Row]:
    rows: list[Row] = []
    prices = dict(PRICES)
    write_bundles(tmp / "bundles", routes, versions)
    size = f"{routes} x {versions}"

    # Router A: all N routes from the first start.
    router = RouterProcess(tmp / "a", config(tmp, provider.url, routes, prices))
    try:
        seconds = router.start()
        rows.append(
            Row(
                f"first start to ready, {size}",
                f"{seconds:.2f} s",
                "<= 2 s",
                seconds <= TARGETS["load"],
            )
        )
        rows.append(Row("RSS after start", f"{rss_mb(router.pid):.0f} MB"))
        await traffic(router.url, routes, 200)
        _, floor, _ = await probed(probe_url(router), route_name(0), lambda: asyncio.sleep(1.0))
        took, stall, body = await probed(
            probe_url(router),
            route_name(0),
            lambda: asyncio.to_thread(scrape, router.metrics_url[7:]),
        )
        rows.append(
            Row(
                f"/metrics scrape, {size}",
                f"{took:.2f} s, {body / 1e6:.1f} MB",
                "<= 1 s",
                took <= TARGETS["scrape"],
            )
        )
        rows += stall_rows("/metrics scrape", stall, floor)
        rows.append(rss_row("RSS after the scrape (peak so far)", router.pid))
        # N -> N with a change: a model's price (fresh counters for its versions), a new version.
        prices["claude-sonnet-4-6-20260215"] = {"input": 3.5, "output": 15.0, "cached_input": 0.3}
        write_version(
            tmp / "bundles" / route_name(0),
            route_name(0),
            f"v{versions + 1}",
            "claude-sonnet-4-6-20260215",
            "[]\n",
        )
        changed = config(tmp, provider.url, routes, prices)
        changed["listen"], changed["metrics_listen"] = router.url[7:], router.metrics_url[7:]
        router.write(changed)
        took, stall, summary = await probed(
            probe_url(router), route_name(0), lambda: admin_reload(router.socket)
        )
        assert summary["versions_added"] == {route_name(0): [f"v{versions + 1}"]}, summary
        rows.append(
            Row(
                f"reload {size} -> {size} (a price, a version)",
                f"{took:.2f} s",
                "<= 2 s",
                took <= TARGETS["load"],
            )
        )
        rows += stall_rows("that reload", stall, floor)
        rows.append(rss_row("RSS after it (peak so far)", router.pid))
        router.stop()
        seconds = router.start()
        rows.append(
            Row(
                f"restart to ready on its durable state, {size}",
                f"{seconds:.2f} s",
                "<= 2 s",
                seconds <= TARGETS["load"],
            )
        )
    finally:
        router.stop()

    # Routers B and C: a few routes, then a reload to all N; B with no traffic, C with the probe
    # (which takes much of the router's one core: the reload yields it to requests).
    for name, with_probe in (("b", False), ("c", True)):
        router = RouterProcess(tmp / name, config(tmp, provider.url, first, prices))
        try:
            router.start()
            await traffic(router.url, first, 20)
            full = config(tmp, provider.url, routes, prices)
            full["listen"], full["metrics_listen"] = router.url[7:], router.metrics_url[7:]
            router.write(full)
            if with_probe:
                took, stall, summary = await probed(
                    probe_url(router), route_name(0), partial(admin_reload, router.socket)
                )
            else:
                started = time.perf_counter()
                summary = await admin_reload(router.socket)
                took = time.perf_counter() - started
            assert len(summary["routes_added"]) == routes - first, summary
            what = "with the probe" if with_probe else "no traffic"
            rows.append(
                Row(
                    f"reload {first} -> {routes} routes, {what}",
                    f"{took:.2f} s",
                    "<= 2 s",
                    took <= TARGETS["load"],
                )
            )
            if with_probe:
                rows += stall_rows("that reload", stall, floor)
            rows.append(rss_row("RSS after it (peak)", router.pid))
        finally:
            router.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--from-routes", type=int, default=10, help="routes before the reload")
    args = parser.parse_args()
    if not 1 <= args.from_routes < args.routes or args.versions < 2:
        parser.error("need 1 <= --from-routes < --routes and --versions >= 2")
    pin(os.getpid(), LOAD_CORE)  # this process reads the scrape: keep it off the router's core
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "provider").mkdir()
        provider = ProviderProcess(Path(tmp) / "provider")
        try:
            rows = asyncio.run(
                measure(Path(tmp), provider, args.routes, args.versions, args.from_routes)
            )
        finally:
            provider.stop()
    print(f"\n{args.routes} routes x {args.versions} versions (this machine's numbers)")
    print("| measure | this machine | target | met |")
    print("|---|---|---|---|")
    for row in rows:
        met = "" if row.met is None else ("met" if row.met else "NOT met")
        print(f"| {row.measure} | {row.value} | {row.target} | {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
