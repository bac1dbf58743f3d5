"""Rolling releases: from a halt decision to the last flipped sidecar's reverse swap.

    python -m benchmarks.rolling [--sidecars 8] [--regions 4] [--trials 20]
    python -m benchmarks.rolling --quick      # tiny numbers, to check that it runs

Everything is real and on this machine, as in benchmarks.fleet: Debian's redis-server
(testing/redis.py, no persistence), a controller (`bundle-router control`) and sidecars
(`bundle-router serve`) as processes (testing/fleet.py), the fleet block's defaults
(heartbeat 1 s, lease 3 s). The sidecars are spread evenly over the regions (`us-east`,
`us-west`, `eu`, `apac`, in that order). The last region's sidecars use a second fake
provider on which the new version's model fails every answer: the regression.

refund-agent has v1.5 deployed at 0 % and a plan of waves only (`steps: [100]`): region by
region in that order, one instance a wave, a short bake (`--bake`, 5 answers at least), and
`auto_rollback: reverse`. The controller judges the groups on the pooled counts (error rate
at most 5 %); the sidecars' own guardrails are off, so that the controller's gauge is the one
that decides. Light traffic goes to every sidecar in turn, each request a new session.

One trial: `rollout start`; the waves walk every region but the last, and then flip the
first instance of the last region; its gauge breaches, the controller halts (`wave_halt`) and
flips back the breached group, then every other flipped instance (`wave_reverse` twice). The
trial is timed from the halt decision (the `at` of the controller's `wave_halt` record, wall
clock, millisecond precision, same machine) to the last flipped sidecar's reverse swap. A
sidecar's reverse is its own audit record of the `fleet_sync` that took it off the new
version (its weight table before it served v1.5, after it does not). Its swap time is the
sidecar's own `swapped_at_unix` (its admin `status`, `last_change`: the wall clock right
after the table's assignment) when that record is still the sidecar's last change, which it
is for every instance that the controller's last `wave_reverse` flipped back. Otherwise the
record's `at` stands for it: taken just before the record is written, so before the swap by
one audit append (the exact ones give that gap too). Then the candidate is given weight again
(0.01 %, which re-enables it) and the next trial starts.

The processes are not pinned: on 2 cores the sidecars, the controller, Redis, the provider
and the traffic share them. The times are this machine's; `/proc/loadavg` is printed before
and after.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.fleet import ACTIVE, CANARY, CANARY_MODEL, ROUTE, ms, row, set_weights
from benchmarks.harness import BODY, pct
from router.control.moves import ROLLED_BACK, RouteState
from router.fleet.view import flipped, table_for
from testing.fleet import Fleet, Member, rolling_routes
from testing.redis import RedisServer
from testing.servers import ProviderProcess

REGIONS = ["us-east", "us-west", "eu", "apac"]
POOL = "paid"
TARGET = 1.0  # seconds: the p99
TRIAL_WAIT = 180.0  # the longest one trial may take before the benchmark gives up
RE_ENABLE = {ACTIVE: 99.99, CANARY: 0.01}  # weight on a rolled-back candidate re-enables it


# -- the fleet ----------------------------------------------------------------------------------


def layout(sidecars: int, regions: int) -> list[tuple[str, str]]:
    """(region, pool) per sidecar: the regions in order, as even as the count allows."""
    names = REGIONS[:regions]
    each, extra = divmod(sidecars, regions)
    return [(name, POOL) for i, name in enumerate(names) for _ in range(each + (i < extra))]


def routes(regions: Sequence[str], bake: float, guarded: bool) -> dict[str, Any]:
    """The tests' waves-only plan (testing.fleet.rolling_routes) over `regions`, guardrails
    that judge on few answers (the controller's) or none (the sidecars')."""
    found = rolling_routes(groups=list(regions), bake=f"{bake:g}s", auto_rollback="reverse")
    if not guarded:
        found = {name: {**route, "guardrails": "off"} for name, route in found.items()}
    found["support-agent"]["guardrails"] = "off"
    return found


@contextmanager
def traffic(urls: Sequence[str], pause: float = 0.01) -> Iterator[list[int]]:
    """One request to each URL in turn, then `pause`, in a thread, while the block runs;
    yields [sent, failed] (a bad answer from the regression's provider is not a failure)."""
    counts = [0, 0]
    stop = threading.Event()

    def send() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                for url in urls:
                    headers = {"X-Session-Id": uuid.uuid4().hex}
                    try:
                        client.post(f"{url}/v1/messages", json=BODY, headers=headers)
                    except httpx.HTTPError:
                        counts[1] += 1
                    counts[0] += 1
                time.sleep(pause)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(15)


# -- one trial ----------------------------------------------------------------------------------


def unix(at: str) -> float:
    """An audit record's `at` ('2026-11-27T10:00:00.123Z') as unix time."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def reversed_here(record: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a sidecar's fleet_sync record took it (`labels`) from flipped to a table
    with no weight on the new version (its own view: router.fleet.view, as it builds it)."""
    before, after = record["before"], record["after"]
    if before is None or not flipped(RouteState.from_dict(before), labels["instance"]):
        return False
    return table_for(RouteState.from_dict(after), labels).percent(CANARY) == 0


def actions(member: Member, *wanted: str) -> list[dict[str, Any]]:
    return [r for r in member.router.audit() if r["action"] in wanted and r["route"] == ROUTE]


def until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll `check` every 50 ms until it returns something true; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:g}s")


