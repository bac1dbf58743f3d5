"""The router against a direct call to the same provider, in one run: one table.

    python -m benchmarks [--seconds 10] [--latency-requests 3000] [--max-streams 3000]
    python -m benchmarks --quick        # tiny numbers, to check that it runs

The fake provider answers with no added latency. The router runs with every feature on
(sticky hashing, injection, telemetry, tool-call validation, guardrails) and gets core 0 to
itself; the provider and the load generators share core 1. Measured:

- added latency at concurrency 1 (router p50/p99 minus direct p50/p99), alternating rounds;
- throughput at concurrency 50 (wrk, if installed; else this process's asyncio client),
  and the router's CPU time per request from /proc;
- N concurrent SSE streams of 20 events 50 ms apart: errors, added time to first token,
  router RSS, up the ladder until a step has errors;
- rollback: trip decision to swap and to durable state, and the CLI's wall time.

Not a test: the numbers are this machine's, and the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import guardrails, rollback
from benchmarks.harness import (
    BODY,
    DIRECT_MODEL,
    LOAD_CORE,
    ROUTER_CORE,
    cpu_seconds,
    latencies,
    pct,
    pin,
    rss_mb,
    streams,
    wrk,
)
from router.dev.ports import free_port
from testing.servers import ProviderProcess, Router, router_config

TARGETS = {
    "p50": 0.25e-3,
    "p99": 1e-3,
    "throughput": 0.35,
    "cpu": 120e-6,
    "streams": 2000,
    "ttft_p99": 10e-3,
    "rss": 300.0,
}
STREAM_EVENTS = 20
STREAM_BEHAVIOUR: dict[str, Any] = {"stream_chunks": STREAM_EVENTS, "stream_interval_ms": 50}


def bench_config(provider_url: str) -> dict[str, Any]:
    """The example config; refund-agent all on v1.4, whose model the direct runs call."""
    config = router_config(provider_url)
    config["routes"]["refund-agent"]["weights"] = {"v1.4": 100, "v1.5": 0}
    return config


async def added_latency(direct: str, routed: str, total: int) -> dict[str, float]:
    direct_body = {**BODY, "model": DIRECT_MODEL}
    await latencies(direct, direct_body, 200, 1)
    await latencies(routed, BODY, 200, 1)
    d: list[float] = []
    r: list[float] = []
    for _ in range(3):  # alternate, so that the machine's moods hit both
        d += await latencies(direct, direct_body, total // 3, 1)
        r += await latencies(routed, BODY, total // 3, 1)
    return {
        "direct_p50": pct(d, 0.5),
        "router_p50": pct(r, 0.5),
        "direct_p99": pct(d, 0.99),
        "router_p99": pct(r, 0.99),
    }


async def throughput(
    direct: str,
    routed: str,
    router_pid: int,
    naive: tuple[str, int],
    seconds: float,
    python_requests: int,
) -> dict[str, Any]:
    direct_body = {**BODY, "model": DIRECT_MODEL}
    cpu_before = cpu_seconds(router_pid)
    routed_load = wrk(routed, BODY, 50, seconds)
    if routed_load is None:  # no wrk: this process's asyncio client instead
        return await _python_throughput(direct, routed, router_pid, python_requests)
    cpu = cpu_seconds(router_pid) - cpu_before
    direct_load = wrk(direct, direct_body, 50, seconds)
    naive_url, naive_pid = naive
    naive_before = cpu_seconds(naive_pid)
    naive_load = wrk(naive_url, BODY, 50, seconds)
    assert direct_load is not None and naive_load is not None
    return {
        "generator": "wrk -t1 -c50",
        "direct_rps": direct_load.rate,
        "router_rps": routed_load.rate,
        "naive_rps": naive_load.rate,
        "errors": routed_load.errors + direct_load.errors,
        "cpu_per_request": cpu / routed_load.requests,
        "naive_cpu_per_request": (cpu_seconds(naive_pid) - naive_before) / naive_load.requests,
    }


async def _python_throughput(
    direct: str, routed: str, router_pid: int, requests: int
) -> dict[str, Any]:
    import time

    direct_body = {**BODY, "model": DIRECT_MODEL}
    start = time.perf_counter()
    await latencies(direct, direct_body, requests, 50)
    direct_rps = requests / (time.perf_counter() - start)
    cpu_before = cpu_seconds(router_pid)
    start = time.perf_counter()
    await latencies(routed, BODY, requests, 50)
    router_rps = requests / (time.perf_counter() - start)
    return {
        "generator": "python asyncio, 50 in flight",
        "direct_rps": direct_rps,
        "router_rps": router_rps,
        "errors": 0,
        "cpu_per_request": (cpu_seconds(router_pid) - cpu_before) / requests,
    }


async def stream_ladder(
    direct: str, routed: str, router_pid: int, max_streams: int
) -> dict[str, Any]:
    body = {**BODY, "stream": True}
    direct_body = {**body, "model": DIRECT_MODEL}
    ladder = [n for n in (100, 250, 500, 1000, 2000, 3000, 4000, 6000) if n <= max_streams]
    held: dict[str, Any] = {"streams": 0}
    steps = []
    for n in ladder:
        cpu_before = cpu_seconds(router_pid)
        routed_run = await streams(routed, body, n, seconds=60)
        cpu_per_event = (cpu_seconds(router_pid) - cpu_before) / (n * STREAM_EVENTS)
        if routed_run.errors or not routed_run.ttft:
            held["failed_at"] = {"streams": n, "errors": routed_run.errors}
            break
        direct_run = await streams(direct, direct_body, n, seconds=60)
        held = {
            "streams": n,
            "direct_errors": direct_run.errors,
            "direct_ttft_p50": pct(direct_run.ttft, 0.5),
            "direct_ttft_p99": pct(direct_run.ttft, 0.99),
            "router_ttft_p50": pct(routed_run.ttft, 0.5),
            "router_ttft_p99": pct(routed_run.ttft, 0.99),
            "rss_peak_mb": rss_mb(router_pid, peak=True),
            "seconds": routed_run.seconds,
            "cpu_per_event": cpu_per_event,
        }
        steps.append(held)
    held["steps"] = steps
    return held


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def print_table(
    lat: dict[str, float], tp: dict[str, Any], st: dict[str, Any], rb: dict[str, Any]
) -> None:
    added50 = lat["router_p50"] - lat["direct_p50"]
    added99 = lat["router_p99"] - lat["direct_p99"]
    ratio = tp["router_rps"] / tp["direct_rps"]
    print("\n| measure | direct | router | router - direct, or ratio | target |")
    print("|---|---|---|---|---|")
    print(
        f"| latency p50, concurrency 1 | {ms(lat['direct_p50'])} | {ms(lat['router_p50'])} | "
        f"+{ms(added50)} | <= 0.25 ms: {verdict(added50 <= TARGETS['p50'])} |"
    )
    print(
        f"| latency p99, concurrency 1 | {ms(lat['direct_p99'])} | {ms(lat['router_p99'])} | "
        f"+{ms(added99)} | <= 1 ms: {verdict(added99 <= TARGETS['p99'])} |"
    )
    print(
        f"| throughput, concurrency 50 ({tp['generator']}) | {tp['direct_rps']:.0f} req/s | "
        f"{tp['router_rps']:.0f} req/s | {ratio:.2f} | >= 0.35: "
        f"{verdict(ratio >= TARGETS['throughput'])} |"
    )
    cpu = tp["cpu_per_request"]
    print(
        f"| router CPU per request (non-streamed) | | {cpu * 1e6:.0f} us | | <= 120 us: "
        f"{verdict(cpu <= TARGETS['cpu'])} |"
    )
    if "naive_rps" in tp:
        naive_cpu = tp["naive_cpu_per_request"]
        print(
            f"| the floor: a naive aiohttp pass-through (benchmarks/naive_proxy.py) | | "
            f"{tp['naive_rps']:.0f} req/s, {naive_cpu * 1e6:.0f} us CPU per request | "
            f"{tp['naive_rps'] / tp['direct_rps']:.2f} of direct; the router costs "
            f"{cpu / naive_cpu:.2f}x its CPU | |"
        )
    if st.get("streams"):
        a50 = st["router_ttft_p50"] - st["direct_ttft_p50"]
        a99 = st["router_ttft_p99"] - st["direct_ttft_p99"]
        print(
            f"| concurrent SSE streams held with 0 errors (20 events, 50 ms apart) | | "
            f"{st['streams']} | | >= 2000: {verdict(st['streams'] >= TARGETS['streams'])} |"
        )
        print(
            f"| time to first token at {st['streams']} streams | p50 {ms(st['direct_ttft_p50'])}, "
            f"p99 {ms(st['direct_ttft_p99'])} | p50 {ms(st['router_ttft_p50'])}, p99 "
            f"{ms(st['router_ttft_p99'])} | p50 +{ms(a50)}, p99 +{ms(a99)} | p99 <= 10 ms: "
            f"{verdict(a99 <= TARGETS['ttft_p99'])} |"
        )
        print(
            f"| router peak RSS | | {st['rss_peak_mb']:.0f} MB | | <= 300 MB: "
            f"{verdict(st['rss_peak_mb'] <= TARGETS['rss'])} |"
        )
    for step in st.get("steps", []):
        print(
            f"| streams: {step['streams']} at once | TTFT p50 {ms(step['direct_ttft_p50'])}, "
            f"p99 {ms(step['direct_ttft_p99'])} | TTFT p50 {ms(step['router_ttft_p50'])}, "
            f"p99 {ms(step['router_ttft_p99'])}, {step['cpu_per_event'] * 1e6:.0f} us CPU per "
            f"event | p99 +{ms(step['router_ttft_p99'] - step['direct_ttft_p99'])} | |"
        )
    if st.get("failed_at"):
        failed = st["failed_at"]
        step, errors = failed["streams"], failed["errors"]
        print(f"| streams: the next step, {step}, had {errors} errors | | | | |")
    if rb:
        print(
            f"| rollback: trip decision -> swap (median) | | {ms(rb['swap'])} | | |\n"
            f"| rollback: trip decision -> durable (median) | | {ms(rb['durable'])} | | |\n"
            f"| rollback: requests started after the swap that reached the canary | | "
            f"{rb['late']} of {rb['after']} | | 0 |\n"
            f"| `bundle-router rollback` wall, Python start included (median) | "
            f"`python -c pass` {ms(rb['python'])} | {ms(rb['cli'])} | | well under 1 s |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="each throughput run")
    parser.add_argument("--latency-requests", type=int, default=3000)
    parser.add_argument("--max-streams", type=int, default=3000)
    parser.add_argument("--rollback-runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny numbers: does it run?")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.latency_requests, args.max_streams, args.rollback_runs = 1, 60, 100, 2
    pinned = pin(os.getpid(), LOAD_CORE)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "provider").mkdir()
        provider = ProviderProcess(Path(tmp) / "provider")
        router = Router(Path(tmp) / "router", bench_config(provider.url))
        pid = router.process.proc.pid
        pinned = pin(pid, ROUTER_CORE) and pin(provider.process.proc.pid, LOAD_CORE) and pinned
        direct, routed = f"{provider.url}/v1/messages", f"{router.url}/v1/messages"
        naive_port = free_port()
        naive = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.naive_proxy", str(naive_port), direct],
            stdout=subprocess.PIPE,
        )
        assert naive.stdout is not None
        naive.stdout.readline()  # "ready"
        pin(naive.pid, ROUTER_CORE)
        naive_target = (f"http://127.0.0.1:{naive_port}/v1/messages", naive.pid)
        try:
            lat = asyncio.run(added_latency(direct, routed, args.latency_requests))
            tp = asyncio.run(
                throughput(direct, routed, pid, naive_target, args.seconds, args.latency_requests)
            )
            naive.terminate()
            naive.wait()
            provider.behave(**STREAM_BEHAVIOUR)
            st = asyncio.run(stream_ladder(direct, routed, pid, args.max_streams))
        finally:
            if naive.poll() is None:
                naive.terminate()
                naive.wait()
            naive.stdout.close()
            router.stop()
            provider.stop()
        trip = asyncio.run(guardrails.trip_on_the_router(_fresh(Path(tmp) / "trip")))
        cli = rollback.measure(args.rollback_runs)
    rb = {
        "swap": trip["swap"],
        "durable": trip["durable"],
        "late": int(trip["late"]),
        "after": int(trip["after"]),
        "cli": statistics.median(cli["cli"]),
        "python": statistics.median(cli["python"]),
    }
    cores = "router on core 0, provider and load on core 1" if pinned else "not pinned"
    print(f"\nbundle-router against a direct call, this machine ({os.cpu_count()} cores, {cores})")
    print_table(lat, tp, st, rb)


def _fresh(folder: Path) -> Path:
    (folder / "provider").mkdir(parents=True)
    return folder


if __name__ == "__main__":
    main()
