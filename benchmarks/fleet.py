"""Fleet mode: how fast a change and a trip reach every sidecar, and what a fleet asks of Redis.

    python -m benchmarks.fleet [--sidecars 8] [--changes 200] [--followers 200] [--trips 20]
    python -m benchmarks.fleet --quick      # tiny numbers, to check that it runs

Everything is real and on this machine: Debian's redis-server (testing/redis.py, no
persistence), the fake provider, a controller (`bundle-router control`) and sidecars
(`bundle-router serve`) as processes (testing/fleet.py), with the example config's
refund-agent (v1.4 active, v1.5 a guarded canary) and the fleet block's defaults
(heartbeat 1 s, lease 3 s).

1. A weight change, from the call to the last acknowledgement. refund-agent alternates
   between 95/5 and 90/10, so every call is a change, made on the controller's admin socket
   with `router.admin.client.call` (what the CLI does once it has started). The clock starts
   just before the call and stops when Redis's `acks` hash shows every sidecar at or past the
   epoch the answer names. The hash is watched through keyspace notifications: every write
   to it wakes the benchmark, which then reads it whole (one HGETALL), so the time is the
   last ack's write plus one round trip. A few changes through the real CLI
   (`bundle-router weights ...` as a subprocess) show what a Python start adds.
2. The same with `--followers` sidecars simulated in one process
   (benchmarks/fleet_followers.py: the sidecar's own `Follower`, change core and state
   folder for each, assembled as `serve` assembles them, without the HTTP listeners).
3. A trip, from its write to the last sidecar's swap. The benchmark writes a trip as a
   sidecar's outbox does (`Scripts.trip`, the same script and arguments), for a sidecar
   that is not one of the measured ones, then waits until every sidecar acknowledges the
   trip's epoch. A sidecar acknowledges only after its core has swapped the table, and each
   must then report the canary at 0. The controller takes the trip in; the canary is given
   its weight back on the controller before the next trip. `--real-trips` more come from a
   sidecar's own guardrails (its canary's model failing every answer), timed from the
   decision (the trip record's `at`) to the moment every sidecar reports the canary at 0.
4. Redis commands per second, from `INFO commandstats` over a window: the controller
   alone, the sidecars at rest, the sidecars under `--rps` requests a second, and the
   simulated followers at rest; per sidecar, by command, and for 1,000 sidecars. Commands
   that Lua scripts run are counted as Redis counts them (an EVALSHA and the calls inside).

The processes are not pinned: on 2 cores the sidecars, the controller, Redis and the
benchmark share them. The times are this machine's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import yaml

from benchmarks.fleet_followers import instance_name
from benchmarks.harness import BODY, cpu_seconds, pct, rss_mb
from router.admin.client import call
from router.control.durable import utc_now
from router.fleet.connect import connect
from router.fleet.keys import Keys
from router.fleet.scripts import Scripts
from testing.fleet import REDIS_ENV, Fleet, Member
from testing.redis import RedisServer
from testing.servers import REPO, ProviderProcess

BIN = Path(sys.executable).parent / "bundle-router"
ROUTE = "refund-agent"
ACTIVE, CANARY = "v1.4", "v1.5"
CANARY_MODEL = "claude-opus-4-7-20260108"  # what v1.5 is pinned to
SPLITS: tuple[dict[str, float], dict[str, float]] = (
    {ACTIVE: 95, CANARY: 5},  # the example config's
    {ACTIVE: 90, CANARY: 10},
)
LABELS = [("us-east", "paid"), ("us-east", "free"), ("eu-west", "paid"), ("eu-west", "free")]
WAIT = 30.0  # the longest any one wait may take before the benchmark gives up
LEFT_OUT = {"info", "config", "subscribe", "ping"}  # the benchmark's own commands
MS = 1000


# -- watching the acknowledgements ------------------------------------------------------------


class Acks:
    """Wakes on every write to one fleet's `acks` hash (keyspace notifications) and waits
    until a check over the fleet holds. `reads` counts the HGETALLs issued here."""

    def __init__(self, server: RedisServer, fleet: str) -> None:
        self.keys = Keys(fleet)
        self.client = server.client()
        self.client.config_set("notify-keyspace-events", "Kh")
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(f"__keyspace@0__:{self.keys.acks}")
        self.reads = 0

    def drain(self) -> None:
        """Forget the writes seen so far."""
        while self.pubsub.get_message(timeout=0) is not None:
            pass

    def hgetall(self, key: str) -> dict[str, str]:
        self.reads += 1
        result: dict[str, str] = self.client.hgetall(key)  # type: ignore[assignment]
        return result

    def until(self, what: str, check: Callable[[], bool], timeout: float = WAIT) -> float:
        """perf_counter() at the first look at which `check` holds; it looks once now and
        again after every write to the hash (several writes in a row wake it once)."""
        deadline = time.monotonic() + timeout
        while True:
            if check():
                return time.perf_counter()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{what}: not within {timeout:g}s")
            if self.pubsub.get_message(timeout=min(left, 0.5)) is not None:
                self.drain()

    def acked(self, epoch: int, instances: Sequence[str]) -> float:
        """perf_counter() when every instance has acknowledged `epoch` or later."""

        def check() -> bool:
            acks = self.hgetall(self.keys.acks)
            return all(int(acks.get(name, 0)) >= epoch for name in instances)

        return self.until(f"{len(instances)} sidecars acknowledging epoch {epoch}", check)

    def canary_weights(self) -> dict[str, int]:
        """Each sidecar's weight on the canary, from its last heartbeat."""
        found = {}
        for name, raw in self.hgetall(self.keys.sidecars).items():
            route = (orjson.loads(raw).get("routes") or {}).get(ROUTE) or {}
            found[name] = int((route.get("weights") or {}).get(CANARY, 0))
        return found

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


