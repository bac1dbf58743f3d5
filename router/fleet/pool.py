"""The controller's pool of the fleet's evidence (docs/fleet.md, "Pooled guardrails").

Every `interval` the pool reads the evidence hash of every version in the live state (one
pipeline of HGETALLs) and adds each field's *increase* since its last read to the
controller's own `VersionStats` of that version (`evidence.Counts.add_to`). The controller's
existing guardrail watch, ramp gate, windows and /metrics then see the whole fleet's counts
with no change of their own: the pooled judge is the controller's guardrail watcher.

    baselines  fields present at the pool's first read hold history from before this
               controller ran: nothing of theirs is added. So do fields of a version first
               read later whose last write is older than the pool's start. A field that
               appears later (a new sidecar, or a restarted one's new BOOT) is added whole
    down       a field whose counts went down (it cannot; but Redis may be replaced, or
               restored from an older copy) adds nothing, and its highest counts stay the
               mark: the sidecar's next write, above the mark, adds only what is new
    retire     a field that has not changed for RETIRE_AFTER, by this process's clock (its
               process is gone: a live sidecar rewrites its fields at least once a minute),
               is deleted from Redis; what the pool added of it stays in the totals, per
               instance. Should it come back (a sidecar cut off that long), it is a baseline
               again: what it counted meanwhile is lost, nothing is counted twice
    totals     what the pool added, per version and restricted to fields whose labels pass a
               test (a region, a pool): the rolling release's per-group gauges

A standby controller pools too (its counts are the fleet's when it takes over); only the
leader judges (the watcher asks `ChangeCore.decides`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.control.moves import RouteState
from router.fleet.evidence import Counts, Reading, decode
from router.fleet.keys import Keys
from router.proxy.live import LiveRoute
from router.proxy.telemetry import Totals

log = logging.getLogger("router.fleet")
POOL_SECONDS = 0.5
RETIRE_AFTER = 600.0  # seconds without a change before a field is deleted
TOMBSTONES_KEPT = 100_000  # names of retired fields remembered, newest kept
Labels = Mapping[str, str]


@dataclass(slots=True)
class Field:
    """One sidecar process's field of one version, as the pool last read it."""

    labels: Labels
    last: Counts  # the highest counts read so far
    added: Counts  # what the pool added of them since it started
    changed: float = 0.0  # when this process last saw it change (monotonic seconds)
    raw: bytes = b""  # as read last time: an unchanged field is not decoded again


def live_versions(state: RouteState) -> set[str]:
    """The versions a route's state serves or may serve: active, candidate, warm, weighted."""
    found = {state.active, *(w.version for w in state.warm)}
    found |= {v for v, points in state.weights.items() if points}
    if state.candidate:
        found.add(state.candidate)
    return found


