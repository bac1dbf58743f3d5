"""Fleet mode under failures (issue 16), on a real redis-server with real processes: Redis
killed mid-traffic and started again, with its data and empty; one sidecar partitioned from
Redis; the leading controller paused (SIGSTOP), including with a write of its own delayed in
the network; the controller stopped or killed and started again; Redis back empty with the
leader gone; a sidecar restarted while Redis is down.

What must hold throughout: no client request fails, no sidecar's epoch goes down, and the
fleet converges again. The times these take are printed (`pytest -s` shows them); only the
issue's own bounds, with slack for two loaded cores, decide a pass."""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from testing.fleet import Fleet, Member, wait_for
from testing.redis import RedisServer, require_redis
from testing.servers import ProviderProcess
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.faults import Partition

ROUTE = "refund-agent"
ACTIVE_ONLY = {"v1.4": 100, "v1.5": 0}  # no canary traffic: a guardrail cannot trip meanwhile
CANARY_ONLY = {"v1.4": 0, "v1.5": 100}
SUPPORT = "support-agent"  # the other route: no traffic goes to it
SUPPORT_ACTIVE_ONLY = {"v2.0": 100, "v2.1": 0}
THREE = [("us-east", "paid"), ("us-east", "free"), ("eu-west", "paid")]
CONVERGED_WITHIN = 10.0  # the design notes ask for 5 s after Redis returns; slack for 2 cores
CATCH_UP_WITHIN = 5.0  # the issue asks for 2 s after healing; slack for 2 cores
TAKEOVER_SLACK = 4.0  # on top of the lease
REACHED_WITHIN = 10.0  # a change reaching every sidecar (well under a second on a quiet box)


# -- processes (redis_server and provider are in conftest.py) ------------------------------


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that keeps every acknowledged write across a kill -9 (append-only file,
    fsync always); start(wipe=True) brings it back empty instead."""
    require_redis()
    server = RedisServer(tmp_path, persist=True, name="redis-aof")
    try:
        yield server
    finally:
        server.stop()


# -- watching the fleet while something breaks -----------------------------------------------


class Traffic:
    """Requests to every sidecar, one thread each, from start until stop (at most
    MAX_REQUESTS each). Every failure is kept: an exception or a status other than 200."""

    MAX_REQUESTS = 5000
    PAUSE = 0.01  # between requests: steady traffic that leaves the two cores some room

    def __init__(self, sidecars: list[Member]) -> None:
        self.sidecars = sidecars
        self.done = threading.Event()
        self.answered = dict.fromkeys((s.name for s in sidecars), 0)
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._send, args=(s,)) for s in sidecars]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(30)

    def _send(self, sidecar: Member) -> None:
        body = {"model": ROUTE, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.Client(base_url=sidecar.router.url, timeout=10) as client:
            for _ in range(self.MAX_REQUESTS):
                if self.done.is_set():
                    return
                try:
                    answer = client.post(
                        "/v1/messages", json=body, headers={"X-Session-Id": uuid.uuid4().hex}
                    )
                except httpx.HTTPError as exc:
                    self.failures.append(f"{sidecar.name}: {type(exc).__name__}: {exc}")
                else:
                    if answer.status_code == 200:
                        self.answered[sidecar.name] += 1
                    else:
                        self.failures.append(
                            f"{sidecar.name}: HTTP {answer.status_code} {answer.text[:200]}"
                        )
                time.sleep(self.PAUSE)


class Epochs:
    """Every sidecar's applied epoch (its status), read every INTERVAL from start until stop
    (at most MAX_READS rounds)."""

    INTERVAL = 0.05
    MAX_READS = 4000

    def __init__(self, sidecars: list[Member]) -> None:
        self.sidecars = sidecars
        self.done = threading.Event()
        self.seen: dict[str, list[int]] = {s.name: [] for s in sidecars}
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self._read)

    def __enter__(self) -> Epochs:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(30)

    def _read(self) -> None:
        for _ in range(self.MAX_READS):
            for sidecar in self.sidecars:
                try:
                    self.seen[sidecar.name].append(sidecar.epoch())
                except Exception as exc:  # the admin socket must answer even without Redis
                    self.failures.append(f"{sidecar.name}: {type(exc).__name__}: {exc}")
            if self.done.wait(self.INTERVAL):
                return

    def highest(self) -> int:
        return max(max(seen, default=0) for seen in self.seen.values())

    def decreases(self) -> list[str]:
        """Every time a sidecar's epoch went down, as 'NAME: BEFORE -> AFTER'."""
        return [
            f"{name}: {before} -> {after}"
            for name, seen in self.seen.items()
            for before, after in itertools.pairwise(seen)
            if after < before
        ]


