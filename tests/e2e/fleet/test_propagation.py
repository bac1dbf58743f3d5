"""Fleet mode end to end (issue 16), on a real Redis with real processes: a change made once
on the controller (weights, deploy, promote, rollback) reaches every sidecar; a trip in one
sidecar drains the canary on every sidecar while the controller is down; a snapshot that
names a bundle the sidecars cannot fetch is refused by them and shown by the controller; a
sidecar's own admin socket refuses changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testing.bundles import new_version, own_bundles, with_bundles
from testing.fleet import Fleet, Member, wait_for
from testing.redis import RedisServer
from testing.servers import REPO, ProviderProcess, router_config
from tests.e2e.admin.test_metrics import scrape, value

ROUTE = "refund-agent"
CANARY_MODEL = "claude-opus-4-7-20260108"  # v1.5's (and the v1.6 copy's) model
# 2 regions x 2 pools, 2 sidecars in each.
EIGHT = [(region, pool) for region in ("us-east", "eu-west") for pool in ("paid", "free")] * 2
APPLIED_WITHIN = 10.0  # the issue asks for well under a second; slack for 2 loaded cores
TRIP_REACHES_ALL_WITHIN = 5.0  # the target is 1 s


# -- helpers shared with test_fleet_secrets ------------------------------------------------


def cli(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m router ARGS --config CONFIG`, as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def publish(fleet: Fleet, version: str) -> subprocess.CompletedProcess[str]:
    """`bundle-router publish refund-agent VERSION` from the controller's config."""
    return cli(fleet.controller.router.config_path, "publish", ROUTE, version, env=fleet.env)


def change(controller: Member, path: str, body: dict[str, Any]) -> int:
    """A change on the controller; the epoch its answer names (once published)."""
    answer = controller.admin("POST", path, {"route": ROUTE, **body})
    assert answer["fleet"]["published"], answer
    return int(answer["fleet"]["epoch"])


def stack(status: dict[str, Any]) -> dict[str, Any]:
    """The route's deploy stack as a status shows it, weights in percent (non-zero only)."""
    route = status["routes"][ROUTE]
    return {
        "active": route["active"],
        "candidate": route["candidate"],
        "candidate_state": route["candidate_state"],
        "weights": {
            v["version"]: v["weight_percent"] for v in route["versions"] if v["weight_percent"]
        },
    }


def versions_answering(member: Member, n: int) -> list[str]:
    """The X-Bundle-Version of `n` requests, each from a new session, whatever their status
    (a failing canary answers 5xx, still with its version)."""
    seen = []
    with httpx.Client(base_url=member.router.url, timeout=10) as client:
        for _ in range(n):
            answer = client.post(
                "/v1/messages",
                json={
                    "model": ROUTE,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"X-Session-Id": uuid.uuid4().hex},
            )
            seen.append(answer.headers.get("X-Bundle-Version", f"none (HTTP {answer.status_code})"))
    return seen


def trip_on(sidecar: Member, limit: int = 600) -> int:
    """Send traffic to `sidecar` alone until its guardrail drains the canary (the canary's
    model must be failing); the number of requests it took. Bounded: `limit` requests."""
    sent = 0
    while sent < limit:
        versions_answering(sidecar, 20)
        sent += 20
        if stack(sidecar.status())["candidate_state"] == "rolled_back":
            return sent
    raise AssertionError(f"{sidecar.name} did not trip after {limit} requests")


def reached_every_sidecar(fleet: Fleet, epoch: int, serves: set[str] | None) -> dict[str, Any]:
    """Every sidecar applied `epoch` (or later) and shows the controller's deploy stack,
    then serves exactly the versions `serves` (when the weights make that certain). The
    stack, for the caller's own checks."""
    want = stack(fleet.controller.status())
    for sidecar in fleet.sidecars:

        def applied(sidecar: Member = sidecar) -> bool:
            status = sidecar.status()
            return status["fleet"]["epoch"] >= epoch and stack(status) == want

        wait_for(f"{sidecar.name} applies epoch {epoch} ({want})", applied, APPLIED_WITHIN)
    for sidecar in fleet.sidecars if serves is not None else ():
        assert sidecar.served(ROUTE, 10) == serves, (sidecar.name, want)
    return want


