"""The guardrail engine: how fast it catches a bad canary, how rarely it trips a good one,
and how long a trip takes on the real router.

    python -m benchmarks.guardrails [--runs 200] [--canaries 1000] [--hours 1] [--no-router]

1. Detection delay. Synthetic outcome streams at 200 rps with a 5 % canary (10 candidate
   and 190 control requests a second); the candidate is bad from its first request. The
   default rules judge after every candidate request, as the router's 100 ms tick does at
   this rate. Printed in candidate requests and seconds, median and p90 over `--runs`.
2. False trips. `--canaries` healthy canaries (the candidate behaves exactly as the control)
   of `--hours` each, judged after every simulated second. The confidence sequences hold
   at every look; judging once a second instead of once a request can only lower the count.
3. The real router. A 5 % canary whose model starts failing: the time from the trip decision
   to the swap and to durable state, and whether any request started after the swap reached
   the canary.

Timings in 3 are this machine's; 1 and 2 count requests and do not depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, replace
from multiprocessing import Pool
from pathlib import Path

import aiohttp
import numpy as np

from router.config import Guardrails
from router.control.guardrails import Guard
from router.proxy.telemetry import GUARD_LATENCY_BOUNDS, Totals

RPS = 200
CANARY_SHARE = 0.05
CONTROL_PER_CANDIDATE = round((1 - CANARY_SHARE) / CANARY_SHARE)  # 19
MAX_CANDIDATE_REQUESTS = 20_000  # a detection run gives up here (2000 s at 10 rps)


@dataclass(frozen=True)
class Behaviour:
    """How one simulated version answers."""

    error_rate: float = 0.01
    latency_median: float = 0.8  # seconds, log-normal
    latency_sigma: float = 0.3
    latency_shift: float = 0.0  # added to every answer
    tool_call_share: float = 0.5  # answers with a tool call
    tool_failure_rate: float = 0.0  # of the tool calls
    refusal_rate: float = 0.02
    cost_mean: float = 0.01  # USD per answer, log-normal
    cost_sigma: float = 0.5


CONTROL = Behaviour()
SCENARIOS = [
    ("error rate 1% -> 10%", replace(CONTROL, error_rate=0.10), 150),
    ("error rate 1% -> 50%", replace(CONTROL, error_rate=0.50), 15),
    ("p95 latency +300 ms", replace(CONTROL, latency_shift=0.3), None),
    ("tool-call failures 0% -> 20%", replace(CONTROL, tool_failure_rate=0.20), None),
]


class Tally:
    """Cumulative counts of one simulated version, answer by answer."""

    def __init__(self) -> None:
        self.requests = self.errors = self.tool_calls = self.tool_failures = 0
        self.refusals = 0
        self.cost = 0.0
        self.latency = [0] * (len(GUARD_LATENCY_BOUNDS) + 1)

    def answer(self, behaviour: Behaviour, rng: random.Random) -> None:
        self.requests += 1
        self.errors += rng.random() < behaviour.error_rate
        seconds = rng.lognormvariate(math.log(behaviour.latency_median), behaviour.latency_sigma)
        self.latency[bisect_left(GUARD_LATENCY_BOUNDS, seconds + behaviour.latency_shift)] += 1
        if rng.random() < behaviour.tool_call_share:
            self.tool_calls += 1
            self.tool_failures += rng.random() < behaviour.tool_failure_rate
        self.refusals += rng.random() < behaviour.refusal_rate
        mu = math.log(behaviour.cost_mean) - behaviour.cost_sigma**2 / 2
        self.cost += rng.lognormvariate(mu, behaviour.cost_sigma)

    def totals(self) -> Totals:
        return Totals(
            requests=self.requests,
            errors=self.errors,
            latency=tuple(self.latency),
            priced=self.requests,
            cost_usd=self.cost,
            tool_calls=self.tool_calls,
            tool_failures=self.tool_failures,
            refusals=self.refusals,
        )


def detect(candidate: Behaviour, seed: int) -> tuple[int | None, str | None]:
    """Candidate requests until the first trip (None if none by the cap), and its rule."""
    rng, guard = random.Random(seed), Guard(Guardrails())
    canary, control = Tally(), Tally()
    for n in range(1, MAX_CANDIDATE_REQUESTS + 1):
        canary.answer(candidate, rng)
        for _ in range(CONTROL_PER_CANDIDATE):
            control.answer(CONTROL, rng)
        for verdict in guard.judge(canary.totals(), control.totals()):
            if verdict.tripped:
                return n, verdict.rule
    return None, None


def _latency_shares(behaviour: Behaviour) -> np.ndarray:
    """P(answer in each GUARD_LATENCY_BOUNDS bucket) for a log-normal latency (plus its
    shift)."""

    def cdf(x: float) -> float:
        x -= behaviour.latency_shift
        if x <= 0:
            return 0.0
        z = (math.log(x) - math.log(behaviour.latency_median)) / behaviour.latency_sigma
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    edges = [cdf(b) for b in GUARD_LATENCY_BOUNDS]
    shares = np.diff([0.0, *edges, 1.0])
    normalised: np.ndarray = np.clip(shares, 0, None) / np.clip(shares, 0, None).sum()
    return normalised


def _per_second(
    rng: np.random.Generator, n: np.ndarray, behaviour: Behaviour
) -> dict[str, np.ndarray]:
    """One version's counts, second by second, cumulative."""
    calls = rng.binomial(n, behaviour.tool_call_share)
    mu = math.log(behaviour.cost_mean) - behaviour.cost_sigma**2 / 2
    draws = rng.lognormal(mu, behaviour.cost_sigma, size=int(n.sum()))
    starts = np.concatenate(([0], np.cumsum(n)[:-1]))
    cost = np.where(n > 0, np.add.reduceat(draws, np.minimum(starts, len(draws) - 1)), 0.0)
    counts = {
        "requests": n,
        "errors": rng.binomial(n, behaviour.error_rate),
        "tool_calls": calls,
        "tool_failures": rng.binomial(calls, behaviour.tool_failure_rate),
        "refusals": rng.binomial(n, behaviour.refusal_rate),
        "cost": cost,
        "latency": rng.multinomial(n, _latency_shares(behaviour)),
    }
    return {key: np.cumsum(value, axis=0) for key, value in counts.items()}