# -- reading the fleet -----------------------------------------------------------------------


def leader_of(fleet: Fleet) -> Member:
    leading = [c for c in fleet.controllers if c.status()["fleet"]["leading"]]
    assert len(leading) == 1, f"one controller leads, not {[c.name for c in leading]}"
    return leading[0]


def converged(fleet: Fleet, controller: Member, redis: RedisServer) -> int | None:
    """The epoch the whole fleet is at, or None: the controller leads and has published it,
    Redis holds it, and every sidecar has applied it."""
    seen = controller.status()["fleet"]
    if not seen["leading"] or not seen["connected"] or seen["state_missing_in_redis"]:
        return None
    in_redis = redis_state(redis, fleet).get("epoch")
    if in_redis is None or int(in_redis) != seen["epoch"]:
        return None
    if any(s.epoch() != seen["epoch"] for s in fleet.sidecars):
        return None
    return int(seen["epoch"])


def redis_state(redis: RedisServer, fleet: Fleet) -> dict[str, str]:
    """The fleet's state hash in Redis (epoch, body, fence); empty while it has none."""
    with redis.client() as client:
        return cast(dict[str, str], client.hgetall(f"br:{{{fleet.name}}}:state"))


def wait_converged(
    fleet: Fleet, controller: Member, redis: RedisServer, above: int = 0
) -> tuple[int, float]:
    """The epoch (above `above`) the whole fleet converged at, and the seconds it took."""
    seen: list[int] = []

    def check() -> bool:
        epoch = converged(fleet, controller, redis)
        if epoch is not None and epoch > above:
            seen.append(epoch)
        return bool(seen)

    took = wait_for(
        f"every sidecar at the epoch the leader published, above {above}",
        check,
        CONVERGED_WITHIN,
    )
    return seen[0], took


def set_weights(controller: Member, weights: Mapping[str, int]) -> int:
    """A weights change on the controller, published; its epoch."""
    answer = controller.admin("POST", "/weights", {"route": ROUTE, "weights": dict(weights)})
    assert answer["fleet"]["published"], answer
    return int(answer["fleet"]["epoch"])


def wait_reached(sidecars: list[Member], epoch: int) -> float:
    return wait_for(
        f"every sidecar at epoch {epoch} or later",
        lambda: all(s.epoch() >= epoch for s in sidecars),
        REACHED_WITHIN,
    )


def weights_of(member: Member, route: str = ROUTE) -> dict[str, int]:
    """The route's weights in percent, as the member's status shows them."""
    versions = member.status()["routes"][route]["versions"]
    return {v["version"]: round(v["weight_percent"]) for v in versions}


def admin_answer(
    member: Member, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]]:
    """The admin socket's HTTP status and JSON answer, refusals included (the CLI's call
    turns a refusal into an exception without its code)."""
    connection = http.client.HTTPConnection("localhost", timeout=30)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(str(member.socket))
    connection.sock = sock
    try:
        payload = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def log_of(member: Member) -> str:
    """Everything the member's process logged, over every start."""
    return "".join(
        log.read_text(errors="replace") for log in sorted(member.router.tmp.glob("*.log"))
    )


def fleet_metric(member: Member, name: str) -> float:
    return value(scrape(member.router), name)


def report(what: str, seconds: float) -> None:
    print(f"\n[fleet failures] {what}: {seconds:.2f} s")


# -- 1. Redis killed mid-traffic -----------------------------------------------------------