class Pool:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        states: Mapping[str, RouteState],
        routes: Mapping[str, LiveRoute],
        interval: float = POOL_SECONDS,
    ) -> None:
        """`states`: the live state of every route, read afresh at each read (the change
        core's read-only view); `routes`: the live routes whose counters take the counts."""
        self.redis = redis
        self.keys = keys
        self.states = states
        self.routes = routes
        self.interval = interval
        self.fields: dict[tuple[str, str], dict[str, Field]] = {}  # (route, version) -> field
        # What retired fields added, per (route, version) and instance: (labels, counts).
        self.retired: dict[tuple[str, str], dict[str, tuple[Labels, Counts]]] = {}
        # Per (route, version): the counts added per instance, made when first asked after
        # a read added something (the rolling release asks several times a tick).
        self._by_instance: dict[tuple[str, str], dict[str, tuple[Labels, Counts]]] = {}
        self.tombstones: dict[str, None] = {}  # retired field names, oldest first
        self.started = time.time()
        self.reads = 0  # full reads done
        self.closing = False
        self.failing = False
        self.malformed: set[str] = set()  # fields already logged as malformed

    # -- reading --------------------------------------------------------------------------

    async def run(self) -> None:
        """Read every `interval` until closed (the controller's Background runs this)."""
        while not self.closing:
            try:
                await self.read()
                self.failing = False
            except RedisError as exc:
                if not self.failing:
                    log.warning(
                        "fleet: cannot read the fleet's evidence (%s); retrying",
                        type(exc).__name__,
                    )
                self.failing = True
            await asyncio.sleep(self.interval)

    async def read(self) -> int:
        """One read of every live version's evidence, added in; the fields read. Raises
        Redis errors (nothing is added then)."""
        wanted = sorted(
            (name, version)
            for name, state in self.states.items()
            if name in self.routes
            for version in live_versions(state)
        )
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, version in wanted:
                pipe.hgetall(self.keys.evidence(name, version))
            results = await pipe.execute()
        first = self.reads == 0
        count = 0
        for (name, version), found in zip(wanted, results, strict=True):
            count += self._absorb(name, version, found, first)
        self.reads += 1
        await self._retire(time.monotonic() - RETIRE_AFTER)
        return count

    async def _retire(self, before: float) -> None:
        """Delete the fields not written since `before`; keep what they added."""
        gone = [
            (key, field_name)
            for key, known in self.fields.items()
            for field_name, entry in known.items()
            if entry.changed < before
        ]
        if not gone:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for (name, version), field_name in gone:
                pipe.hdel(self.keys.evidence(name, version), field_name)
            await pipe.execute()
        for key, field_name in gone:
            entry = self.fields[key].pop(field_name)
            self.tombstones[field_name] = None
            if len(self.tombstones) > TOMBSTONES_KEPT:
                del self.tombstones[next(iter(self.tombstones))]
            kept = self.retired.setdefault(key, {})
            instance = entry.labels.get("instance", field_name)
            _, before_counts = kept.get(instance, (entry.labels, Counts()))
            kept[instance] = (entry.labels, before_counts.plus(entry.added))
            self._by_instance.pop(key, None)
        log.info("fleet: retired %d evidence field(s) of sidecars gone for 10 min", len(gone))

    def _absorb(self, name: str, version: str, found: Mapping[bytes, bytes], first: bool) -> int:
        target = self.routes[name].targets.get(version)
        if target is None:
            return 0  # not servable here (yet): read whole when it is
        new_key = (name, version) not in self.fields
        known = self.fields.setdefault((name, version), {})
        for raw_name, raw in found.items():
            field_name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            seen = known.get(field_name)
            if seen is not None and seen.raw == raw:
                continue  # a quiet sidecar: nothing new
            try:
                reading = decode(raw)
            except ValueError as exc:
                if field_name not in self.malformed:
                    self.malformed.add(field_name)
                    log.error(
                        "fleet: evidence of %s %s from %s skipped: %s",
                        name,
                        version,
                        field_name,
                        exc,
                    )
                continue
            history = first or (new_key and reading.at < self.started)
            history = history or field_name in self.tombstones  # retired, and back
            added = self._increase(known, field_name, reading, history)
            entry = known[field_name]
            entry.raw, entry.changed = raw, time.monotonic()
            if added is None or added.empty:
                continue
            added.add_to(target.stats)
            entry.added = entry.added.plus(added)
            self._by_instance.pop((name, version), None)
        return len(found)

    def _increase(
        self, known: dict[str, Field], name: str, reading: Reading, history: bool
    ) -> Counts | None:
        """What `reading` adds over the field's last one; None when nothing is added (a
        baseline: history, or counts that went down)."""
        seen = known.get(name)
        if seen is None:
            known[name] = Field(reading.labels, reading.counts, Counts())
            return None if history else reading.counts  # a new process: all of it is new
        added = reading.counts.since(seen.last)
        seen.labels = reading.labels
        if added is None:  # below the mark: keep the mark, add nothing (no double count)
            log.warning("fleet: the evidence field %s went down; waiting for it to pass", name)
            return None
        seen.last = reading.counts
        return added

    # -- what the rolling release reads ---------------------------------------------------

    def totals(
        self, route: str, version: str, where: Callable[[Labels], bool] | None = None
    ) -> Totals:
        """The counts the pool added for this version since it started, of the fields
        whose labels pass `where` (all without it)."""
        summed = Counts()
        for labels, counts in self.by_instance(route, version).values():
            if where is None or where(labels):
                summed = summed.plus(counts)
        return summed.totals()

    def by_instance(self, route: str, version: str) -> dict[str, tuple[Labels, Counts]]:
        """What the pool added per sidecar instance (its restarts and retired fields
        summed), with the instance's labels."""
        key = (route, version)
        found = self._by_instance.get(key)
        if found is None:
            found = dict(self.retired.get(key, {}))
            for entry in self.fields.get(key, {}).values():
                instance = entry.labels.get("instance", "")
                _, counts = found.get(instance, (entry.labels, Counts()))
                found[instance] = (entry.labels, counts.plus(entry.added))
            self._by_instance[key] = found
        return found

    def describe(self) -> dict[str, object]:
        return {
            "reads": self.reads,
            "fields": sum(len(f) for f in self.fields.values()),
            "failing": self.failing,
        }
