"""The benchmarks keep working: the entry point with tiny numbers, and locust headless.
Nothing here checks a timing; that is the benchmarks' own business."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable

from testing.redis import require_redis
from testing.servers import REPO, ProviderProcess, Router, router_config


def run_benchmark(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m module args`, which must succeed; its output to read."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_benchmark_entry_point_prints_its_table() -> None:
    done = run_benchmark("benchmarks", "--quick")
    for row in (
        "| latency p50, concurrency 1 |",
        "| throughput, concurrency 50",
        "| router CPU per request (non-streamed) |",
        "| streams: 100 at once |",
        "| rollback: trip decision -> swap (median) |",
        "| `bundle-router rollback` wall",
    ):
        assert row in done.stdout, done.stdout


def test_the_scale_benchmark_prints_its_table() -> None:
    done = run_benchmark("benchmarks.scale", "--routes", "12", "--versions", "2")
    for row in (
        "| first start to ready, 12 x 2 |",
        "| /metrics scrape, 12 x 2 |",
        "| /metrics scrape: proxy stall",
        "| reload 12 x 2 -> 12 x 2 (a price, a version) |",
        "| restart to ready on its durable state, 12 x 2 |",
        "| reload 10 -> 12 routes, no traffic |",
        "| reload 10 -> 12 routes, with the probe |",
        "| RSS after it (peak) |",
    ):
        assert row in done.stdout, done.stdout


def test_the_sessions_benchmark_prints_its_rows() -> None:
    # This checkout as its own baseline: the child processes' path runs too.
    done = run_benchmark(
        "benchmarks.sessions", "--calls", "2000", "--rounds", "1", "--baseline", "."
    )
    for row in (
        "after / before",
        "plain table (neither hold nor remember)",
        "unflipped: remember, new each time, oldest dropped",
        "flipped: hold, every session held",
        "flipped: hold, every session new",
    ):
        assert row in done.stdout, done.stdout


def test_the_pooled_guardrail_simulation_prints_its_tables() -> None:
    done = run_benchmark("benchmarks.pooled", "--quick")
    for row in (
        "| 10 | error rate 1% -> 10% |",
        "| 100 | tool-call failures 0% -> 20% |",
        "- false trips at N=100: 0 in 20",
        "pooled at N=10 >= 5x sooner than local-only, error rate 1% -> 10%",
    ):
        assert row in done.stdout, done.stdout


def test_the_fleet_benchmark_prints_its_tables() -> None:
    require_redis()
    done = run_benchmark("benchmarks.fleet", "--quick")
    for row in (
        "| weight change -> every ack, 2 sidecars (n=5) |",
        "| `bundle-router weights` -> every ack, 2 sidecars (n=1) |",
        "| weight change -> every ack, 5 followers in one process (n=5) |",
        "| trip written -> every sidecar swapped, 2 sidecars (n=2) |",
        "| guardrail decision -> every sidecar at 0, 2 sidecars (n=1) |",
        "| **all commands** |",
        "| commands/s at rest |",
        "| commands per weight change |",
    ):
        assert row in done.stdout, done.stdout
    assert "Sidecars still showing the canary's weight after acknowledging a trip: 0." in (
        done.stdout
    ), done.stdout


def test_the_rolling_benchmark_prints_its_table() -> None:
    require_redis()
    done = run_benchmark("benchmarks.rolling", "--quick")
    for row in (
        "| halt decision -> last flipped sidecar's reverse swap, 3 sidecars in 2 regions (n=2) |",
        "of which the controller: halt -> its last wave_reverse record (n=2) |",
        "Flipped sidecars per trial: 3, 3 (halted in us-west).",
        "/proc/loadavg before:",
    ):
        assert row in done.stdout, done.stdout


def test_the_locustfile_runs_headless(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url))
    locust = shutil.which("locust", path=str(REPO / ".venv" / "bin")) or "locust"
    done = subprocess.run(
        [
            locust,
            "-f",
            str(REPO / "benchmarks" / "locustfile.py"),
            "--host",
            router.url,
            "--headless",
            "-u",
            "10",
            "-r",
            "10",
            "-t",
            "4s",
            "--only-summary",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout + done.stderr
    assert "refund-agent" in summary and "support-agent" in summary
    assert "router overhead, microseconds" in summary
    aggregated = next(line for line in summary.splitlines() if "Aggregated" in line)
    assert " 0(0.00%)" in aggregated, aggregated
