"""A sidecar in a fleet: follow the fleet's state, keep a last-known-good, report, trip.

    start    serve the last-known-good (the local durable state); with none yet, wait up
             to `first_sync` for Redis before reporting ready
    follow   XREAD BLOCK on the event stream; on every event, and every few seconds anyway,
             re-read the whole state (a stream entry is only a doorbell: what was missed
             during a disconnect is in the state, not in the messages)
    apply    a newer epoch only: check every version it names (fetch and verify published
             bundles), then swap the routes through the change core (durable first, like any
             change), then write the epoch and acknowledge it. A snapshot that fails the
             check is refused: the old state keeps serving and the refusal is reported
    trip     a local guardrail trip drains the canary here at once (the watcher, as without
             a fleet), then is written to Redis for every other sidecar; while Redis is
             unreachable it waits in the outbox on disk and still applies on top of
             anything read meanwhile
    report   a heartbeat every `heartbeat`: labels, applied epoch, lag, refusal, weights
    evidence every `heartbeat` too, the counters of every version that served, for the
             controller's pooled guardrails (router.fleet.evidence)

Changes from the admin socket are refused here with the command that works: the fleet's
changes are made on the controller. One exception, for an incident with the controller or Redis
down: `rollback` of a live canary drains it here at once and goes to the fleet as a trip does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.background import Background, cancel_requested
from router.catalog import Catalog
from router.control.build import new_stats
from router.control.core import Change
from router.control.durable import DurabilityError, utc_now
from router.control.moves import RouteState
from router.control.plane import ControlPlane
from router.errors import Refused
from router.fleet.depot import Unavailable, fetch
from router.fleet.evidence import Flusher
from router.fleet.keys import Keys
from router.fleet.lkg import Marker
from router.fleet.scripts import Read, Scripts, last_event_id
from router.fleet.snapshot import (
    Effective,
    InvalidSnapshot,
    effective,
    pending_trips,
    taken_in,
    with_trips,
)
from router.fleet.view import flipped, table_for
from router.proxy.forward import Upstream
from router.proxy.live import LiveRoute

log = logging.getLogger("router.fleet")
BLOCK_SECONDS = 1.0  # one XREAD waits this long; a quiet fleet costs one read a second
RESYNC_SECONDS = 5.0  # re-read the state this often even with no event (belt and braces)
BACKOFF = (0.1, 0.25, 0.5, 1.0)  # after a Redis error, then every second
# What a sidecar's own core may change: trips and halts decided here, the fleet's state,
# and the first start's routes from the config.
DIGEST = re.compile(r"[0-9a-f]{64}")  # sha256, as router.bundles makes it
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as a bundle.yaml may name one
LOCAL_ACTIONS = frozenset({"trip", "ramp_halt", "fleet_sync", "init"})


def labels(fleet_region: str, fleet_pool: str, fleet_instance: str) -> dict[str, str]:
    """The sidecar's labels, with `$NAME` values read from the environment."""
    found = {}
    for name, value in (
        ("region", fleet_region),
        ("pool", fleet_pool),
        ("instance", fleet_instance),
    ):
        if value.startswith("$"):
            env = value[1:]
            resolved = os.environ.get(env, "").strip()
            if not resolved and env == "HOSTNAME":
                resolved = os.uname().nodename
            if not resolved:
                raise ValueError(
                    f"fleet.{name} is {value}, and the environment variable {env} is not set; "
                    f"set it (in Kubernetes, from the downward API) or write the {name} itself"
                )
            value = resolved
        found[name] = value
    return found