@dataclass
class Swap:
    instance: str
    at: float  # unix time of the reverse swap (exact) or of its record (not exact)
    exact: bool
    gap: float | None  # for an exact one: seconds from the record's `at` to the swap


@dataclass
class Trial:
    halted: str  # the breached group
    flipped: int  # instances flipped at the halt
    last: float  # seconds: halt decision -> the last flipped sidecar's reverse swap
    reversed_on_controller: float  # seconds: halt decision -> the last wave_reverse record
    swaps: list[Swap] = field(default_factory=list)


def reverse_swap(member: Member, labels: dict[str, str], after_seq: int, timeout: float) -> Swap:
    """The sidecar's reverse: its first fleet_sync after `after_seq` that took it off the
    new version, once the candidate's drain has reached it too."""

    def found() -> dict[str, Any] | None:
        records = [r for r in actions(member, "fleet_sync") if r["seq"] > after_seq]
        if not any((r["after"] or {}).get("candidate_state") == ROLLED_BACK for r in records):
            return None  # not done yet: the drain comes with the controller's last change
        return next((r for r in records if reversed_here(r, labels)), None)

    record = until(f"{member.name}'s reverse swap", found, timeout)
    change = member.admin("GET", "/routes")[ROUTE]["last_change"] or {}
    if change.get("audit_seq") == record["seq"]:
        swapped = float(change["swapped_at_unix"])
        return Swap(member.name, swapped, True, swapped - unix(record["at"]))
    return Swap(member.name, unix(record["at"]), False, None)


def start(controller: Member, first: bool) -> None:
    """`rollout start`, re-enabling the rolled-back candidate first after the first trial.
    A refusal is tried again (the canary watch may trip the re-enabled candidate on the
    last trial's evidence before the waves begin), a few times."""
    for _ in range(5):
        if not first:
            set_weights(controller, RE_ENABLE, cli=False)
        status, answer = controller.answer(
            "POST", "/rollout", {"route": ROUTE, "action": "start", "reason": "benchmark"}
        )
        if status == 200:
            return
        first = False
        time.sleep(0.5)
    raise RuntimeError(f"rollout start refused: {answer}")


def trial(fleet: Fleet, labels: dict[str, dict[str, str]], first: bool) -> Trial:
    controller = fleet.controller
    halts = len(actions(controller, "wave_halt"))
    reverses = len(actions(controller, "wave_reverse"))
    seqs = {m.name: max((r["seq"] for r in m.router.audit()), default=0) for m in fleet.sidecars}
    start(controller, first)
    until(
        "the halt and both reverse flips",
        lambda: (
            len(actions(controller, "wave_halt")) > halts
            and len(actions(controller, "wave_reverse")) >= reverses + 2
        ),
        TRIAL_WAIT,
    )
    halt = actions(controller, "wave_halt")[-1]
    reverse = actions(controller, "wave_reverse")[-1]
    decided = unix(halt["at"])
    flipped = list(halt["after"]["ramp"]["waves"]["flipped"])
    members = {m.name: m for m in fleet.sidecars}
    swaps = [reverse_swap(members[n], labels[n], seqs[n], 30.0) for n in flipped]
    return Trial(
        halt["details"]["group"],
        len(flipped),
        max(s.at for s in swaps) - decided,
        unix(reverse["at"]) - decided,
        swaps,
    )


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Options:
    sidecars: int
    regions: int
    trials: int
    bake: float