# -- changes ----------------------------------------------------------------------------------


@dataclass
class Timed:
    answered: float  # seconds from the call to its answer: the snapshot is published
    converged: float  # seconds from the call to the last sidecar's acknowledgement


class Splits:
    """refund-agent's canary splits in turn, so that every call changes something."""

    def __init__(self) -> None:
        self.current = SPLITS[0]  # the example config starts there

    def next(self) -> dict[str, float]:
        self.current = SPLITS[1] if self.current == SPLITS[0] else SPLITS[0]
        return self.current


def set_weights(controller: Member, weights: dict[str, float], cli: bool) -> int:
    """The change on the controller; the epoch it was published at."""
    if cli:
        pairs = [f"{version}={percent:g}" for version, percent in weights.items()]
        command = [str(BIN), "weights", ROUTE, *pairs, "--socket", str(controller.socket)]
        done = subprocess.run(
            [*command, "--json", "--actor", "benchmark"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            cwd=REPO,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"bundle-router weights exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        answer = orjson.loads(done.stdout)
    else:
        body = {"route": ROUTE, "weights": weights, "reason": "benchmark"}
        answer = call(controller.socket, "POST", "/weights", body, actor="benchmark")
    fleet = answer["fleet"]
    if not fleet["published"]:
        raise RuntimeError(f"the change was not published: {fleet}")
    return int(fleet["epoch"])


def converge(
    controller: Member,
    acks: Acks,
    instances: Sequence[str],
    splits: Splits,
    n: int,
    rng: random.Random,
    cli: bool = False,
) -> list[Timed]:
    """`n` weight changes, each timed from the call to the last acknowledgement."""
    result = []
    for _ in range(n):
        time.sleep(rng.uniform(0.05, 0.25))  # no lockstep with the heartbeats
        weights = splits.next()
        acks.drain()
        started = time.perf_counter()
        epoch = set_weights(controller, weights, cli)
        answered = time.perf_counter()
        done = acks.acked(epoch, instances)
        result.append(Timed(answered - started, done - started))
    return result


# -- trips ------------------------------------------------------------------------------------


def a_trip(source: str) -> dict[str, Any]:
    """A trip as a sidecar's `Follower.recorded` puts it in its outbox."""
    return {
        "uid": uuid.uuid4().hex,
        "route": ROUTE,
        "version": CANARY,
        "trip": {"rule": "error_rate", "description": "error rate above 2% (benchmark)"},
        "reason": "guardrail error_rate (benchmark)",
        "at": utc_now(),
        "instance": source,
        "region": "bench",
        "pool": "bench",
    }


async def write_trip(url: str, fleet: str, trip: dict[str, Any]) -> tuple[float, int]:
    """Write `trip` as a sidecar's outbox does; perf_counter() just before, and its epoch."""
    client = connect(url)
    try:
        keys = Keys(fleet)
        scripts = Scripts(client, keys)
        seen = int(await client.get(keys.epoch) or 0)  # the sidecar's latest_seen
        started = time.perf_counter()
        epoch = await scripts.trip(seen, trip)
        return started, epoch
    finally:
        await client.aclose()


def taken_in(server: RedisServer, keys: Keys) -> None:
    """Wait until the controller has taken every trip in (the publish empties the list)."""
    client = server.client()
    try:
        deadline = time.monotonic() + WAIT
        while client.llen(keys.trips):
            if time.monotonic() > deadline:
                raise RuntimeError("the controller did not take the trip in")
            time.sleep(0.01)
    finally:
        client.close()


def trips(
    fleet: Fleet, server: RedisServer, acks: Acks, splits: Splits, n: int
) -> tuple[list[float], int]:
    """`n` trips written to Redis; seconds from each write to the last sidecar's swap, and
    how many sidecars still reported the canary's weight after acknowledging."""
    instances = [m.name for m in fleet.sidecars]
    result, undrained = [], 0
    for _ in range(n):
        acks.drain()
        started, epoch = asyncio.run(write_trip(server.url, fleet.name, a_trip("bench-tripper")))
        result.append(acks.acked(epoch, instances) - started)
        weights = acks.canary_weights()
        undrained += sum(1 for name in instances if weights.get(name, 0))
        taken_in(server, acks.keys)
        splits.current = SPLITS[0]  # the canary back at 5 %
        acks.acked(set_weights(fleet.controller, splits.current, cli=False), instances)
    return result, undrained


def real_trips(
    fleet: Fleet, provider: ProviderProcess, acks: Acks, splits: Splits, n: int
) -> list[float]:
    """`n` trips decided by a sidecar's own guardrails: its canary's model fails every
    answer while requests go to it. Seconds from the decision (the trip record's `at`) to
    the moment every sidecar's heartbeat shows the canary at 0."""
    instances = [m.name for m in fleet.sidecars]
    result = []
    for i in range(n):
        source = fleet.sidecars[i % len(fleet.sidecars)]  # a fresh guardrail window each time
        before = len(sidecar_trips(fleet.controller, source.name))
        half = {ACTIVE: 50.0, CANARY: 50.0}  # the canary gets its failures quickly
        acks.acked(set_weights(fleet.controller, half, cli=False), instances)
        provider.behave(model=CANARY_MODEL, error_rate=1.0)
        with traffic(source.router.url):
            acks.drain()

            def drained() -> bool:
                weights = acks.canary_weights()
                return not any(weights.get(name, 1) for name in instances)

            acks.until(f"a trip on {source.name} reaching every sidecar", drained)
            seen = time.time()
        provider.reset()
        result.append(seen - trip_decision(fleet.controller, source.name, before))
        splits.current = SPLITS[0]
        acks.acked(set_weights(fleet.controller, splits.current, cli=False), instances)
    return result


@contextmanager
def traffic(url: str) -> Iterator[None]:
    """Requests to `url` one after another, each with a new session, in a thread, for as
    long as the block runs (at most WAIT seconds)."""
    import threading

    stop = threading.Event()

    def send() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + WAIT
            while not stop.is_set() and time.monotonic() < deadline:
                client.post("/v1/messages", json=BODY, headers={"X-Session-Id": uuid.uuid4().hex})

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(15)


def sidecar_trips(controller: Member, source: str) -> list[dict[str, Any]]:
    return [
        record
        for record in controller.router.audit()
        if record.get("action") == "trip"
        and ((record.get("details") or {}).get("sidecar") or {}).get("instance") == source
    ]


def trip_decision(controller: Member, source: str, before: int) -> float:
    """The unix time of the trip decided on `source` after the `before` ones already there,
    from the controller's audit (waiting until the controller has taken it in)."""
    deadline = time.monotonic() + WAIT
    while len(found := sidecar_trips(controller, source)) <= before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the controller did not record the trip from {source}")
        time.sleep(0.05)
    at = str(found[-1]["details"]["sidecar"]["at"])
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


# -- Redis's work -----------------------------------------------------------------------------


@dataclass
class Work:
    """What Redis did over `seconds`: calls by command, and network bytes."""

    seconds: float
    calls: Counter[str]
    bytes_in: int
    bytes_out: int

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def minus(self, rest: Work) -> Work:
        """This work less what `rest`'s rate would have done over the same time."""
        share = self.seconds / rest.seconds
        calls = Counter({k: round(n - rest.calls[k] * share) for k, n in self.calls.items()})
        return Work(
            self.seconds,
            +calls,  # drops what came out at 0 or below (noise)
            round(self.bytes_in - rest.bytes_in * share),
            round(self.bytes_out - rest.bytes_out * share),
        )

    def per(self, n: float) -> dict[str, float]:
        """Calls by command, and `total`, `in`, `out` (bytes), each divided by `n`."""
        found = {k: v / n for k, v in self.calls.items()}
        found.update(total=self.total / n, bytes_in=self.bytes_in / n, bytes_out=self.bytes_out / n)
        return found


class Counters:
    """INFO commandstats and the network counters, read before and after a window."""

    def __init__(self, server: RedisServer) -> None:
        self.client = server.client()

    def read(self) -> tuple[float, Counter[str], int, int]:
        stats: dict[str, Any] = self.client.info("commandstats")
        net: dict[str, Any] = self.client.info("stats")
        calls = Counter(
            {
                name.removeprefix("cmdstat_"): int(value["calls"])
                for name, value in stats.items()
                if name.removeprefix("cmdstat_") not in LEFT_OUT
            }
        )
        in_, out = int(net["total_net_input_bytes"]), int(net["total_net_output_bytes"])
        return time.perf_counter(), calls, in_, out

    @contextmanager
    def window(self) -> Iterator[list[Work]]:
        """What Redis did while the block ran (in the list once the block has ended)."""
        found: list[Work] = []
        start, calls, in_, out = self.read()
        yield found
        end, calls_after, in_after, out_after = self.read()
        found.append(Work(end - start, calls_after - calls, in_after - in_, out_after - out))

    def idle(self, seconds: float) -> Work:
        with self.window() as found:
            time.sleep(seconds)
        return found[0]


async def paced(urls: Sequence[str], rps: float, seconds: float) -> tuple[int, int]:
    """`rps` requests a second, round robin over `urls`, for `seconds`: (sent, failed)."""
    failed = 0
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:

        async def one(url: str, i: int) -> None:
            nonlocal failed
            headers = {"X-Session-Id": f"load-{i % 100}"}
            try:
                async with session.post(f"{url}/v1/messages", json=BODY, headers=headers) as r:
                    await r.read()
                    failed += r.status != 200
            except aiohttp.ClientError:
                failed += 1

        total = int(rps * seconds)
        start = loop.time()
        tasks = []
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / rps - loop.time()))
            tasks.append(asyncio.create_task(one(urls[i % len(urls)], i)))
        await asyncio.gather(*tasks)
    return total, failed