@pytest.mark.parametrize("comes_back", ["with its data", "empty"])
def test_redis_killed_mid_traffic_fails_no_request_and_the_fleet_converges_again(
    tmp_path: Path, provider: ProviderProcess, persistent_redis: RedisServer, comes_back: str
) -> None:
    redis = persistent_redis
    fleet = Fleet(tmp_path, provider.url, redis.url, THREE)
    try:
        controller = fleet.controller
        set_weights(controller, ACTIVE_ONLY)
        epoch_before, _ = wait_converged(fleet, controller, redis)
        with Epochs(fleet.sidecars) as epochs, Traffic(fleet.sidecars) as traffic:
            time.sleep(1.0)
            redis.kill()
            killed, answered_at_kill = time.monotonic(), dict(traffic.answered)
            # A change on the controller while Redis is down: taken (the controller still
            # leads for 2 s at least: it renews its 3 s lease every second), not published yet.
            # On support-agent, which gets no traffic here: no guardrail can trip meanwhile.
            answer = controller.admin(
                "POST", "/weights", {"route": SUPPORT, "weights": SUPPORT_ACTIVE_ONLY}
            )
            assert answer["fleet"]["published"] is False, answer
            time.sleep(max(0.0, 2.0 - (time.monotonic() - killed)))
            served_without_redis = {
                name: traffic.answered[name] - answered_at_kill[name] for name in traffic.answered
            }
            for sidecar in fleet.sidecars:  # ready on its last-known-good, and says so
                assert sidecar.status()["fleet"]["connected"] is False
                assert httpx.get(f"{sidecar.router.metrics_url}/readyz").status_code == 200
                assert fleet_metric(sidecar, "router_fleet_connected") == 0.0
            highest_before = epochs.highest()
            redis.start(wipe=comes_back == "empty")
            # Converged above every epoch a sidecar had: with the change made meanwhile, and
            # (Redis back empty) re-seeded above the sidecars' epochs, not from 1 again.
            _, took = wait_converged(fleet, controller, redis, above=highest_before)
            report(f"Redis back {comes_back}: the fleet converged again after", took)
            traffic.stop()
            # A change made after the restart reaches every sidecar.
            changed = set_weights(controller, CANARY_ONLY)
            report(
                f"Redis back {comes_back}: a weights change reached every sidecar after",
                wait_reached(fleet.sidecars, changed),
            )
        assert traffic.failures == [], traffic.failures[:10]
        assert all(n > 0 for n in served_without_redis.values()), served_without_redis
        assert epochs.failures == [], epochs.failures[:10]
        assert epochs.decreases() == []
        assert highest_before == epoch_before
        for sidecar in fleet.sidecars:
            assert weights_of(sidecar, SUPPORT) == SUPPORT_ACTIVE_ONLY, sidecar.name
            assert sidecar.served(ROUTE, 10) == {"v1.5"}, sidecar.name
    finally:
        fleet.stop()


# -- 2. one sidecar partitioned from Redis ---------------------------------------------------


@pytest.mark.parametrize("cut", ["hold", "blackhole"])
def test_a_partitioned_sidecar_serves_its_last_known_good_then_catches_up(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer, cut: Any
) -> None:
    partition = Partition(redis_server.port)
    fleet = Fleet(
        tmp_path,
        provider.url,
        redis_server.url,
        THREE,
        redis_urls={"sidecar-2": redis_server.url_via(partition.port)},
    )
    try:
        controller, apart, direct = fleet.controller, fleet.sidecars[2], fleet.sidecars[:2]
        wait_reached(fleet.sidecars, set_weights(controller, ACTIVE_ONLY))
        partition.cut(cut)
        wait_for(
            "the sidecar notices the partition", lambda: not apart.status()["fleet"]["connected"]
        )
        changed = set_weights(controller, CANARY_ONLY)
        wait_reached(direct, changed)
        for sidecar in direct:
            assert sidecar.served(ROUTE, 10) == {"v1.5"}, sidecar.name
        # The partitioned one serves its last-known-good and refuses nothing (served() fails
        # on any status but 200).
        assert apart.served(ROUTE, 20) == {"v1.4"}
        assert apart.epoch() < changed
        assert fleet_metric(apart, "router_fleet_connected") == 0.0
        assert fleet_metric(apart, "router_fleet_lag_seconds") > 0.0
        partition.heal()
        healed = time.monotonic()
        wait_for(
            f"the partitioned sidecar at epoch {changed}",
            lambda: apart.epoch() >= changed,
            CATCH_UP_WITHIN,
        )
        report(f"partition ({cut}) healed: the sidecar caught up after", time.monotonic() - healed)
        assert apart.served(ROUTE, 20) == {"v1.5"}
        wait_for("the sidecar reconnected", lambda: apart.status()["fleet"]["connected"])
        assert fleet_metric(apart, "router_fleet_connected") == 1.0
    finally:
        fleet.stop()
        partition.stop()