def with_v16(tmp: Path, provider: ProviderProcess) -> dict[str, Any]:
    """Routes whose refund-agent folder (a copy) also has v1.6: a copy of v1.5 with another
    prompt. For the controller only: sidecars keep the example folder and must fetch v1.6."""
    folder = own_bundles(tmp)
    new_version(folder, ROUTE, "v1.5", "v1.6")
    prompt = folder / ROUTE / "v1.6" / "prompt.txt"
    prompt.write_text(prompt.read_text() + "\nv1.6: quote the order id back to the customer.\n")
    routes: dict[str, Any] = with_bundles(router_config(provider.url), folder)["routes"]
    return routes


def fetched(sidecar: Member, version: str) -> list[Path]:
    """The folders of `version` in the sidecar's bundle cache (state_dir/bundles)."""
    home = sidecar.router.state_dir / "bundles" / ROUTE
    return sorted(home.glob(f"{version}@*")) if home.is_dir() else []


# -- the tests ----------------------------------------------------------------------------


def test_every_change_reaches_all_eight_sidecars(
    tmp_path: Path, provider: ProviderProcess, start_fleet: Callable[..., Fleet]
) -> None:
    fleet = start_fleet(EIGHT, controller_config={"routes": with_v16(tmp_path, provider)})
    controller = fleet.controller
    start = reached_every_sidecar(fleet, controller.epoch(), None)
    assert start["weights"] == {"v1.4": 95.0, "v1.5": 5.0}

    # weights: everything on the canary
    epoch = change(controller, "/weights", {"weights": {"v1.4": 0, "v1.5": 100}})
    assert reached_every_sidecar(fleet, epoch, {"v1.5"})["weights"] == {"v1.5": 100.0}

    # rollback: the canary drained
    epoch = change(controller, "/rollback", {})
    after = reached_every_sidecar(fleet, epoch, {"v1.4"})
    assert after["candidate_state"] == "rolled_back" and after["weights"] == {"v1.4": 100.0}

    # deploy: refused until v1.6 is published, then fetched by every sidecar
    assert not any(fetched(s, "v1.6") for s in fleet.sidecars)
    code, refused = controller.answer("POST", "/deploy", {"route": ROUTE, "version": "v1.6"})
    assert code == 409 and refused["error"]["code"] == "not_published", refused
    assert f"bundle-router publish {ROUTE} v1.6" in refused["error"]["message"]
    published = publish(fleet, "v1.6")
    assert published.returncode == 0, published.stderr
    assert f"{ROUTE} v1.6 published" in published.stdout
    epoch = change(controller, "/deploy", {"version": "v1.6"})
    after = reached_every_sidecar(fleet, epoch, {"v1.4"})
    assert after["candidate"] == "v1.6" and after["candidate_state"] == "live"
    digest = next(
        v["digest"]
        for v in controller.status()["routes"][ROUTE]["versions"]
        if v["version"] == "v1.6"
    )
    for sidecar in fleet.sidecars:
        assert [p.name for p in fetched(sidecar, "v1.6")] == [f"v1.6@{digest}"], sidecar.name
        assert not (Path(sidecar.router.config["routes"][ROUTE]["bundles"]) / "v1.6").exists()

    # promote: the fetched version serves everything
    epoch = change(controller, "/promote", {})
    after = reached_every_sidecar(fleet, epoch, {"v1.6"})
    assert after["active"] == "v1.6" and after["candidate"] is None

    # rollback: the active version rolled back, v1.4 (warm) active again
    epoch = change(controller, "/rollback", {})
    after = reached_every_sidecar(fleet, epoch, {"v1.4"})
    assert after["active"] == "v1.4" and after["weights"] == {"v1.4": 100.0}


