"""The cost of sticky sessions across a flip in the handler's choice (`Proxy.choose`).

    python -m benchmarks.sessions [--calls 100000] [--rounds 7] [--baseline /work/main]

Times `Proxy.choose` on the example config's refund-agent (a session key in X-Session-Id, 1,000
distinct sessions in turn) with the route's table as a plain ramp (the config's 95/5), as an
unflipped instance's (remembering every session, the memory full at `limits.session_memory`)
and as a flipped instance's (a hold: sessions it remembered, and new ones). With
`--baseline TREE` it also times the plain table on another checkout of the router (say main,
before this feature) in a child process, in rounds alternating with this tree's own child, so
the hot path's cost with neither hold nor remember set is read side by side. Not a test: the
numbers are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TREE = HERE.parents[1]
SESSIONS = 1000


def setup(tree: Path) -> tuple[Any, Any, list[tuple[Any, Any, dict[str, Any]]]]:
    """The proxy, refund-agent and one (exchange, request, body) per session, built from
    `tree`'s router and example config. Only APIs every version of the router has."""
    from aiohttp.test_utils import make_mocked_request

    from router.catalog import load_catalog
    from router.control.build import build_routes, build_upstreams
    from router.proxy.access_log import AccessLog
    from router.proxy.exchange import Exchange
    from router.proxy.feedback import RecentRequests
    from router.proxy.handler import Proxy

    catalog = load_catalog(tree / "config" / "router.yaml")
    routes = build_routes(catalog, build_upstreams(catalog.config))
    proxy = Proxy(routes, 1 << 20, RecentRequests(1000, 60.0))
    route = routes["refund-agent"]
    dialect = route.dialect
    calls = []
    for n in range(SESSIONS):
        headers = {"X-Session-Id": f"session-{n:06d}"}
        request = make_mocked_request("POST", dialect.path, headers=headers)
        x = Exchange(dialect, f"req-{n}", AccessLog("off"), "POST", dialect.path)
        calls.append((x, request, {"model": "refund-agent", "messages": []}))
    return proxy, route, calls


def time_choose(proxy: Any, route: Any, calls: list[Any], n: int) -> float:
    """Seconds per `Proxy.choose`, over `n` calls cycling through the sessions."""
    choose = proxy.choose
    rounds, rest = divmod(n, len(calls))
    started = time.perf_counter()
    for _ in range(rounds):
        for x, request, body in calls:
            choose(x, route, request, body)
    for x, request, body in calls[:rest]:
        choose(x, route, request, body)
    return (time.perf_counter() - started) / n


def child(tree: Path, calls: int) -> None:
    """In a child process whose `router` is `tree`'s: time the plain table, print JSON."""
    import router

    proxy, route, prepared = setup(tree)
    time_choose(proxy, route, prepared, calls // 10)  # warm up
    seconds = time_choose(proxy, route, prepared, calls)
    print(json.dumps({"router": router.__file__, "seconds": seconds}))


def run_child(tree: Path, calls: int) -> tuple[str, float]:
    # Run as a script so that the router imported is `tree`'s (PYTHONPATH before the venv's).
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", str(tree), "--calls", str(calls)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    return answer["router"], answer["seconds"]


def side_by_side(baseline: Path, calls: int, rounds: int) -> None:
    trees = {"before": baseline, "after": TREE}
    times: dict[str, list[float]] = {"before": [], "after": []}
    files = {}
    for _ in range(rounds):
        for name, tree in trees.items():
            files[name], seconds = run_child(tree, calls)
            times[name].append(seconds)
    before, after = (statistics.median(times[name]) * 1e9 for name in ("before", "after"))
    print(f"plain table, {rounds} alternating rounds of {calls} calls, a process each:")
    print(f"  before ({files['before']}): median {before:7.1f} ns a choice")
    print(f"  after  ({files['after']}): median {after:7.1f} ns a choice")
    print(f"  after - before {after - before:+.1f} ns, after / before {after / before:.3f}")
    pairs = zip(times["before"], times["after"], strict=True)
    print(
        "  each round, before/after ns: "
        + ", ".join(f"{b * 1e9:.0f}/{a * 1e9:.0f}" for b, a in pairs)
    )


def in_process(calls: int, rounds: int) -> None:
    """This tree's choice with each kind of table, in alternating rounds in one process."""
    from router.config import SESSION_MEMORY
    from router.proxy.routing import BASIS_POINTS, SessionHold, WeightTable
    from router.proxy.sessions import SessionMemory

    proxy, route, prepared = setup(TREE)
    plain = route.table
    old_only = {"v1.4": BASIS_POINTS, "v1.5": 0}
    new_only = {"v1.4": 0, "v1.5": BASIS_POINTS}
    remember = WeightTable.build(old_only, "v1.4", "v1.5", remember_sessions=True)
    far = time.monotonic() + 3600
    hold = WeightTable.build(new_only, "v1.4", "v1.5", hold=SessionHold("v1.4", far, 3600))
    ours = [f"session-{n:06d}" for n in range(SESSIONS)]

    def memory(capacity: int, keys: list[str]) -> SessionMemory:
        made = SessionMemory(capacity)
        for key in keys:
            made.remember(key, time.monotonic())
        return made

    full = [f"other-{n}" for n in range(SESSION_MEMORY - SESSIONS)] + ours
    # Each case: its table and a memory. Cycling 1,000 sessions through a memory of 500, each
    # one is new when it comes round again: every call remembers a new session and drops one.
    cases: dict[str, tuple[Any, Any]] = {
        "plain table (neither hold nor remember)": (plain, lambda: memory(SESSION_MEMORY, [])),
        f"unflipped: remember, seen again, memory full ({SESSION_MEMORY:,})": (
            remember,
            lambda: memory(SESSION_MEMORY, full),
        ),
        "unflipped: remember, new each time, oldest dropped": (remember, lambda: memory(500, [])),
        "flipped: hold, every session held": (hold, lambda: memory(SESSION_MEMORY, full)),
        "flipped: hold, every session new": (hold, lambda: memory(SESSION_MEMORY, [])),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (table, made) in cases.items():
            route.sessions = made()
            route.table = table
            time_choose(proxy, route, prepared, calls // 10)  # warm up
            times[name].append(time_choose(proxy, route, prepared, calls))
    base = statistics.median(times["plain table (neither hold nor remember)"])
    print(f"this tree, one process, {rounds} alternating rounds of {calls} calls:")
    for name, seconds in times.items():
        median = statistics.median(seconds)
        print(f"  {name:58s} {median * 1e9:7.1f} ns  ({(median - base) * 1e9:+6.1f} ns)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare the plain table")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.calls)
        return 0
    if args.baseline is not None:
        side_by_side(args.baseline.resolve(), args.calls, args.rounds)
    in_process(args.calls, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
