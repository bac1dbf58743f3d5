"""Shared parts of the benchmarks: pinned processes, CPU and memory accounting, load.

On a machine with two cores or more, the router gets core 0 to itself; the fake provider
and the load generators share core 1. Direct and routed runs use the same generator in the
same run, so their ratio means something even on a noisy shared machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

ROUTER_CORE = 0
LOAD_CORE = 1
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODY = {
    "model": "refund-agent",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Refund order A-1234, it arrived damaged."}],
}
DIRECT_MODEL = "claude-sonnet-4-6-20260215"  # what refund-agent v1.4 is pinned to


def pin(pid: int, core: int) -> bool:
    """Keep process `pid` on one core, where the machine has it."""
    if (os.cpu_count() or 1) <= core or not hasattr(os, "sched_setaffinity"):
        return False
    os.sched_setaffinity(pid, {core})
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int, peak: bool = False) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    key = "VmHWM" if peak else "VmRSS"
    match = re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else float("nan")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


@dataclass
class Load:
    requests: int
    seconds: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def wrk(url: str, body: dict[str, object], connections: int, seconds: float) -> Load | None:
    """Drive `url` with wrk (C, one thread, on the load core); None if wrk is missing."""
    if shutil.which("wrk") is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {orjson.dumps(orjson.dumps(body).decode()).decode()}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["X-Session-Id"] = "bench"\n'
        )
    try:
        duration = f"-d{max(1, round(seconds))}s"
        command = ["wrk", "-t1", f"-c{connections}", duration, "-s", script.name, url]
        if (os.cpu_count() or 1) > LOAD_CORE:
            command = ["taskset", "-c", str(LOAD_CORE), *command]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if done is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    took = float(done.group(2)) / (1000 if done.group(3) == "ms" else 1)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = int(bad.group(1)) if bad else 0
    if errors:
        failed += sum(int(g) for g in errors.groups())
    return Load(int(done.group(1)), took, failed)


async def latencies(url: str, body: dict[str, object], total: int, concurrency: int) -> list[float]:
    """Send `total` requests, `concurrency` at a time; each one's latency in seconds."""
    seen: list[float] = []
    queue = iter(range(total))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(n: int) -> None:
            for i in queue:
                start = time.perf_counter()
                headers = {"X-Session-Id": f"s-{n}-{i % 7}"}
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                seen.append(time.perf_counter() - start)

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return seen


@dataclass
class Streams:
    errors: int
    ttft: list[float]  # seconds from sending to the first content event
    seconds: float


async def streams(url: str, body: dict[str, object], n: int, seconds: float) -> Streams:
    """Open `n` SSE streams at once and read each to its end."""
    ttft: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=n, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def one(i: int) -> None:
            nonlocal errors
            sent = time.perf_counter()
            first = None
            try:
                headers = {"X-Session-Id": f"stream-{i}"}
                async with session.post(url, json=body, headers=headers) as response:
                    if response.status != 200:
                        errors += 1
                        return
                    async for line in response.content:
                        if first is None and line.startswith(b"data:") and b"delta" in line:
                            first = time.perf_counter() - sent
                        if b"message_stop" in line or b"error" in line[:40]:
                            if b"error" in line[:40]:
                                errors += 1
                            break
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            if first is not None:
                ttft.append(first)

        await asyncio.gather(*(one(i) for i in range(n)))
    return Streams(errors, ttft, time.perf_counter() - started)
