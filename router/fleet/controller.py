"""The controller of a fleet (`bundle-router control`): its durable state and audit log are
the truth (`router.control`, as for one router), and every change reaches the fleet from here.

    lease     one controller leads (router.fleet.leader); a standby refuses changes with
              the leader's name, and takes over when the lease runs out
    publish   after every change, every route's state as one snapshot at a new epoch, with
              the leader's fencing token; the admin call waits for it (`published`)
    trips     a sidecar's trip, written to Redis without the lease, is taken in: recorded in
              the audit log with the sidecar as the actor, announced, and published
    takeover  a new leader first adopts what the previous one published, if newer than its
              own log (an `adopt` record says so), then publishes
    standby   a standby adopts every snapshot the leader publishes as it sees it, so that its
              log is the fleet's if it must re-seed an empty Redis after a takeover
    re-seed   when Redis comes back empty, the leader publishes its state again, above the
              highest epoch any sidecar reports (a heartbeat or two after Redis returns)
    deploy    refused for a version that is not published with the digest it has here
    evidence  the sidecars' counters, pooled into this controller's own (router.fleet.pool):
              its guardrails judge the whole fleet's traffic (`pool`)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.background import Background
from router.catalog import Catalog
from router.control.core import Change, starting_at
from router.control.durable import DurabilityError
from router.control.moves import WAVES, RouteState, trip_candidate
from router.control.plane import ControlPlane
from router.errors import NotFound, Refused, RouterError
from router.fleet.depot import publish, published_digest
from router.fleet.keys import Keys
from router.fleet.leader import Lease
from router.fleet.lkg import Marker
from router.fleet.pool import Pool
from router.fleet.rolling import RollingReleases
from router.fleet.scripts import Read, Scripts, StaleFence, last_event_id
from router.fleet.snapshot import INGESTED_KEPT, encode, ingested_ids, pending_trips
from router.fleet.status import fleet_view
from router.proxy.live import LiveRoute

log = logging.getLogger("router.fleet")
BLOCK_SECONDS = 0.5
PUBLISH_WAIT = 2.0  # an admin change waits this long for its snapshot to be published
DRILL_WAIT = 5.0  # a fleet drill waits this long for every sidecar to apply its rollback


class Controller:
    def __init__(
        self,
        catalog: Catalog,
        control: ControlPlane,
        redis: Redis,
        blocking: Redis,
        keys: Keys,
        marker: Marker,
        owner: str,
        routes: Mapping[str, LiveRoute],
    ) -> None:
        fleet = catalog.config.fleet
        assert fleet is not None
        self.catalog = catalog
        self.fleet = fleet
        self.control = control
        self.core = control.core
        self.redis = redis
        self.blocking = blocking
        self.keys = keys
        self.scripts = Scripts(redis, keys)
        self.marker = marker
        self.lease = Lease(self.scripts, owner, fleet.lease)
        self.ingested: list[str] = []
        self.changes = 0  # changes made here so far
        self.published_changes = 0  # of which published
        self.connected = False
        self.leader: str | None = None  # who leads, as last read
        self.missing_since: float | None = None  # Redis was seen without the fleet's state
        self.adopted_token: int | None = None  # the lease whose takeover is complete
        self.background = Background()
        self.pool = Pool(redis, keys, self.core.states, routes)
        self.closing = False  # see Follower.closing
        self._dirty = asyncio.Event()
        self._published = asyncio.Event()
        self._adopting = asyncio.Lock()  # the standby's following and its takeover
        self.core.gate = self.gate
        self.core.decides = lambda: self.leading
        self.core.on_change(self.changed)
        self.rolling = RollingReleases(
            self.core,
            self.pool,
            control.rollouts.plan,
            lambda name: control.watcher.guards.get(name),
            self._live_sidecars,
            lambda: self.leading,
        )
        control.rollouts.next_phase = self.rolling.begin
        control.watcher.defers = self._in_waves

    @property
    def epoch(self) -> int:
        return self.marker.epoch

    @property
    def leading(self) -> bool:
        """Holding the lease, with the takeover done: only then are changes taken."""
        return self.lease.leading and self.adopted_token == self.lease.token

    # -- the change core's hooks ----------------------------------------------------------

    async def gate(self, action: str, route: str, details: Mapping[str, Any]) -> None:
        if action in ("init", "adopt"):
            return
        if not self.leading:
            raise Refused(
                f"this controller ({self.lease.owner}) is standing by; the leader of fleet "
                f"{self.fleet.name} is {self.leader or 'not known (is Redis reachable?)'}. "
                "Make the change on the leader's admin socket",
                code="not_leader",
            )
        if action == "deploy":
            await self._require_published(route, str(details["version"]), str(details["digest"]))

    async def _require_published(self, route: str, version: str, digest: str) -> None:
        try:
            known = await published_digest(self.redis, self.keys, route, version)
        except RedisError as exc:
            raise Refused(
                f"cannot check that {route} {version} is published: Redis is not reachable "
                f"({type(exc).__name__}). Deploy again once it is",
                code="redis_unreachable",
            ) from None
        if known != digest:
            what = "is not published" if known is None else f"is published as {known[:12]}"
            raise Refused(
                f"{route} {version} {what}; sidecars cannot serve it until it is. Run: "
                f"bundle-router publish {route} {version} --config CONFIG",
                code="not_published",
            )

    def _in_waves(self, name: str) -> bool:
        """The rolling release judges this route's groups; the canary watch stands aside."""
        state = self.core.states.get(name)
        ramp = state.ramp if state else None
        return ramp is not None and ramp.active and ramp.phase == WAVES

    async def _live_sidecars(self) -> list[dict[str, str]]:
        """The labels of every sidecar that reports now (not missing)."""
        view = await fleet_view(self.redis, self.keys, self.fleet.heartbeat)
        return [
            {"instance": s["instance"], "region": str(s["region"]), "pool": str(s["pool"])}
            for s in view["sidecars"]
            if s["mark"] != "missing"
        ]

    def changed(self, name: str, before: object, after: object) -> None:
        self.changes += 1
        self._dirty.set()

    async def published(self) -> dict[str, Any]:
        """After an admin change: wait (up to PUBLISH_WAIT) until it is published."""
        target = self.changes
        deadline = time.monotonic() + PUBLISH_WAIT
        while self.published_changes < target and time.monotonic() < deadline:
            self._published.clear()
            try:
                await asyncio.wait_for(self._published.wait(), deadline - time.monotonic())
            except TimeoutError:
                break
        done = self.published_changes >= target
        return {
            "epoch": self.epoch,
            "published": done,
            **(
                {}
                if done
                else {
                    "note": "not published yet (Redis unreachable, or this controller lost "
                    "the lead); it is published when Redis answers if this controller still "
                    "leads, and dropped if another controller took over"
                }
            ),
        }

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._publish_bundles()
            await self._tick()
        except RedisError as exc:
            log.error("fleet %s: Redis not reachable at start (%s); retrying", self.fleet.name, exc)
        except Exception:  # the lease loop tries again; serving the admin socket comes first
            log.exception("fleet %s: taking the lead at start failed; retrying", self.fleet.name)
        self.background.keep_running(self._lease_loop, "fleet-lease")
        self.background.keep_running(self._publish_loop, "fleet-publish")
        self.background.keep_running(self._follow, "fleet-follow")
        self.background.keep_running(self.pool.run, "fleet-pool")
        self.rolling.start()

    async def close(self) -> None:
        self.closing = True
        self.pool.closing = True
        self._dirty.set()  # the publish loop wakes, and sees it
        await self.rolling.close()
        await self.background.stop()
        if self.lease.token is not None:
            with contextlib.suppress(RedisError):
                await self.scripts.resign(self.lease.owner)
        await self.redis.aclose()
        await self.blocking.aclose()

    async def _publish_bundles(self) -> None:
        """Every bundle the live state uses, published (sidecars fetch what they miss)."""
        for name, state in self.core.states.items():
            spec = self.catalog.routes.get(name)
            if spec is None:
                continue
            used = {state.active, *(w.version for w in state.warm)}
            if state.candidate:
                used.add(state.candidate)
            for version in sorted(used):
                bundle = spec.bundles.get(version)
                if bundle is None:
                    continue
                try:
                    if await publish(self.redis, self.keys, bundle):
                        log.info("fleet: published %s %s", name, version)
                except Refused as exc:
                    log.error("fleet: %s", exc)

    # -- the lease ------------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.fleet.lease / 3)
            try:
                await self._tick()
            except RedisError as exc:
                if self.connected:
                    log.warning("fleet %s: lost Redis (%s)", self.fleet.name, type(exc).__name__)
                self.connected = False
                self.leader = None  # not known while Redis cannot be asked

    async def _tick(self) -> None:
        became = await self.lease.tick()
        self.connected = True
        raw = await self.redis.get(self.keys.leader)
        self.leader = (raw.decode() if isinstance(raw, bytes) else raw) if raw else None
        # A takeover that failed (Redis, the disk) is tried again on every tick while the
        # lease holds: otherwise this controller would renew a lease it never leads with.
        if became or (self.lease.leading and self.adopted_token != self.lease.token):
            await self._take_over()
        if self.leading:
            await self._forget_gone()

    async def _forget_gone(self) -> None:
        """Sidecars silent for `forget_after` leave the roster; one beat brings one back."""
        gone = await self.scripts.forget(time.time() - self.fleet.forget_after)
        if gone:
            names = ", ".join(gone[:10]) + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
            log.info(
                "fleet %s: forgot %d sidecar(s) with no heartbeat for %gs: %s",
                self.fleet.name,
                len(gone),
                self.fleet.forget_after,
                names,
            )

    async def _take_over(self) -> None:
        """Adopt what the previous leader published if it is newer, then publish."""
        read = await self.scripts.read()
        await self._adopt(read, taking_over=True)
        if read.body is not None:
            self.ingested = ingested_ids(read.body)
        await self._publish_bundles()
        self.adopted_token = self.lease.token
        if read.epoch is None:  # an empty Redis: re-seeded once sidecars report (_check)
            self.missing_since = self.missing_since or time.monotonic()
        else:
            self._dirty.set()

    # -- publishing -----------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        failures = 0
        while not self.closing:
            await self._dirty.wait()
            if self.closing:
                return
            token = self.lease.token
            if token is None or not self.leading:
                self._dirty.clear()  # a takeover sets it again
                continue
            if self.missing_since is not None:  # Redis came back empty: let sidecars ack
                wait = self.missing_since + self._reseed_after() - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
            self._dirty.clear()
            target = self.changes
            body = encode(self.core.states, self.ingested, self.lease.owner)
            try:
                epoch = await self.scripts.publish(
                    token, self.lease.owner, self.epoch, body, self.ingested
                )
            except StaleFence as exc:
                log.error("fleet %s: Redis refused a write: %s", self.fleet.name, exc)
                self.lease.lose(str(exc))
                continue
            except RedisError as exc:
                if failures == 0:
                    log.warning(
                        "fleet: publish failed (%s: %s); retrying while this controller leads",
                        type(exc).__name__,
                        exc,  # e.g. Redis out of memory: the text says so (never a URL)
                    )
                failures += 1
                self._dirty.set()
                await asyncio.sleep(min(1.0, 0.1 * failures))
                continue
            failures = 0
            self.missing_since = None
            try:
                await self._note_epoch(epoch)
            except DurabilityError as exc:
                log.error(
                    "fleet: published epoch %d, but could not note it on disk: %s", epoch, exc
                )
                self.marker.epoch = epoch
            self.published_changes = max(self.published_changes, target)
            self._published.set()
            log.info("fleet %s: published epoch %d", self.fleet.name, epoch)

    async def _adopt(self, read: Read, *, taking_over: bool) -> None:
        """Take the snapshot in `read` into this controller's log if it is newer. A standby
        does so with every snapshot the leader publishes: if it must re-seed an empty Redis
        one day, its log then holds the fleet's state, not the one it started with."""
        async with self._adopting:
            if read.epoch is None or read.epoch <= self.epoch:
                return
            body = read.body or {}
            how = "took the lead" if taking_over else "standing by, followed the leader"
            changes = []
            routes = body.get("routes")
            for name, data in (routes if isinstance(routes, dict) else {}).items():
                if name not in self.core.states:
                    continue
                try:
                    state = RouteState.from_dict(data)
                except (ValueError, KeyError, TypeError) as exc:
                    log.error("fleet: not adopting epoch %d: route %s: %s", read.epoch, name, exc)
                    return
                if state.as_dict() != self.core.states[name].as_dict():
                    changes.append(
                        Change(
                            name,
                            starting_at(state),
                            "adopt",
                            f"{how} at epoch {read.epoch}: the state "
                            f"{body.get('leader', 'the previous leader')} published",
                        )
                    )
            unpublished = self.changes - self.published_changes
            # A standby's copy of what the leader announced is not announced again.
            await self.core.commit(
                changes, actor=f"controller {self.lease.owner}", announce=taking_over
            )
            self.published_changes = self.changes  # the fleet's own state: nothing to send
            if unpublished > 0 and not taking_over:
                log.error(
                    "fleet %s: %d change(s) made on this controller were never published "
                    "(it lost the lead first); the fleet's state at epoch %d replaces them",
                    self.fleet.name,
                    unpublished,
                    read.epoch,
                )
            await self._note_epoch(read.epoch)
            self.ingested = ingested_ids(body)
            log.log(
                logging.WARNING if taking_over else logging.INFO,
                "fleet %s: adopted epoch %d (%d route(s) differed from this log)",
                self.fleet.name,
                read.epoch,
                len(changes),
            )

    async def _note_epoch(self, epoch: int) -> None:
        """The epoch published or adopted, on disk (raises DurabilityError)."""
        new, content = self.marker.encode(epoch)
        await asyncio.to_thread(self.marker.write, new, content)

    # -- following the fleet: trips, and an empty Redis ------------------------------------

    async def _follow(self) -> None:
        last_id: bytes | str = "$"
        while not self.closing:
            try:
                entries = await self.blocking.xread(
                    {self.keys.events: last_id}, block=int(BLOCK_SECONDS * 1000), count=1000
                )
                last_id = last_event_id(entries, last_id)
                if self.leading:
                    await self._check()
                elif self.lease.token is None:  # standing by: keep this log the fleet's
                    await self._adopt(await self.scripts.read(), taking_over=False)
            except RedisError:
                last_id = "$"
                await asyncio.sleep(0.5)

    async def _check(self) -> None:
        read = await self.scripts.read()
        if read.epoch is None:
            now = time.monotonic()
            if self.missing_since is None:
                self.missing_since = now
                log.error(
                    "fleet %s: Redis holds no fleet state (restarted empty?); re-seeding it "
                    "from this controller's log once sidecars report their epochs",
                    self.fleet.name,
                )
            elif now - self.missing_since > self._reseed_after():
                await self._publish_bundles()
                self._dirty.set()
            return
        if read.epoch < self.epoch and not self._dirty.is_set():
            # Redis came back behind this controller (it lost its last writes): publish
            # again, above every epoch, so no sidecar is left on the older state.
            log.warning(
                "fleet %s: Redis is at epoch %d, behind this controller's %d; publishing again",
                self.fleet.name,
                read.epoch,
                self.epoch,
            )
            self._dirty.set()
        for _, trip in pending_trips(read):
            if trip.get("uid") not in self.ingested:
                await self._ingest(trip)

    def _reseed_after(self) -> float:
        """Two heartbeats: every live sidecar has written its epoch to `acks` again."""
        return 2 * self.fleet.heartbeat

    async def _ingest(self, trip: Mapping[str, Any]) -> None:
        """A sidecar's trip: drain the canary here too (audited, announced), then publish."""
        name, version = str(trip.get("route")), trip.get("version")
        where = f"{trip.get('instance')} ({trip.get('region')}/{trip.get('pool')})"
        uid = str(trip.get("uid"))
        detail = trip.get("trip")

        def drain(state: RouteState) -> RouteState:
            # Taken in inside the move: it runs under the change lock, and the swap follows
            # it with no await between, so no snapshot says "taken in" with the canary live.
            self.ingested = [*self.ingested, uid][-INGESTED_KEPT:]
            return trip_candidate(state, version, detail if isinstance(detail, dict) else {})

        try:
            await self.core.change(
                name,
                drain,
                actor=f"sidecar {where}",
                action="trip",
                reason=f"{trip.get('reason') or 'guardrail'}, on sidecar {where}",
                details={"trip_uid": trip.get("uid"), "sidecar": dict(trip)},
            )
        except (Refused, NotFound):
            log.info("fleet: trip of %s %s from %s: already drained", name, version, where)
            if uid not in self.ingested:
                self.ingested = [*self.ingested, uid][-INGESTED_KEPT:]
            self._dirty.set()  # publish the trip as taken in

    async def everywhere(self, name: str) -> tuple[str, int]:
        """A drill's probe on the controller: wait until the change is published and every
        live sidecar has applied it (its acknowledgement follows its swap); the version the
        route's state makes active, and how many sidecars applied it. Raises RouterError
        naming the sidecars that had not within DRILL_WAIT."""
        deadline = time.monotonic() + DRILL_WAIT
        published = await self.published()
        epoch = int(published["epoch"])
        behind: list[str] = []
        while time.monotonic() < deadline:
            view = await fleet_view(self.redis, self.keys, self.fleet.heartbeat)
            live = [s for s in view["sidecars"] if s["mark"] != "missing"]
            behind = [s["instance"] for s in live if s["epoch"] < epoch]
            if published["published"] and not behind:
                return self.core.states[name].active, len(live)
            await asyncio.sleep(0.005)
        raise RouterError(
            f"the drill's rollback (epoch {epoch}) had not reached "
            f"{', '.join(behind) or 'Redis'} within {DRILL_WAIT:g}s; see bundle-router status "
            "--fleet",
            code="drill_failed",
        )

    # -- reporting ------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet.name,
            "role": "controller",
            "id": self.lease.owner,
            "leading": self.leading,
            "leader": self.leader,
            "fencing_token": self.lease.token,
            "epoch": self.epoch,
            "connected": self.connected,
            "state_missing_in_redis": self.missing_since is not None,
            "evidence": self.pool.describe(),
        }