# -- the simulated followers ------------------------------------------------------------------


@contextmanager
def followers(config: Path, count: int, folder: Path, redis_url: str) -> Iterator[int]:
    """benchmarks.fleet_followers in its own process, started; yields its pid."""
    log = folder / "followers.log"
    command = [sys.executable, "-m", "benchmarks.fleet_followers", "--config", str(config)]
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            [*command, "--count", str(count), "--folder", str(folder)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, REDIS_ENV: redis_url},
            text=True,
        )
    try:
        assert proc.stdout is not None
        if not proc.stdout.readline().startswith("ready"):
            proc.wait(10)
            text = log.read_text(errors="replace")
            raise RuntimeError(f"the followers did not start:\n{text[-3000:]}")
        yield proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sidecar_config(controller: Member, path: Path) -> Path:
    """The controller's config as a sidecar's (the followers' own folders and names are
    set per follower)."""
    config = dict(controller.router.config)
    config["fleet"] = {**config["fleet"], "instance": "simulated", "region": "sim", "pool": "sim"}
    path.write_text(yaml.safe_dump(config))
    return path


def body_size(counters: Counters, keys: Keys) -> int:
    """Bytes of the snapshot's body, which every sidecar reads on every change."""
    size: int = counters.client.hstrlen(keys.state, "body")
    return size


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Options:
    sidecars: int
    changes: int
    cli: int
    followers: int
    follower_changes: int
    trips: int
    real_trips: int
    window: float
    rps: float