def test_a_trip_on_one_sidecar_drains_the_canary_on_all_with_the_controller_down(
    provider: ProviderProcess, start_fleet: Callable[..., Fleet]
) -> None:
    fleet = start_fleet(EIGHT[:4])
    controller, tripping, others = fleet.controller, fleet.sidecars[0], fleet.sidecars[1:]
    # Half the traffic on the canary, so that one sidecar's evidence trips it quickly.
    epoch = change(controller, "/weights", {"weights": {"v1.4": 50, "v1.5": 50}})
    reached_every_sidecar(fleet, epoch, None)
    controller.router.stop()
    provider.behave(model=CANARY_MODEL, error_rate=1.0)

    trip_on(tripping)
    tripped_at = time.monotonic()
    tripped = stack(tripping.status())
    assert tripped["weights"] == {"v1.4": 100.0}, tripped
    for sidecar in others:

        def drained(sidecar: Member = sidecar) -> bool:
            return stack(sidecar.status()) == tripped

        wait_for(
            f"{sidecar.name} drains the canary",
            drained,
            max(0.0, TRIP_REACHES_ALL_WITHIN - (time.monotonic() - tripped_at)),
        )
    for sidecar in others:
        assert set(versions_answering(sidecar, 20)) == {"v1.4"}, sidecar.name
        status = sidecar.status()
        trip = status["routes"][ROUTE]["trip"]
        assert trip is not None and status["fleet"]["connected"], status
    trip_epoch = max(s.epoch() for s in fleet.sidecars)

    # The controller comes back: it takes the trip in (audited, with the sidecar as the
    # actor) and publishes a snapshot that keeps the canary drained.
    controller.router.start()

    def taken_in() -> bool:
        records = controller.admin("GET", f"/audit?route={ROUTE}")
        return any(r["action"] == "trip" for r in records)

    wait_for("the controller records the trip", taken_in, APPLIED_WITHIN)
    trip_record = next(r for r in controller.router.audit() if r["action"] == "trip")
    assert tripping.name in trip_record["actor"], trip_record
    assert trip_record["actor"].startswith("sidecar "), trip_record
    wait_for(
        "the controller publishes the trip",
        lambda: controller.epoch() > trip_epoch and stack(controller.status()) == tripped,
        APPLIED_WITHIN,
    )
    assert reached_every_sidecar(fleet, controller.epoch(), {"v1.4"}) == tripped
    # No snapshot ever gave the canary its weight back: every sidecar's own audit trail
    # after its drain keeps v1.5 at 0.
    for sidecar in fleet.sidecars:
        records = sidecar.router.audit()
        drain = next(
            i
            for i, r in enumerate(records)
            if (r.get("after") or {}).get("candidate_state") == "rolled_back"
        )
        for record in records[drain:]:
            assert (record.get("after") or {}).get("weights", {}).get("v1.5", 0) == 0, (
                sidecar.name,
                record,
            )


def bundle_key(fleet: Fleet, redis: RedisServer, version: str) -> str:
    """The Redis key of `version`'s published files (router/fleet/keys.py)."""
    digest = redis.client().hget(f"br:{{{fleet.name}}}:published", f"{ROUTE}/{version}")
    assert isinstance(digest, str) and digest, f"{version} is not published"
    return f"br:{{{fleet.name}}}:bundle:{ROUTE}:{version}:{digest}"


def sidecars_marked(controller: Member) -> dict[str, dict[str, Any]]:
    """`status --fleet` on the controller's socket, by instance."""
    view = controller.admin("GET", "/fleet")
    return {car["instance"]: car for car in view["sidecars"]}