class Follower:
    def __init__(
        self,
        catalog: Catalog,
        routes: MutableMapping[str, LiveRoute],
        upstreams: Mapping[str, Upstream],
        control: ControlPlane,
        redis: Redis,
        blocking: Redis,
        keys: Keys,
        marker: Marker,
        cache: Path,
        identity: Mapping[str, str],
    ) -> None:
        fleet = catalog.config.fleet
        assert fleet is not None
        self.catalog = catalog
        self.fleet = fleet
        self.routes = routes
        self.upstreams = upstreams
        self.control = control
        self.core = control.core
        self.redis = redis
        self.blocking = blocking
        self.keys = keys
        self.scripts = Scripts(redis, keys)
        self.marker = marker
        self.cache = cache
        self.labels = dict(identity)
        self.instance = self.labels["instance"]
        self.connected = False
        self.contact = 0.0  # monotonic time Redis last answered
        self.synced = 0.0  # monotonic time of the last full read of the state
        self.started = time.monotonic()
        # redis-py may swallow a task's cancellation while it waits on a socket (redis-py
        # #2028): every loop here also stops on this flag, so a stop never hangs.
        self.closing = False
        self.behind_since: float | None = None  # saw a newer epoch it has not applied
        self.latest_seen = marker.epoch
        self.applied_at: str | None = None
        self.refused: dict[str, Any] | None = None
        self.missing_state = False
        self.in_redis: set[Any] = set()  # trip ids seen in Redis at the last read
        self.background = Background()
        self.evidence = Flusher(redis, keys, routes, self.labels, fleet.heartbeat)
        self._wake = asyncio.Event()  # the outbox has something to write
        self._sync_lock = asyncio.Lock()
        self._marker_lock = asyncio.Lock()
        self.core.gate = self.gate
        self.core.on_record(self.recorded)
        # This sidecar's own view: flipped or not in a rolling release, in the canary pool
        # or not (router.fleet.view).
        self.core.table_of = lambda name, state: table_for(
            state, self.labels, remember=self._has_waves(name)
        )

    def _has_waves(self, name: str) -> bool:
        route = self.catalog.config.routes.get(name)
        return route is not None and route.rollout.waves is not None

    @property
    def applied(self) -> int:
        return self.marker.epoch

    # -- the change core's hooks ----------------------------------------------------------

    async def gate(self, action: str, route: str, details: Mapping[str, Any]) -> None:
        if action in LOCAL_ACTIONS:
            return
        state = self.core.states.get(route)
        if action == "rollback" and "to" not in details and state and state.canary_live:
            return  # a drain: a trip by hand, sent to the fleet like one
        if action == "reload":
            raise Refused(
                f"this sidecar ({self.instance}) follows fleet {self.fleet.name}, whose "
                "routes and versions come from the controller: reload the controller "
                "(bundle-router reload --socket CONTROLLER_SOCKET); to change this sidecar's "
                "own settings (providers, limits), restart it with the new config",
                code="fleet_follower",
            )
        command = action.replace("_", " ")  # the CLI's words: rollout_pause is rollout pause
        raise Refused(
            f"this sidecar ({self.instance}) follows fleet {self.fleet.name}: make the "
            f"change on the controller (bundle-router {command} ... --socket "
            "CONTROLLER_SOCKET), and every sidecar applies it. (Only a rollback that drains "
            "a live canary is taken here, and sent to the whole fleet like a trip.)",
            code="fleet_follower",
        )

    def recorded(self, record: Mapping[str, Any]) -> None:
        """A trip decided here (by a guardrail, or by hand: `rollback` of a live canary on
        this sidecar's socket) goes to the outbox, for every other sidecar."""
        action, before = record.get("action"), record.get("before") or {}
        tripped = action == "trip" and record.get("actor") == "guardrail"
        drained = action == "rollback" and before.get("candidate_state") == "live"
        if not (tripped or drained):
            return
        if drained:
            log.warning(
                "fleet %s: %s rolled back %s by hand on this sidecar; sending it to the fleet",
                self.fleet.name,
                record.get("actor"),
                record.get("route"),
            )
        trip = {
            "uid": uuid.uuid4().hex,
            "route": record["route"],
            "version": before.get("candidate"),
            "trip": (record.get("after") or {}).get("trip") or {},
            "reason": record.get("reason")
            if tripped
            else f"rolled back by hand by {record.get('actor')}: {record.get('reason')}",
            "at": record.get("at"),
            **self.labels,
        }
        self.marker.outbox.append(trip)
        self._wake.set()

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Sync once (waiting up to `first_sync` when there is no last-known-good), then
        follow in the background."""
        if self.applied == 0:
            deadline = time.monotonic() + self.fleet.first_sync
            while time.monotonic() < deadline:
                try:
                    await self.sync()
                except RedisError as exc:
                    if cancel_requested():  # a signal during start-up, come out as a Redis error
                        raise asyncio.CancelledError from exc
                    log.warning("fleet: Redis not reachable yet (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.2)
                    continue
                except Exception:  # serving comes first; the follow loop tries again
                    log.exception("fleet %s: the first sync failed", self.fleet.name)
                    break
                if self.applied:
                    break
                await asyncio.sleep(0.2)
            if not self.applied:
                log.error(
                    "fleet %s: no state from Redis within %gs and no last-known-good: serving "
                    "the config's initial weights until the fleet's state arrives",
                    self.fleet.name,
                    self.fleet.first_sync,
                )
        else:
            log.info("fleet %s: serving last-known-good epoch %d", self.fleet.name, self.applied)
        self.background.keep_running(self._follow, "fleet-follow")
        self.background.keep_running(self._heartbeat, "fleet-heartbeat")
        self.background.keep_running(self._outbox, "fleet-outbox")
        self.background.keep_running(self.evidence.run, "fleet-evidence")
        if self.marker.outbox:
            self._wake.set()

    async def close(self) -> None:
        self.closing = True
        self.evidence.closing = True
        await self.background.stop()
        await self.evidence.close()  # the last counts: a stopped sidecar's evidence stays
        await self.redis.aclose()
        await self.blocking.aclose()

    # -- following ------------------------------------------------------------------------

    async def _follow(self) -> None:
        failures = 0
        last_id: bytes | str | None = None
        while not self.closing:
            try:
                if last_id is None:  # (re)connected: where the stream is now, then a full read
                    newest = await self.redis.xrevrange(self.keys.events, count=1)
                    last_id = last_event_id(newest, "0-0")
                    await self.sync()
                entries = await self.blocking.xread(
                    {self.keys.events: last_id}, block=int(BLOCK_SECONDS * 1000), count=1000
                )
                if entries:
                    last_id = last_event_id(entries, last_id)
                    await self.sync()
                elif time.monotonic() - self.synced > RESYNC_SECONDS:
                    await self.sync()  # also retries a refused snapshot
                else:
                    self._touch()
                failures = 0
            except RedisError as exc:
                if self.connected or failures == 0:
                    log.warning(
                        "fleet %s: lost Redis (%s: %s); serving epoch %d, catching up on reconnect",
                        self.fleet.name,
                        type(exc).__name__,
                        exc,
                        self.applied,
                    )
                self.connected = False
                last_id = None
                await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF) - 1)])
                failures += 1

    def _touch(self) -> None:
        if not self.connected and self.contact:
            log.warning("fleet %s: Redis reachable again", self.fleet.name)
        self.connected, self.contact = True, time.monotonic()

    async def sync(self) -> None:
        """Read the fleet's state and apply it if it is newer. Trips apply whatever happens
        to the snapshot: one that is refused or missing still drains a tripped canary.
        Raises Redis errors."""
        async with self._sync_lock:
            read = await self.scripts.read()
            self._touch()
            self.synced = time.monotonic()
            self._follow_outbox(read)
            pending = [trip for _, trip in pending_trips(read)]
            try:
                wanted = effective(read, self.marker.outbox)
            except InvalidSnapshot as exc:
                await self._refuse(read.latest, f"the snapshot breaks the rules: {exc}")
                return await self._drain(pending)
            if wanted is None:
                if not self.missing_state:
                    log.warning(
                        "fleet %s: Redis holds no fleet state (a new fleet, or Redis "
                        "restarted empty); serving %s until the controller publishes it",
                        self.fleet.name,
                        f"last-known-good epoch {self.applied}"
                        if self.applied
                        else "the config's initial weights",
                    )
                self.missing_state = True
                return await self._drain(pending)
            self.missing_state = False
            self.latest_seen = max(self.latest_seen, wanted.epoch)
            if wanted.epoch <= self.applied:
                return None
            if not await self._apply(wanted):
                await self._drain(pending)
            return None

    def _follow_outbox(self, read: Read) -> None:
        """Trips the snapshot took in leave the outbox; one that Redis lost (it came back
        empty) is written again."""
        taken = taken_in(read)
        kept = [trip for trip in self.marker.outbox if trip.get("uid") not in taken]
        if len(kept) != len(self.marker.outbox):
            self.marker.outbox[:] = kept  # in place: `recorded` appends to this list
            self._wake.set()  # saved by the outbox loop
        self.in_redis = {trip.get("uid") for _, trip in read.trips}
        if any(trip.get("uid") not in self.in_redis for trip in kept):
            self._wake.set()

    async def _drain(self, trips: list[dict[str, Any]]) -> None:
        """Apply the fleet's trips to the routes as they are served here, when the fleet's
        snapshot cannot be (refused, missing): draining needs no bundle."""
        changes = []
        for name, state in self.core.states.items():
            if with_trips(name, state, [*trips, *self.marker.outbox]) is not state:
                changes.append(
                    Change(
                        name,
                        self._tripped(name, None, trips),
                        "fleet_sync",
                        "a fleet trip, applied to the last-known-good",
                    )
                )
        if not changes:
            return
        log.warning(
            "fleet %s: applying %d trip(s) to the last-known-good", self.fleet.name, len(changes)
        )
        try:
            await self.core.commit(changes, actor="fleet (trip)", announce=False)
        except DurabilityError as exc:  # nothing changed; the next read (<= 5 s) tries again
            log.error("fleet %s: a fleet trip could not be applied here: %s", self.fleet.name, exc)

    def _tripped(
        self, name: str, base: RouteState | None, trips: list[dict[str, Any]]
    ) -> Callable[[RouteState | None], RouteState]:
        """The move to `base` (None: the route's state then) with `trips` and the outbox's
        trips applied. It runs under the change lock, so a trip this sidecar decided while
        the fleet's state was being read is in the outbox by then, and stays applied."""

        def move(current: RouteState | None) -> RouteState:
            start = base if base is not None else current
            assert start is not None
            return with_trips(name, start, [*trips, *self.marker.outbox])

        return move

    async def _apply(self, wanted: Effective) -> bool:
        """Apply a newer snapshot; False when it is refused (reported)."""
        served = {n: s for n, s in wanted.routes.items() if n in self.routes}
        try:
            for name, state in served.items():
                await self._have_versions(name, state)
        except (Unavailable, DurabilityError) as exc:  # not servable, or not cacheable here
            await self._refuse(wanted.epoch, str(exc))
            return False
        why = f"fleet epoch {wanted.epoch}" + "".join(
            f"; trip of {t.get('version')} on sidecar {t.get('instance')}: {t.get('reason')}"
            for t in wanted.trips
        )
        changes = [
            Change(name, self._tripped(name, state, []), "fleet_sync", why)
            for name, state in served.items()
            if self.core.states.get(name) is None
            or self.core.states[name].as_dict() != state.as_dict()
        ]
        try:
            # Not announced: the controller announced each change, and a sidecar's own trip
            # was announced here when it was decided; a thousand sidecars say nothing twice.
            await self.core.commit(
                changes, actor=f"fleet (controller {wanted.leader})", announce=False
            )
            await self._save(epoch=wanted.epoch)
        except (DurabilityError, Refused, ValueError) as exc:
            await self._refuse(wanted.epoch, f"could not apply it: {exc}")
            return False
        self.applied_at, self.refused, self.behind_since = utc_now(), None, None
        log.info(
            "fleet %s: applied epoch %d (%d route(s) changed)",
            self.fleet.name,
            wanted.epoch,
            len(changes),
        )
        await self._beat()  # the acknowledgement, with the weights now served
        return True

    async def _have_versions(self, name: str, state: RouteState) -> None:
        """Every version `state` may send traffic to, or keeps warm, is loaded here with
        the digest the fleet names; fetched and verified if missing. Raises Unavailable."""
        route = self.routes[name]
        needed = {state.active, *(w.version for w in state.warm)}
        needed |= {v for v, points in state.weights.items() if points}
        if state.candidate:
            needed.add(state.candidate)
        for version in sorted(needed):
            digest = state.digests.get(version)
            if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
                raise Unavailable(f"route {name}: the snapshot names {version!r} without a digest")
            if not VERSION.fullmatch(version):  # it becomes a folder name in the cache
                raise Unavailable(f"route {name}: {version!r} is not a version name")
            target = route.targets.get(version)
            if target is not None:
                if target.bundle.digest != digest:
                    raise Unavailable(
                        f"route {name} {version}: this sidecar has digest "
                        f"{target.bundle.short_digest}, the fleet names {digest[:12]}"
                    )
                continue
            bundle = await fetch(
                self.redis,
                self.keys,
                self.cache,
                name,
                version,
                digest,
                self.catalog.config.environment,
            )
            upstream = self.upstreams.get(bundle.provider)
            if upstream is None:
                raise Unavailable(
                    f"route {name} {version} uses provider {bundle.provider!r}, which this "
                    "sidecar's config does not have"
                )
            route.add_target(bundle, upstream, new_stats(self.catalog.config, name, bundle))
            log.info("fleet: fetched %s %s (digest %s)", name, version, bundle.short_digest)

    async def _refuse(self, epoch: int, reason: str) -> None:
        if self.refused is None or self.refused["epoch"] != epoch:
            log.error(
                "fleet %s: refused epoch %d, serving epoch %d: %s",
                self.fleet.name,
                epoch,
                self.applied,
                reason,
            )
        self.refused = {"epoch": epoch, "reason": reason, "at": utc_now()}
        if self.behind_since is None:
            self.behind_since = time.monotonic()
        await self._beat()

    # -- reporting ------------------------------------------------------------------------

    def lag(self) -> float:
        """Seconds this sidecar has been behind the fleet: since it saw an epoch it has not
        applied, or since it last heard from Redis. 0 when current."""
        now = time.monotonic()
        if not self.connected:
            return now - (self.contact or self.started)
        if self.behind_since is not None:
            return now - self.behind_since
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.name,
            "role": "sidecar",
            **self.labels,
            "epoch": self.applied,
            "latest_seen": self.latest_seen,
            "applied_at": self.applied_at,
            "lag_seconds": round(self.lag(), 3),
            "connected": self.connected,
            "state_missing_in_redis": self.missing_state,
            "refused": self.refused,
            "trips_waiting": sum(t.get("uid") not in self.in_redis for t in self.marker.outbox),
            "trips_not_taken_in": len(self.marker.outbox),
        }

    async def _beat(self) -> None:
        beat = {
            **self.describe(),
            "pid": os.getpid(),
            "at": utc_now(),
            "routes": {
                name: {
                    "active": s.active,
                    "candidate": s.candidate,
                    "weights": dict(s.weights),
                    "served": dict(self.routes[name].table.weights) if name in self.routes else {},
                    "flipped": flipped(s, self.instance),
                }
                for name, s in self.core.states.items()
            },
        }
        # One transaction: the controller's forgetting (scripts.FORGET) sees all or none.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.sidecars, self.instance, orjson.dumps(beat).decode())
            pipe.zadd(self.keys.seen, {self.instance: int(time.time() * 1000)})
            pipe.hset(self.keys.acks, self.instance, str(self.applied))
            await pipe.execute()

    async def _heartbeat(self) -> None:
        while not self.closing:
            with contextlib.suppress(RedisError):  # the follow loop reports it, once
                await self._beat()
            await asyncio.sleep(self.fleet.heartbeat)

    async def _outbox(self) -> None:
        """Write this sidecar's trips to Redis, oldest first. Each stays in the outbox (on
        disk) until a snapshot lists it as taken in, and is written again if Redis lost it."""
        while not self.closing:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._save()  # durable first
            except DurabilityError as exc:
                log.error("fleet: could not keep the trips on disk (%s); they are in memory", exc)
            for trip in list(self.marker.outbox):
                if self.closing or trip.get("uid") in self.in_redis:
                    continue
                try:
                    epoch = await self.scripts.trip(self.latest_seen, trip)
                except RedisError as exc:
                    log.warning(
                        "fleet: trip on %s %s not written to Redis yet (%s); retrying",
                        trip["route"],
                        trip["version"],
                        type(exc).__name__,
                    )
                    await asyncio.sleep(0.5)
                    self._wake.set()
                    break
                self.in_redis.add(trip.get("uid"))
                log.warning(
                    "fleet: wrote the trip of %s %s for the fleet at epoch %d",
                    trip["route"],
                    trip["version"],
                    epoch,
                )

    async def _save(self, epoch: int | None = None) -> None:
        """The marker file (its content taken here, on the loop), one writer at a time.
        Raises DurabilityError."""
        async with self._marker_lock:
            new_epoch, content = self.marker.encode(epoch)
            await asyncio.to_thread(self.marker.write, new_epoch, content)
