"""How fast `bundle-router rollback` lands, end to end, Python start included.

    python -m benchmarks.rollback [--runs 20]

Starts the fake provider and the router as processes. Each run gives refund-agent a live
canary again (over the admin socket), then times the real command as an operator types it:

    bundle-router rollback refund-agent --json

It prints the command's wall time beside a bare `python -c pass` (the floor any Python CLI
pays), and the router's own time from the request's arrival to the swap and to durable
state. The numbers are this machine's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from router.admin.client import call
from testing.servers import ProviderProcess, Router, router_config

BIN = Path(sys.executable).parent / "bundle-router"


def wall(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return time.perf_counter() - started, done.stdout


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def measure(runs: int) -> dict[str, list[float]]:
    """Seconds per run: `python -c pass`, the CLI's wall time, the router's swap and
    durable times."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "provider").mkdir()
        provider = ProviderProcess(Path(tmp) / "provider")
        router = Router(Path(tmp) / "router", router_config(provider.url))
        socket = router.tmp / "run" / "admin.sock"
        result: dict[str, list[float]] = {"python": [], "cli": [], "swap": [], "durable": []}
        try:
            for _ in range(runs):
                canary = {"route": "refund-agent", "weights": {"v1.4": 95, "v1.5": 5}}
                call(socket, "POST", "/weights", canary)
                result["python"].append(wall([sys.executable, "-c", "pass"])[0])
                seconds, out = wall(
                    [str(BIN), "rollback", "refund-agent", "--json", "--socket", str(socket)]
                )
                result["cli"].append(seconds)
                timing = json.loads(out)["timing"]
                result["swap"].append(timing["decision_to_swap_seconds"])
                result["durable"].append(timing["decision_to_durable_seconds"])
        finally:
            router.stop()
            provider.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    result = measure(args.runs)
    ms = 1000
    print(f"\n`bundle-router rollback`, {args.runs} runs (this machine)")
    print("| measure | p50 | p90 |")
    print("|---|---|---|")
    rows = [
        ("`python -c pass` (the floor of any Python CLI)", result["python"]),
        ("`bundle-router rollback ROUTE`, wall, process start included", result["cli"]),
        ("in the router: request arrival -> swap", result["swap"]),
        ("in the router: request arrival -> durable (audit + state fsynced)", result["durable"]),
    ]
    for label, values in rows:
        print(f"| {label} | {pct(values, 0.5) * ms:.2f} ms | {pct(values, 0.9) * ms:.2f} ms |")
    ratio = statistics.median(result["cli"]) / statistics.median(result["python"])
    print(f"\nCLI wall / python floor (medians): {ratio:.2f}")


if __name__ == "__main__":
    main()