# -- 3. two controllers: the leader paused -----------------------------------------------------


def test_a_paused_leader_is_replaced_within_the_lease_and_changes_nothing_after(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer
) -> None:
    fleet = Fleet(
        tmp_path, provider.url, redis_server.url, THREE[:2], controllers=2, fleet={"lease": "1s"}
    )
    paused: list[Member] = []
    try:
        old = leader_of(fleet)
        new = next(c for c in fleet.controllers if c is not old)
        wait_converged(fleet, old, redis_server)
        old_token = old.status()["fleet"]["fencing_token"]
        old.router.process.proc.send_signal(signal.SIGSTOP)
        paused.append(old)
        took = wait_for(
            "the standby controller leads",
            lambda: new.status()["fleet"]["leading"],
            1.0 + TAKEOVER_SLACK,
        )
        report("leader paused (lease 1 s): the standby took over after", took)
        new_id, new_token = new.status()["fleet"]["id"], new.status()["fleet"]["fencing_token"]
        assert new_token > old_token
        changed = set_weights(new, CANARY_ONLY)
        wait_reached(fleet.sidecars, changed)
        old.router.process.proc.send_signal(signal.SIGCONT)
        # Awake again, the old leader finds the lease gone, says so, and names the new one.
        wait_for(
            f"the old leader knows {new_id} leads",
            lambda: old.status()["fleet"]["leader"] == new_id,
        )
        assert old.status()["fleet"]["leading"] is False
        assert f"is no longer the leader (fencing token {old_token})" in log_of(old)
        status, answer = admin_answer(
            old, "POST", "/weights", {"route": ROUTE, "weights": ACTIVE_ONLY}
        )
        assert (status, answer["error"]["code"]) == (409, "not_leader"), answer
        assert new_id in answer["error"]["message"]
        state = redis_state(redis_server, fleet)
        assert int(state["fence"]) == new_token
        for sidecar in fleet.sidecars:
            assert sidecar.epoch() >= changed
            assert sidecar.served(ROUTE, 10) == {"v1.5"}, sidecar.name
        # Standing by now, it takes the new leader's changes into its own log.
        wait_for("the old leader has the fleet's state", lambda: weights_of(old) == CANARY_ONLY)
    finally:
        for member in paused:
            member.router.process.proc.send_signal(signal.SIGCONT)
        fleet.stop()