def _totals(c: dict[str, np.ndarray], t: int) -> Totals:
    return Totals(
        requests=int(c["requests"][t]),
        errors=int(c["errors"][t]),
        latency=tuple(c["latency"][t].tolist()),
        priced=int(c["requests"][t]),
        cost_usd=float(c["cost"][t]),
        tool_calls=int(c["tool_calls"][t]),
        tool_failures=int(c["tool_failures"][t]),
        refusals=int(c["refusals"][t]),
    )


def healthy_canary(args: tuple[int, int]) -> str | None:
    """One healthy canary of `seconds`; the rule that falsely tripped, if any."""
    seed, seconds = args
    rng = np.random.default_rng(seed)
    canary_n = rng.binomial(RPS, CANARY_SHARE, size=seconds)
    canary = _per_second(rng, canary_n, CONTROL)
    control = _per_second(rng, RPS - canary_n, CONTROL)
    guard = Guard(Guardrails())
    for t in range(seconds):
        for verdict in guard.judge(_totals(canary, t), _totals(control, t)):
            if verdict.tripped:
                return verdict.rule
    return None


def _pct(values: list[int], p: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def print_detection(runs: int) -> None:
    rate = RPS * CANARY_SHARE
    print(f"\nDetection delay: {RPS} rps, {CANARY_SHARE:.0%} canary, default rules, {runs} runs")
    print(
        "| regression | rule tripped | candidate requests p50 / p90 | seconds p50 / p90 | target |"
    )
    print("|---|---|---|---|---|")
    for name, candidate, target in SCENARIOS:
        results = [detect(candidate, seed) for seed in range(runs)]
        found = [n for n, _ in results if n is not None]
        rules = ", ".join(Counter(rule for _, rule in results if rule)) or "-"
        if not found:
            print(f"| {name} | - | none in {MAX_CANDIDATE_REQUESTS} | - | - |")
            continue
        p50, p90 = _pct(found, 0.5), _pct(found, 0.9)
        missed = runs - len(found)
        delay = f"{p50} / {p90}" + (f" ({missed} runs missed)" if missed else "")
        goal = "-"
        if target is not None:
            goal = f"<= {target}: p50 {'met' if p50 <= target else 'NOT met'}"
            goal += f", p90 {'met' if p90 <= target else 'not met'}"
        print(f"| {name} | {rules} | {delay} | {p50 / rate:.1f} / {p90 / rate:.1f} | {goal} |")


def print_false_trips(canaries: int, hours: float) -> None:
    seconds = int(hours * 3600)
    started = time.perf_counter()
    with Pool(2) as pool:
        rules = pool.map(healthy_canary, [(seed, seconds) for seed in range(canaries)], chunksize=8)
    trips = Counter(rule for rule in rules if rule)
    total = sum(trips.values())
    print(
        f"\nFalse trips: {canaries} healthy canaries of {hours:g} h at {RPS} rps, "
        f"{CANARY_SHARE:.0%} canary, judged every second "
        f"({time.perf_counter() - started:.0f} s to simulate)"
    )
    print("| canaries | false trips | by rule | rate | target |")
    print("|---|---|---|---|---|")
    print(
        f"| {canaries} | {total} | {dict(trips) or '-'} | {total / canaries:.4f} | "
        f"<= 1 in 1000: {'met' if total / canaries <= 0.001 else 'NOT met'} |"
    )


async def trip_on_the_router(tmp: Path) -> dict[str, float]:
    from testing.servers import ProviderProcess, Router, router_config

    provider = ProviderProcess(tmp / "provider")
    config = router_config(provider.url)
    config["routes"]["refund-agent"]["weights"] = {"v1.4": 95, "v1.5": 5}
    router = Router(tmp / "router", config)
    try:
        provider.behave("claude-opus-4-7-20260108", error_rate=0.5)
        sent: list[tuple[float, str]] = []
        body = {
            "model": "refund-agent",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with aiohttp.ClientSession() as session:

            async def agent(n: int) -> None:
                for i in range(400):
                    started = time.time()
                    headers = {"X-Session-Id": f"agent-{n}-{i}"}
                    async with session.post(
                        f"{router.url}/v1/messages", json=body, headers=headers
                    ) as r:
                        await r.read()
                        sent.append((started, r.headers["X-Bundle-Version"]))
                    if router_tripped.is_set():
                        return

            router_tripped = asyncio.Event()

            async def watch() -> None:
                while True:
                    await asyncio.sleep(0.05)
                    if router.rollouts()["refund-agent"]["candidate_state"] == "rolled_back":
                        await asyncio.sleep(0.2)  # let traffic run on past the trip
                        router_tripped.set()
                        return

            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(agent(n) for n in range(10)))
            watcher.cancel()
        change = router.rollouts()["refund-agent"]["last_change"]
        swapped = change["swapped_at_unix"]
        return {
            "swap": change["decision_to_swap_seconds"],
            "durable": change["decision_to_durable_seconds"],
            "late": sum(1 for at, version in sent if at > swapped and version == "v1.5"),
            "after": sum(1 for at, _ in sent if at > swapped),
        }
    finally:
        router.stop()
        provider.stop()


def print_router(rounds: int) -> None:
    results = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "provider").mkdir()
            results.append(asyncio.run(trip_on_the_router(Path(tmp))))
    print(f"\nThe real router (this machine): a 5% canary failing half its answers, {rounds} trips")
    print("| measure | median | max |")
    print("|---|---|---|")
    for key, label in (
        ("swap", "decision -> swap"),
        ("durable", "decision -> durable (audit + state fsynced)"),
    ):
        values = [r[key] * 1000 for r in results]
        print(f"| {label} | {statistics.median(values):.3f} ms | {max(values):.3f} ms |")
    late = sum(int(r["late"]) for r in results)
    after = sum(int(r["after"]) for r in results)
    print(f"| requests started after the swap that reached the canary | {late} of {after} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="detection runs per regression")
    parser.add_argument("--canaries", type=int, default=1000, help="healthy canaries")
    parser.add_argument("--hours", type=float, default=1.0, help="length of a healthy canary")
    parser.add_argument("--rounds", type=int, default=5, help="trips on the real router")
    parser.add_argument("--no-router", action="store_true", help="only the simulations")
    args = parser.parse_args()
    print_detection(args.runs)
    print_false_trips(args.canaries, args.hours)
    if not args.no_router:
        print_router(args.rounds)


if __name__ == "__main__":
    main()