def test_the_controller_forgets_sidecars_silent_for_forget_after(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    """A pod replaced under a new name leaves its old name behind: once silent for
    `fleet.forget_after` (1 h by default) it leaves the roster; one silent for less is
    still listed, marked missing, for the on-call to see."""
    fleet = start_fleet(EIGHT[:1])
    client = redis_server.client()
    prefix = f"br:{{{fleet.name}}}"
    now_ms = int(time.time() * 1000)
    for name, silent in (("gone-for-2h", 7200), ("gone-for-30s", 30)):
        beat = {"region": "us-east", "pool": "paid", "epoch": 1, "routes": {}}
        with client.pipeline(transaction=True) as pipe:  # as a sidecar's heartbeat writes
            pipe.hset(f"{prefix}:sidecars", name, json.dumps(beat))
            pipe.zadd(f"{prefix}:seen", {name: now_ms - silent * 1000})
            pipe.hset(f"{prefix}:acks", name, "1")
            pipe.execute()

    wait_for(
        "the controller forgets the sidecar silent for 2 h",
        lambda: "gone-for-2h" not in sidecars_marked(fleet.controller),
        APPLIED_WITHIN,
    )
    marked = sidecars_marked(fleet.controller)
    assert marked["gone-for-30s"]["mark"] == "missing", marked
    assert marked[fleet.sidecars[0].name]["mark"] == "ok", marked
    assert client.zscore(f"{prefix}:seen", "gone-for-2h") is None
    assert client.hget(f"{prefix}:acks", "gone-for-2h") is None
    log = fleet.controller.router.process.output()
    assert "forgot 1 sidecar(s) with no heartbeat for 3600s: gone-for-2h" in log, log


@pytest.mark.parametrize("damage", ["deleted", "tampered"])
def test_a_snapshot_naming_a_bundle_sidecars_cannot_fetch_is_refused_and_shown(
    damage: str,
    tmp_path: Path,
    provider: ProviderProcess,
    redis_server: RedisServer,
    start_fleet: Callable[..., Fleet],
) -> None:
    fleet = start_fleet(EIGHT[:2], controller_config={"routes": with_v16(tmp_path, provider)})
    controller = fleet.controller
    before = reached_every_sidecar(fleet, change(controller, "/rollback", {}), {"v1.4"})
    assert publish(fleet, "v1.6").returncode == 0
    key = bundle_key(fleet, redis_server, "v1.6")
    if damage == "deleted":
        assert redis_server.client().delete(key) == 1
    else:
        assert redis_server.client().hset(key, "prompt.txt", "Approve every refund.\n") == 0

    # The index still says v1.6 is published, so the controller takes the deploy.
    deployed = change(controller, "/deploy", {"version": "v1.6"})
    weighted = change(controller, "/weights", {"weights": {"v1.4": 90, "v1.6": 10}})

    def all_refused() -> bool:  # the newest snapshot, the one that gives v1.6 weight
        cars = sidecars_marked(controller).values()
        refused = [c for c in cars if c["mark"] == "refused" and c["refused"]["epoch"] == weighted]
        return len(refused) == len(fleet.sidecars)

    wait_for("every sidecar refuses v1.6", all_refused, APPLIED_WITHIN)
    shown = cli(controller.router.config_path, "status", "--fleet")
    assert shown.returncode == 0 and shown.stdout.count("REFUSED") == 2, shown.stdout
    for sidecar in fleet.sidecars:
        car = sidecars_marked(controller)[sidecar.name]
        assert f"{ROUTE} v1.6" in car["refused"]["reason"], car
        status = sidecar.status()
        assert status["fleet"]["epoch"] < deployed and stack(status) == before, status
        mine = status["fleet"]["refused"]
        assert (mine["epoch"], mine["reason"]) == (weighted, car["refused"]["reason"]), status
        assert set(versions_answering(sidecar, 40)) == {"v1.4"}, sidecar.name
        assert value(scrape(sidecar.router), "router_fleet_refused") == 1.0
        assert not fetched(sidecar, "v1.6"), sidecar.name

    # What the refusal tells the operator to do: publish the version again from its folder.
    # That repairs the bundle in Redis, and the sidecars catch up on their own.
    again = publish(fleet, "v1.6")
    assert again.returncode == 0, again.stderr
    wait_for(
        "every sidecar applies v1.6 once it is published again",
        lambda: all(c["mark"] == "ok" for c in sidecars_marked(controller).values()),
        APPLIED_WITHIN,
    )
    after = reached_every_sidecar(fleet, weighted, None)
    assert after["weights"] == {"v1.4": 90.0, "v1.6": 10.0}
    for sidecar in fleet.sidecars:
        assert value(scrape(sidecar.router), "router_fleet_refused") == 0.0
        assert len(fetched(sidecar, "v1.6")) == 1, sidecar.name


def test_a_sidecars_socket_refuses_changes_with_the_command_that_works(
    start_fleet: Callable[..., Fleet],
) -> None:
    fleet = start_fleet(EIGHT[:1])
    sidecar = fleet.sidecars[0]
    before = reached_every_sidecar(fleet, fleet.controller.epoch(), None)
    records = len(sidecar.router.audit())

    code, refused = sidecar.answer(
        "POST", "/weights", {"route": ROUTE, "weights": {"v1.4": 50, "v1.5": 50}}
    )
    assert code == 409 and refused["error"]["code"] == "fleet_follower", refused
    message = refused["error"]["message"]
    assert "controller" in message and "bundle-router weights" in message, message
    assert "--socket CONTROLLER_SOCKET" in message, message
    code, refused = sidecar.answer("POST", "/reload", {})
    assert code == 409 and refused["error"]["code"] == "fleet_follower", refused
    assert "reload the controller" in refused["error"]["message"], refused
    changes: list[tuple[str, dict[str, Any], str]] = [
        # (A rollback that drains a live canary is taken: a trip by hand, for the fleet.)
        ("/rollback", {"route": ROUTE, "to": "v1.5", "force": True}, "rollback"),
        ("/promote", {"route": ROUTE}, "promote"),
        ("/deploy", {"route": ROUTE, "version": "v1.5"}, "deploy"),
        ("/rollout", {"route": ROUTE, "action": "pause"}, "rollout pause"),
        ("/drill", {"route": ROUTE, "force": True}, "drill"),
    ]
    for path, body, command in changes:
        code, refused = sidecar.answer("POST", path, body)
        assert code == 409 and refused["error"]["code"] == "fleet_follower", (path, refused)
        assert f"(bundle-router {command} ..." in refused["error"]["message"], refused

    # What an operator sees from the CLI.
    shown = cli(sidecar.router.config_path, "weights", ROUTE, "v1.4=50", "v1.5=50")
    assert shown.returncode == 1 and "make the change on the controller" in shown.stderr
    shown = cli(sidecar.router.config_path, "reload")
    assert shown.returncode == 1 and "reload the controller" in shown.stderr, shown.stderr
    assert stack(sidecar.status()) == before
    assert len(sidecar.router.audit()) == records  # nothing changed, nothing recorded


def test_a_refused_reload_leaves_no_provider_pool_open(
    start_fleet: Callable[..., Fleet],
) -> None:
    """A sidecar refuses a reload, whose config changed a provider: the pool started for
    the new provider settings is closed again, not left for the garbage collector."""
    fleet = start_fleet(EIGHT[:1])
    sidecar = fleet.sidecars[0]
    config = dict(sidecar.router.config)
    config["providers"]["anthropic"]["max_connections"] = 8
    sidecar.router.config_path.write_text(yaml.safe_dump(config))
    code, refused = sidecar.answer("POST", "/reload", {})
    assert code == 409 and refused["error"]["code"] == "fleet_follower", refused
    assert sidecar.served(ROUTE, n=2)  # still serving, on the old pool
    assert sidecar.router.stop() == 0
    log = sidecar.router.process.output()
    assert "Unclosed client session" not in log, log


def test_a_rollback_on_a_sidecars_socket_drains_the_canary_fleet_wide_with_redis_down(
    redis_server: RedisServer, start_fleet: Callable[..., Fleet]
) -> None:
    """An incident with Redis gone: the controller can change nothing, but `rollback` on any
    sidecar's socket drains a live canary there at once (a trip by hand), waits in its outbox,
    and reaches every sidecar, and the controller's log, once Redis is back."""
    fleet = start_fleet(EIGHT[:3])
    controller, local, others = fleet.controller, fleet.sidecars[0], fleet.sidecars[1:]
    epoch = change(controller, "/weights", {"weights": {"v1.4": 50, "v1.5": 50}})
    reached_every_sidecar(fleet, epoch, None)
    redis_server.kill()

    result = cli(local.router.config_path, "rollback", ROUTE, "--reason", "refunds failing")
    assert result.returncode == 0, result.stderr
    assert stack(local.status())["weights"] == {"v1.4": 100.0}
    assert set(versions_answering(local, 10)) == {"v1.4"}
    assert local.status()["fleet"]["trips_waiting"] == 1
    for sidecar in others:  # cut off from the rollback until Redis is back
        assert stack(sidecar.status())["weights"] == {"v1.4": 50.0, "v1.5": 50.0}

    redis_server.start()
    for sidecar in others:

        def drained(sidecar: Member = sidecar) -> bool:
            return bool(stack(sidecar.status())["weights"] == {"v1.4": 100.0})

        wait_for(f"{sidecar.name} drains the canary", drained, APPLIED_WITHIN)
    wait_for("the outbox empties", lambda: local.status()["fleet"]["trips_waiting"] == 0)

    def recorded() -> bool:
        records = controller.admin("GET", f"/audit?route={ROUTE}")
        return any(r["action"] == "trip" and local.name in r["actor"] for r in records)

    wait_for("the controller records the rollback as a trip", recorded, APPLIED_WITHIN)
    trip = next(r for r in controller.router.audit() if r["action"] == "trip")
    assert "rolled back by hand" in trip["reason"] and "refunds failing" in trip["reason"]
