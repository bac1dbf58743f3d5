"""Each route's deploy state, the one change function, and the guardrail watch.

Every change of weights or roles, whatever its source (the config at first start, an
operator, a guardrail trip, later the ramp), goes through `Rollouts.change`, which

    swaps the route's weight table (one assignment: the next request sees it)
 -> appends an audit record (fsynced: from here on the change survives a crash)
 -> replaces the state file (durably; a crash before this is repaired from the log at start)
 -> announces it (queued; the webhook never holds anything up)

and returns only once the change is durable. Changes are serialised by one asyncio lock;
the data path never takes it, it only reads `LiveRoute.table`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from router.catalog import Catalog
from router.config import Route
from router.guardrails import Guard, Verdict, Watch
from router.notify import Notifier
from router.proxy import LiveRoute
from router.routing import WeightTable
from router.state import AuditLog, StateError, StateFile, read_records, utc_now
from router.tasks import Background

log = logging.getLogger("router.rollout")

LIVE = "live"
ROLLED_BACK = "rolled_back"


@dataclass(frozen=True, slots=True)
class RouteState:
    """A route's live deploy state: who is active, the canary and its fate, the weights."""

    active: str
    candidate: str | None
    weights: Mapping[str, int]  # basis points, summing to 10000
    candidate_state: str | None = None  # LIVE or ROLLED_BACK while there is a candidate
    trip: Mapping[str, Any] | None = None  # why the candidate was rolled back
    digests: Mapping[str, str] = field(default_factory=dict)  # version -> digest when first seen

    @classmethod
    def from_config(cls, route: Route, digests: Mapping[str, str]) -> RouteState:
        return cls(
            active=route.active,
            candidate=route.candidate,
            weights=route.basis_points(),
            candidate_state=LIVE if route.candidate else None,
            digests=dict(digests),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouteState:
        return cls(
            active=data["active"],
            candidate=data.get("candidate"),
            weights={version: int(points) for version, points in data["weights"].items()},
            candidate_state=data.get("candidate_state"),
            trip=data.get("trip"),
            digests=dict(data.get("digests") or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "candidate": self.candidate,
            "weights": dict(self.weights),
            "candidate_state": self.candidate_state,
            "trip": dict(self.trip) if self.trip else None,
            "digests": dict(self.digests),
        }

    def table(self) -> WeightTable:
        return WeightTable.build(self.weights, self.active, self.candidate)

    @property
    def canary_live(self) -> bool:
        return self.candidate is not None and self.candidate_state == LIVE

    def describe_weights(self) -> str:
        return " ".join(f"{v}={p / 100:g}%" for v, p in self.weights.items())


@dataclass(slots=True)
class Restored:
    """What `restore` found: the states to serve, what to tell the operator, and the routes
    that had no live state yet (their config state is applied as a first change)."""

    states: dict[str, RouteState]
    notes: list[str]
    new_routes: dict[str, RouteState]
    unknown_routes: dict[str, Any]  # in the state file but not in the config: kept as they are
    replayed: bool


def restore(catalog: Catalog, state_file: StateFile, audit: AuditLog) -> Restored:
    """Load live state, replay audit records the state file missed, check it against the
    config and the bundles. Live state always wins over the config's initial weights; a
    difference is reported, never applied silently."""
    notes = []
    repair = audit.open()
    if repair:
        notes.append(f"audit log: {repair}")
    data = state_file.load() or {"audit_seq": 0, "routes": {}}
    saved: dict[str, Any] = dict(data["routes"])
    replayed = False
    for record in read_records(audit.path):
        if record["seq"] > data.get("audit_seq", 0) and "after" in record:
            saved[record["route"]] = record["after"]
            notes.append(
                f"replayed audit record {record['seq']} ({record['action']} on "
                f"{record['route']}), which the state file had missed"
            )
            replayed = True
    states, new_routes = {}, {}
    for name, spec in catalog.routes.items():
        digests = {version: bundle.digest for version, bundle in spec.bundles.items()}
        configured = RouteState.from_config(spec.config, digests)
        if name not in saved:
            new_routes[name] = configured
            continue
        state = RouteState.from_dict(saved[name])
        used = {state.active, *state.weights} | ({state.candidate} if state.candidate else set())
        missing = sorted(v for v in used if v not in digests)
        if missing:
            raise StateError(
                f"live state of route {name} uses {', '.join(map(str, missing))}, which "
                f"{spec.config.bundles} no longer has. Restore those bundle folders; the router "
                "will not guess where that traffic should go"
            )
        for version, digest in state.digests.items():
            if version in digests and digests[version] != digest:
                notes.append(
                    f"route {name}: bundle {version} changed since it was first served "
                    f"(digest {digest[:12]} -> {digests[version][:12]}); bump its version"
                )
        # Versions added to the config since: record their digests, weight 0.
        weights = {**{v: 0 for v in digests if v not in state.weights}, **state.weights}
        state = replace(state, weights=weights, digests={**digests, **state.digests})
        if (configured.active, configured.candidate, _nonzero(configured.weights)) != (
            state.active,
            state.candidate,
            _nonzero(state.weights),
        ):
            notes.append(
                f"route {name}: the config asks for active {configured.active}, candidate "
                f"{configured.candidate}, {configured.describe_weights()}; live state has "
                f"active {state.active}, candidate {state.candidate}, "
                f"{state.describe_weights()}. Live state is kept; change it with the admin "
                "commands, not the config"
            )
        states[name] = state
    unknown = {name: value for name, value in saved.items() if name not in catalog.routes}
    for name in unknown:
        notes.append(f"route {name} is in live state but not in the config; its state is kept")
    return Restored(states, notes, new_routes, unknown, replayed)


def _nonzero(weights: Mapping[str, int]) -> dict[str, int]:
    return {version: points for version, points in weights.items() if points}


class Rollouts:
    """The live deploy state of every route, and the only way to change it."""

    def __init__(
        self,
        routes: Mapping[str, LiveRoute],
        guards: Mapping[str, Guard | None],
        restored: Restored,
        state_file: StateFile,
        audit: AuditLog,
        notifier: Notifier,
        check_interval: float,
    ) -> None:
        self.routes = routes
        self.guards = guards
        self.states = dict(restored.states)
        self.unknown_routes = restored.unknown_routes
        self.state_file = state_file
        self.audit = audit
        self.notifier = notifier
        self.check_interval = check_interval
        self.watches: dict[str, Watch] = {}
        self.trips: dict[tuple[str, str, str], int] = {}  # (route, version, rule) -> count
        self.last_change: dict[str, dict[str, Any]] = {}  # route -> how long its last change took
        self.lock = asyncio.Lock()
        self._restored = restored
        self.background = Background()

    async def start(self) -> None:
        """Serve live state, record first-time routes, and start watching canaries."""
        for name, state in self.states.items():
            self.routes[name].table = state.table()
            self._rewatch(name, state)
        if self._restored.replayed:
            await asyncio.to_thread(self._save, self.audit.seq)
        for name, state in self._restored.new_routes.items():
            await self.change(
                name,
                state,
                actor="config",
                action="init",
                reason="first start: initial weights from the config",
            )
        self.background.start(self._watch_loop(), "guardrails")

    async def close(self) -> None:
        await self.background.stop()
        self.audit.close()

    async def change(
        self,
        name: str,
        after: RouteState,
        *,
        actor: str,
        action: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
        decided: float | None = None,
    ) -> dict[str, Any]:
        """Swap, audit, persist, announce. Returns the audit record once it is durable.
        `decided` (a perf_counter reading) is when the change was decided, if earlier."""
        decided = decided if decided is not None else time.perf_counter()
        table = after.table()  # validates the weights before anything changes
        async with self.lock:
            before = self.states.get(name)
            route = self.routes[name]
            old_table = route.table
            route.table = table  # the swap: one assignment
            swapped, swapped_at = time.perf_counter(), time.time()
            self.states[name] = after
            entry = {
                "action": action,
                "actor": actor,
                "route": name,
                "reason": reason,
                "before": before.as_dict() if before else None,
                "after": after.as_dict(),
                "details": dict(details or {}),
            }
            try:
                record = await asyncio.to_thread(self.audit.append, entry)
            except OSError:
                if action != "trip":  # a trip stays in force in memory even if the disk fails
                    route.table = old_table
                    if before is not None:
                        self.states[name] = before
                log.exception("could not write the audit record of the %s on %s", action, name)
                raise
            # The audit record is the commitment: if the state file cannot be written now,
            # the next start replays the record into it.
            try:
                await asyncio.to_thread(self._save, record["seq"])
            except OSError:
                log.exception(
                    "could not write %s; audit record %d holds the change and the next start "
                    "replays it",
                    self.state_file.path,
                    record["seq"],
                )
            self.last_change[name] = {
                "action": action,
                "audit_seq": record["seq"],
                "swapped_at_unix": swapped_at,
                "decision_to_swap_seconds": swapped - decided,
                "decision_to_durable_seconds": time.perf_counter() - decided,
            }
            self._rewatch(name, after, before)
        self.notifier.send(self._message(name, before, after, record))
        return record

    def _save(self, audit_seq: int) -> None:
        routes = {**self.unknown_routes, **{n: s.as_dict() for n, s in self.states.items()}}
        self.state_file.save({"audit_seq": audit_seq, "routes": routes})

    def _rewatch(self, name: str, after: RouteState, before: RouteState | None = None) -> None:
        """Watch a live canary from the moment it (re)starts; stop watching a finished one."""
        guard = self.guards.get(name)
        if guard is None or not after.canary_live or after.candidate is None:
            self.watches.pop(name, None)
            return
        same = (
            before is not None
            and name in self.watches
            and before.canary_live
            and (before.candidate, before.active) == (after.candidate, after.active)
        )
        if not same:
            targets = self.routes[name].targets
            self.watches[name] = Watch(
                guard, targets[after.candidate].stats, targets[after.active].stats
            )

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            for name, watch in list(self.watches.items()):
                verdict = watch.check()
                if verdict is not None:
                    await self.trip(name, verdict)

    async def trip(self, name: str, verdict: Verdict) -> dict[str, Any]:
        """Drain the canary to 0 (its weight goes to the control) and mark it rolled back."""
        decided = time.perf_counter()
        before = self.states[name]
        candidate = before.candidate
        assert candidate is not None
        weights = dict(before.weights)
        weights[before.active] = weights.get(before.active, 0) + weights[candidate]
        weights[candidate] = 0
        trip = {**verdict.as_dict(), "at": utc_now(), "description": verdict.describe()}
        after = replace(before, weights=weights, candidate_state=ROLLED_BACK, trip=trip)
        self.watches.pop(name, None)  # judge once; a person re-enables the canary
        key = (name, candidate, verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
        return await self.change(
            name,
            after,
            actor="guardrail",
            action="trip",
            reason=f"guardrail {verdict.describe()}",
            details={"verdict": verdict.as_dict()},
            decided=decided,
        )

    def _message(
        self, name: str, before: RouteState | None, after: RouteState, record: Mapping[str, Any]
    ) -> dict[str, Any]:
        at = record["at"]
        clock = at[11:19] + "Z"
        if record["action"] == "trip" and after.trip:
            text = (
                f"{name} {after.candidate} rolled back to {after.active} at {clock} by "
                f"{record['reason']}"
            )
        else:
            text = (
                f"{name} {record['action']} by {record['actor']} at {clock}: "
                f"{after.describe_weights()} ({record['reason']})"
            )
        return {
            "text": text,
            "route": name,
            "action": record["action"],
            "actor": record["actor"],
            "reason": record["reason"],
            "candidate": after.candidate,
            "active": after.active,
            "weights_percent": {v: p / 100 for v, p in after.weights.items()},
            "before_weights_percent": (
                {v: p / 100 for v, p in before.weights.items()} if before else None
            ),
            "trip": dict(after.trip) if record["action"] == "trip" and after.trip else None,
            "at": at,
            "audit_seq": record["seq"],
        }

    def describe(self) -> dict[str, Any]:
        """Every route's live state and, for a watched canary, each rule's verdict."""
        view = {}
        for name, state in self.states.items():
            watch = self.watches.get(name)
            view[name] = {
                **state.as_dict(),
                "guarded": self.guards.get(name) is not None,
                "verdicts": [v.as_dict() for v in watch.verdicts()] if watch else [],
                "last_change": self.last_change.get(name),
            }
        return view