@dataclass
class Results:
    trials: list[Trial] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    load_before: str = ""
    load_after: str = ""


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def run(options: Options, tmp: Path) -> Results:
    r = Results(load_before=loadavg())
    placed = layout(options.sidecars, options.regions)
    regions = REGIONS[: options.regions]
    (tmp / "provider").mkdir()
    (tmp / "bad").mkdir()
    provider = ProviderProcess(tmp / "provider")
    bad = ProviderProcess(tmp / "bad")
    server = RedisServer(tmp)
    try:
        bad.behave(model=CANARY_MODEL, error_rate=1.0)
        names = [f"sidecar-{i}" for i in range(len(placed))]
        fleet = Fleet(
            tmp / "fleet",
            provider.url,
            server.url,
            placed,
            name="bench-rolling",
            config={"routes": routes(regions, options.bake, guarded=False)},
            controller_config={"routes": routes(regions, options.bake, guarded=True)},
            provider_urls={
                n: bad.url
                for n, (region, _) in zip(names, placed, strict=True)
                if region == regions[-1]
            },
        )
        try:
            labels = {
                n: {"instance": n, "region": region, "pool": pool}
                for n, (region, pool) in zip(names, placed, strict=True)
            }
            until(
                "every sidecar reports",
                lambda: len(fleet.controller.admin("GET", "/fleet")["sidecars"]) == len(names),
                30.0,
            )
            with traffic([m.router.url for m in fleet.sidecars]) as counts:
                for i in range(options.trials):
                    r.trials.append(trial(fleet, labels, first=i == 0))
                    t = r.trials[-1]
                    print(
                        f"trial {i + 1}/{options.trials}: {t.flipped} flipped, halted in "
                        f"{t.halted}, last reverse swap {ms(t.last)} after the halt",
                        flush=True,
                    )
            r.sent, r.failed = counts
        finally:
            fleet.stop()
    finally:
        server.stop()
        bad.stop()
        provider.stop()
    r.load_after = loadavg()
    return r


def report(options: Options, r: Results) -> None:
    n, k = options.sidecars, options.regions
    lasts = [t.last for t in r.trials]
    exact = [s for t in r.trials for s in t.swaps if s.exact]
    swaps = [s for t in r.trials for s in t.swaps]
    lasts_exact = sum(max(t.swaps, key=lambda s: s.at).exact for t in r.trials)
    print(
        f"\nRolling releases: halt -> reverse swaps (this machine: {os.cpu_count()} cores, "
        "not pinned)"
    )
    print("| measure | p50 | p99 | max | target |")
    print("|---|---|---|---|---|")
    label = f"halt decision -> last flipped sidecar's reverse swap, {n} sidecars in {k} regions"
    print(row(label, lasts, TARGET))
    print(
        row(
            "  of which the controller: halt -> its last wave_reverse record",
            [t.reversed_on_controller for t in r.trials],
        )
    )
    gaps = [s.gap for s in exact if s.gap is not None]
    print(row("  a sidecar's fleet_sync record -> its swap (the exact ones)", gaps))
    print(
        f"\nFlipped sidecars per trial: {', '.join(str(t.flipped) for t in r.trials)} "
        f"(halted in {', '.join(sorted({t.halted for t in r.trials}))}). Swap times exact "
        f"(the sidecar's swapped_at_unix): {len(exact)} of {len(swaps)}; the trial's last "
        f"swap exact in {lasts_exact} of {len(r.trials)} trials. Traffic: {r.sent} requests, "
        f"{r.failed} failed to connect."
    )
    if lasts:
        verdict = "met" if pct(lasts, 0.99) <= TARGET else "NOT met"
        print(f"Target p99 <= {TARGET * 1000:g} ms on this machine: {verdict}.")
    print(f"/proc/loadavg before: {r.load_before}; after: {r.load_after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sidecars", type=int, default=8)
    parser.add_argument("--regions", type=int, default=4, choices=range(2, len(REGIONS) + 1))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--bake", type=float, default=1.0, help="seconds per wave")
    parser.add_argument("--quick", action="store_true", help="tiny numbers: does it run?")
    args = parser.parse_args()
    if args.quick:
        options = Options(3, 2, 2, 0.5)
    else:
        options = Options(args.sidecars, args.regions, args.trials, args.bake)
    if options.sidecars < options.regions:
        parser.error(f"--sidecars {options.sidecars}: at least one per region ({options.regions})")
    with tempfile.TemporaryDirectory() as tmp:
        results = run(options, Path(tmp))
    report(options, results)


if __name__ == "__main__":
    main()