def test_a_paused_leaders_late_write_is_refused_by_redis(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer
) -> None:
    """A write the leader sent just before it was paused arrives after the takeover: Redis
    refuses it for its stale fencing token, the old leader logs the refusal, and the fleet
    keeps the new leader's state.

    control-0 (the first to start, so the leader) reaches Redis through a Partition. It first
    opens a few connections, as a busy controller has, so that its next write goes out on one
    already open. With its link blackholed it takes a change and sends the snapshot, which
    stalls in the network; it is paused, its lease runs out and control-1 takes over. The link
    heals: the snapshot reaches Redis only now. Then the old leader wakes up."""
    partition = Partition(redis_server.port)
    fleet = Fleet(
        tmp_path,
        provider.url,
        redis_server.url,
        THREE[:2],
        controllers=2,
        fleet={
            "lease": "3s"
        },  # long enough that the old leader still leads when it takes the change
        redis_urls={"control-0": redis_server.url_via(partition.port)},
    )
    old, new = fleet.controllers
    process = old.router.process.proc
    answers: list[Any] = []
    change = threading.Thread(
        target=lambda: answers.append(
            old.admin("POST", "/weights", {"route": ROUTE, "weights": CANARY_ONLY})
        )
    )
    try:
        assert leader_of(fleet) is old
        wait_converged(fleet, old, redis_server)
        fleet_weights = {s.name: weights_of(s) for s in fleet.sidecars}
        old_token = old.status()["fleet"]["fencing_token"]
        open_connections(old, partition, at_least=6)
        partition.cut("blackhole")
        change.start()
        wait_for(
            "the old leader took the change",
            lambda: any(r["action"] == "weights" for r in old.router.audit()),
        )
        time.sleep(0.2)  # its snapshot is on the wire (within the 2 s socket timeout)
        process.send_signal(signal.SIGSTOP)
        took = wait_for(
            "control-1 leads", lambda: new.status()["fleet"]["leading"], 3.0 + TAKEOVER_SLACK
        )
        report("leader paused (lease 3 s): the standby took over after", took)
        new_token = new.status()["fleet"]["fencing_token"]
        partition.heal()
        # The stalled snapshot reaches Redis while its sender is still paused: refused.
        wait_for("Redis refuses the late write", lambda: stale_refusals(redis_server) >= 1, 5.0)
        process.send_signal(signal.SIGCONT)
        change.join(30)
        assert answers and answers[0]["fleet"]["published"] is False, answers
        # Awake, the old leader learns it lost the lease (from its lease check, or from the
        # refusal if its write's answer is read before the write's timeout fires) and says so.
        wait_for(
            "the old leader logs that it no longer leads",
            lambda: f"is no longer the leader (fencing token {old_token})" in log_of(old),
        )
        print_fleet_log(old, since="the partition")
        # The fleet's state is the new leader's; the old leader's change reached nobody.
        state = redis_state(redis_server, fleet)
        assert int(state["fence"]) == new_token
        wait_converged(fleet, new, redis_server)
        for sidecar in fleet.sidecars:
            assert weights_of(sidecar) == fleet_weights[sidecar.name]
            assert "v1.4" in sidecar.served(ROUTE, 20), sidecar.name
        status, answer = admin_answer(
            old, "POST", "/weights", {"route": ROUTE, "weights": CANARY_ONLY}
        )
        assert (status, answer["error"]["code"]) == (409, "not_leader"), answer
        # The change it took but could not publish leaves its log: it adopts the fleet's state.
        wait_for(
            "the old leader has the fleet's state again",
            lambda: weights_of(old) == fleet_weights["sidecar-0"],
        )
    finally:
        process.send_signal(signal.SIGCONT)
        change.join(30)
        fleet.stop()
        partition.stop()


def open_connections(controller: Member, partition: Partition, at_least: int) -> None:
    """Make `controller` open `at_least` connections through `partition`: concurrent reads of
    the fleet (GET /fleet) each take a connection of its pool, which keeps them open."""
    done = threading.Event()

    def read() -> None:
        for _ in range(200):
            if done.is_set():
                return
            controller.admin("GET", "/fleet")

    readers = [threading.Thread(target=read) for _ in range(2 * at_least)]
    for reader in readers:
        reader.start()
    try:
        wait_for(f"{at_least} connections open", lambda: partition.open >= at_least)
    finally:
        done.set()
        for reader in readers:
            reader.join(30)


def print_fleet_log(member: Member, since: str) -> None:
    """The member's fleet log lines (warnings and errors), for the report."""
    lines = [
        line
        for line in log_of(member).splitlines()
        if "router.fleet" in line and "INFO" not in line
    ]
    print(
        f"\n[fleet failures] {member.name}'s fleet warnings since {since}:", *lines[-4:], sep="\n  "
    )


def stale_refusals(redis: RedisServer) -> int:
    """How many writes Redis has refused for a stale fencing token (its error statistics
    count error replies by their first word)."""
    with redis.client() as client:
        errors = cast(dict[str, Any], client.info("errorstats"))
    return int(errors.get("errorstat_STALE", {}).get("count", 0))