@dataclass
class Results:
    changes: list[Timed] = field(default_factory=list)
    cli: list[Timed] = field(default_factory=list)
    follower_changes: list[Timed] = field(default_factory=list)
    trips: list[float] = field(default_factory=list)
    undrained: int = 0  # sidecars reporting the canary's weight after acking a trip
    real_trips: list[float] = field(default_factory=list)
    followers_cpu: float = 0.0  # CPU seconds per change of the followers' process
    followers_rss: float = 0.0  # MB
    # Redis's work
    controller: Work | None = None  # the controller alone, at rest
    controller_changes: Work | None = None  # the controller alone, making changes
    rest: Work | None = None  # controller and sidecars at rest
    changing: Work | None = None  # controller and sidecars, the timed changes
    load: Work | None = None  # controller and sidecars, traffic through the sidecars
    load_sent: int = 0
    load_failed: int = 0
    followers_alone: Work | None = None  # the followers' controller alone, at rest
    followers_rest: Work | None = None
    body: int = 0  # bytes of the snapshot's body during the timed changes
    body_after_trips: int = 0


def run(options: Options, tmp: Path) -> Results:
    r = Results()
    rng = random.Random(16)
    (tmp / "provider").mkdir()
    provider = ProviderProcess(tmp / "provider")
    server = RedisServer(tmp)
    counters = Counters(server)
    try:
        fleet = Fleet(tmp / "fleet", provider.url, server.url, [], name="bench")
        try:
            r.controller = counters.idle(options.window)
            splits = Splits()
            with counters.window() as found:
                for _ in range(options.changes // 4 or 1):
                    set_weights(fleet.controller, splits.next(), cli=False)
            r.controller_changes = found[0]
            for i in range(options.sidecars):
                fleet.add_sidecar(*LABELS[i % len(LABELS)])
            instances = [m.name for m in fleet.sidecars]
            acks = Acks(server, fleet.name)
            acks.acked(fleet.controller.epoch(), instances)
            r.rest = counters.idle(options.window)
            reads = acks.reads
            with counters.window() as found:
                r.changes = converge(
                    fleet.controller, acks, instances, splits, options.changes, rng
                )
            r.changing = found[0]
            r.changing.calls["hgetall"] -= acks.reads - reads  # the benchmark's own
            r.body = body_size(counters, acks.keys)
            r.cli = converge(fleet.controller, acks, instances, splits, options.cli, rng, cli=True)
            r.trips, r.undrained = trips(fleet, server, acks, splits, options.trips)
            r.real_trips = real_trips(fleet, provider, acks, splits, options.real_trips)
            r.body_after_trips = body_size(counters, acks.keys)
            acks.close()
            urls = [m.router.url for m in fleet.sidecars]
            with counters.window() as found:
                r.load_sent, r.load_failed = asyncio.run(paced(urls, options.rps, options.window))
            r.load = found[0]
        finally:
            fleet.stop()
        fleet = Fleet(tmp / "followers", provider.url, server.url, [], name="bench-followers")
        try:
            r.followers_alone = counters.idle(options.window)
            acks = Acks(server, fleet.name)
            names = [instance_name(i) for i in range(options.followers)]
            config = sidecar_config(fleet.controller, tmp / "sidecar.yaml")
            (tmp / "simulated").mkdir()
            with followers(config, options.followers, tmp / "simulated", server.url) as pid:
                acks.acked(fleet.controller.epoch(), names)
                r.followers_rest = counters.idle(options.window)
                cpu = cpu_seconds(pid)
                r.follower_changes = converge(
                    fleet.controller, acks, names, Splits(), options.follower_changes, rng
                )
                r.followers_cpu = (cpu_seconds(pid) - cpu) / options.follower_changes
                r.followers_rss = rss_mb(pid)
            acks.close()
        finally:
            fleet.stop()
    finally:
        server.stop()
        provider.stop()
    return r


# -- the tables -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * MS:.1f} ms"


def row(label: str, values: list[float], target: float | None = None) -> str:
    if not values:
        return f"| {label} (n=0) | | | | |"
    p99 = pct(values, 0.99)
    verdict = ""
    if target is not None:
        verdict = f"p99 <= {target * MS:g} ms: {'met' if p99 <= target else 'NOT met'}"
    return (
        f"| {label} (n={len(values)}) | {ms(pct(values, 0.5))} | {ms(p99)} | "
        f"{ms(max(values))} | {verdict} |"
    )


def report_times(options: Options, r: Results) -> None:
    n, f = options.sidecars, options.followers
    print(f"\nFleet convergence and trips (this machine: {os.cpu_count()} cores, not pinned)")
    print("| measure | p50 | p99 | max | target |")
    print("|---|---|---|---|---|")
    print(row(f"weight change -> every ack, {n} sidecars", [t.converged for t in r.changes], 0.25))
    print(row("  of which the admin call, to its answer", [t.answered for t in r.changes]))
    print(row(f"`bundle-router weights` -> every ack, {n} sidecars", [t.converged for t in r.cli]))
    print(row("  of which the command, to its exit", [t.answered for t in r.cli]))
    followed = [t.converged for t in r.follower_changes]
    print(row(f"weight change -> every ack, {f} followers in one process", followed, 0.5))
    print(row("  of which the admin call, to its answer", [t.answered for t in r.follower_changes]))
    print(row(f"trip written -> every sidecar swapped, {n} sidecars", r.trips, 1.0))
    print(row(f"guardrail decision -> every sidecar at 0, {n} sidecars", r.real_trips, 1.0))
    if r.changes and r.follower_changes:
        ratio = pct(followed, 0.5) / pct([t.converged for t in r.changes], 0.5)
        print(f"\n{f} followers against {n} sidecars, p50: {ratio:.1f}x.", end=" ")
    print(
        f"The followers' process: {r.followers_cpu * MS:.0f} ms of CPU per change "
        f"({r.followers_cpu / max(1, f) * MS * 1000:.0f} us per follower), RSS "
        f"{r.followers_rss:.0f} MB. Sidecars still showing the canary's weight after "
        f"acknowledging a trip: {r.undrained}."
    )


def report_redis(options: Options, r: Results) -> None:
    assert r.controller and r.controller_changes and r.rest and r.changing and r.load
    assert r.followers_alone and r.followers_rest
    n, f = options.sidecars, options.followers
    controller = r.controller.per(r.controller.seconds)
    sidecar = r.rest.minus(r.controller).per(r.rest.seconds * n)
    loaded = r.load.minus(r.controller).per(r.load.seconds * n)
    follower = r.followers_rest.minus(r.followers_alone).per(r.followers_rest.seconds * f)
    controller_changes = max(1, options.changes // 4)
    per_change_controller = r.controller_changes.minus(r.controller).per(controller_changes)
    per_change_all = r.changing.minus(r.rest).per(len(r.changes))
    per_change_sidecar = {
        k: (per_change_all.get(k, 0) - per_change_controller.get(k, 0)) / n
        for k in set(per_change_all) | set(per_change_controller)
    }
    rps = r.load_sent / r.load.seconds
    print(
        f"\nRedis commands per second, from INFO commandstats over {options.window:g} s "
        "(calls made by Lua scripts counted as Redis counts them; the controller's rate "
        "subtracted from the sidecars')"
    )
    print(
        f"| command | controller alone | per sidecar at rest ({n}) | per sidecar at "
        f"{rps / n:.0f} rps ({rps:.0f} rps through {n}) | per follower at rest ({f} in one "
        "process) | per weight change: controller | per weight change: per sidecar |"
    )
    print("|---|---|---|---|---|---|---|")
    columns = (controller, sidecar, loaded, follower, per_change_controller, per_change_sidecar)
    names = sorted({k for c in columns for k in c} - {"total", "bytes_in", "bytes_out"})
    for name in [*names, "total", "bytes_in", "bytes_out"]:
        label = {"total": "**all commands**", "bytes_in": "bytes in", "bytes_out": "bytes out"}
        cells = " | ".join(f"{c.get(name, 0):,.2f}" for c in columns)
        print(f"| {label.get(name, name)} | {cells} |")
    print(
        f"\nTraffic: {r.load_sent} requests in {r.load.seconds:.1f} s, {r.load_failed} failed. "
        f"The snapshot's body: {r.body:,} bytes during the timed changes, {r.body_after_trips:,} "
        f"after {len(r.trips) + len(r.real_trips)} trips (it lists the trips taken in)."
    )
    thousand = 1000
    print(f"\n{thousand:,} sidecars (the controller + {thousand:,} x per sidecar)")
    print("| measure | 1,000 sidecars |")
    print("|---|---|")
    at_rest = controller["total"] + thousand * sidecar["total"]
    busy = controller["total"] + thousand * loaded["total"]
    print(f"| commands/s at rest | {at_rest:,.0f} |")
    print(f"| commands/s, each sidecar at {rps / n:.0f} rps | {busy:,.0f} |")
    out = controller["bytes_out"] + thousand * sidecar["bytes_out"]
    print(f"| bytes out/s at rest | {out / 1024:,.0f} KiB |")
    change = per_change_controller["total"] + thousand * per_change_sidecar["total"]
    print(f"| commands per weight change | {change:,.0f} |")
    change_out = per_change_controller["bytes_out"] + thousand * per_change_sidecar["bytes_out"]
    print(f"| bytes out per weight change | {change_out / 2**20:,.1f} MiB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sidecars", type=int, default=8)
    parser.add_argument("--changes", type=int, default=200, help="timed changes, sidecars")
    parser.add_argument("--cli", type=int, default=10, help="timed changes, through the CLI")
    parser.add_argument("--followers", type=int, default=200)
    parser.add_argument("--follower-changes", type=int, default=100)
    parser.add_argument("--trips", type=int, default=20, help="trips written to Redis")
    parser.add_argument("--real-trips", type=int, default=3, help="trips from guardrails")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per Redis window")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true", help="tiny numbers: does it run?")
    args = parser.parse_args()
    if args.quick:
        options = Options(2, 5, 1, 5, 5, 2, 1, 1.0, 20.0)
    else:
        options = Options(
            args.sidecars,
            args.changes,
            args.cli,
            args.followers,
            args.follower_changes,
            args.trips,
            args.real_trips,
            args.window,
            args.rps,
        )
    with tempfile.TemporaryDirectory() as tmp:
        results = run(options, Path(tmp))
    report_times(options, results)
    report_redis(options, results)


if __name__ == "__main__":
    main()