# -- 4. the controller restarted -------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_restarted_controller_takes_the_fleet_on_where_it_was(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer, how: str
) -> None:
    fleet = Fleet(tmp_path, provider.url, redis_server.url, THREE)
    controller = fleet.controller
    try:
        wait_reached(fleet.sidecars, set_weights(controller, ACTIVE_ONLY))
        epoch_before, _ = wait_converged(fleet, controller, redis_server)
        with Epochs(fleet.sidecars) as epochs, Traffic(fleet.sidecars) as traffic:
            time.sleep(0.5)
            controller.router.stop() if how == "stop" else controller.router.kill()
            answered_at_stop = dict(traffic.answered)
            time.sleep(2.0)
            served_without_controller = {
                name: traffic.answered[name] - answered_at_stop[name] for name in traffic.answered
            }
            started = time.monotonic()
            controller.router.start()
            # It takes the lead again and publishes its state at a new epoch.
            wait_converged(fleet, controller, redis_server, above=epoch_before)
            report(
                f"controller {how}: the fleet converged after",
                time.monotonic() - started,
            )
            traffic.stop()
            changed = set_weights(controller, CANARY_ONLY)
            wait_reached(fleet.sidecars, changed)
        assert traffic.failures == [], traffic.failures[:10]
        assert all(n > 0 for n in served_without_controller.values()), served_without_controller
        assert epochs.failures == [], epochs.failures[:10]
        assert epochs.decreases() == []
        for sidecar in fleet.sidecars:
            assert sidecar.served(ROUTE, 10) == {"v1.5"}, sidecar.name
    finally:
        fleet.stop()


# -- 5. Redis back empty with the leader gone --------------------------------------------------


def test_redis_back_empty_with_the_leader_gone_is_reseeded_with_the_fleets_state(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer
) -> None:
    """The standby that takes over an empty Redis re-seeds it with the state the fleet had,
    not the state it started with: a standby keeps its own log up to date with every
    snapshot the leader publishes."""
    fleet = Fleet(
        tmp_path, provider.url, redis_server.url, THREE[:2], controllers=2, fleet={"lease": "1s"}
    )
    try:
        old = leader_of(fleet)
        standby = next(c for c in fleet.controllers if c is not old)
        changed = set_weights(old, ACTIVE_ONLY)
        wait_reached(fleet.sidecars, changed)
        wait_for("the standby has the fleet's epoch", lambda: standby.epoch() >= changed)
        assert weights_of(standby) == ACTIVE_ONLY
        redis_server.kill()
        old.router.stop()
        redis_server.start()  # in memory: it comes back empty
        _, took = wait_converged(fleet, standby, redis_server, above=changed)
        report("Redis back empty, leader gone: the standby re-seeded the fleet after", took)
        for sidecar in fleet.sidecars:
            assert weights_of(sidecar) == ACTIVE_ONLY, sidecar.name
            assert sidecar.served(ROUTE, 20) == {"v1.4"}, sidecar.name
    finally:
        fleet.stop()


# -- 6. a sidecar restarted while Redis is down ------------------------------------------------


def test_a_sidecar_restarted_while_redis_is_down_serves_its_last_known_good(
    tmp_path: Path, provider: ProviderProcess, redis_server: RedisServer
) -> None:
    fleet = Fleet(tmp_path, provider.url, redis_server.url, THREE[:2])
    try:
        changed = set_weights(fleet.controller, ACTIVE_ONLY)
        wait_reached(fleet.sidecars, changed)
        redis_server.kill()
        sidecar = fleet.sidecars[0]
        sidecar.router.stop()
        sidecar.router.start()  # ready without Redis: it has a last-known-good
        assert sidecar.epoch() == changed
        assert weights_of(sidecar) == ACTIVE_ONLY
        assert sidecar.served(ROUTE, 20) == {"v1.4"}
        redis_server.start()
        wait_converged(fleet, fleet.controller, redis_server, above=changed)
        assert weights_of(sidecar) == ACTIVE_ONLY
    finally:
        fleet.stop()
