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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from router.catalog import Catalog, RouteSpec
from router.config import RolloutPlan
from router.guardrails import Guard, Verdict, Watch
from router.notify import Notifier
from router.proxy import LiveRoute
from router.stack import (
    ROLLED_BACK,
    Refused,
    RouteState,
    archive_expired,
    halt_ramp,
    rollback,
    with_drill,
)
from router.state import AuditLog, StateError, StateFile, read_records, utc_now
from router.tasks import Background
from router.telemetry import LATENCY_BOUNDS, Histogram

log = logging.getLogger("router.rollout")


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
        if name not in saved:
            new_routes[name] = RouteState.from_config(spec.config, digests_of(spec))
            continue
        state, found, changed = reconcile(spec, RouteState.from_dict(saved[name]))
        notes += found + changed  # at start a changed bundle is a warning: availability first
        states[name] = state
    unknown = {name: value for name, value in saved.items() if name not in catalog.routes}
    for name in unknown:
        notes.append(f"route {name} is in live state but not in the config; its state is kept")
    return Restored(states, notes, new_routes, unknown, replayed)


def reconcile(spec: RouteSpec, state: RouteState) -> tuple[RouteState, list[str], list[str]]:
    """Live state checked against freshly loaded bundles: (state with new versions recorded
    at weight 0, notes on where the config disagrees, notes on bundles changed in place).
    Raises StateError when live state uses a version the bundles folder no longer has."""
    name, digests = spec.name, digests_of(spec)
    used = {state.active, *state.weights} | ({state.candidate} if state.candidate else set())
    missing = sorted(v for v in used if v not in digests)
    if missing:
        raise StateError(
            f"live state of route {name} uses {', '.join(missing)}, which "
            f"{spec.config.bundles} no longer has. Restore those bundle folders; the router "
            "will not guess where that traffic should go"
        )
    changed = [
        f"route {name}: bundle {version} changed since it was first served (digest "
        f"{digest[:12]} -> {digests[version][:12]}); bump its version"
        for version, digest in state.digests.items()
        if version in digests and digests[version] != digest
    ]
    weights = {**dict.fromkeys(digests, 0), **state.weights}
    state = replace(state, weights=weights, digests={**digests, **state.digests})
    configured = RouteState.from_config(spec.config, digests)
    notes = []
    if (configured.active, configured.candidate, _nonzero(configured.weights)) != (
        state.active,
        state.candidate,
        _nonzero(state.weights),
    ):
        notes.append(
            f"route {name}: the config asks for active {configured.active}, candidate "
            f"{configured.candidate}, {configured.describe_weights()}; live state has "
            f"active {state.active}, candidate {state.candidate}, {state.describe_weights()}. "
            "Live state is kept; change it with the admin commands (bundle-router weights, "
            "promote, rollback), not the config"
        )
    return state, notes, changed


def digests_of(spec: RouteSpec) -> dict[str, str]:
    return {version: bundle.digest for version, bundle in spec.bundles.items()}


def _nonzero(weights: Mapping[str, int]) -> dict[str, int]:
    return {version: points for version, points in weights.items() if points}


Move = Callable[[RouteState], RouteState]
WARM_CHECK_SECONDS = 60.0


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
        warm_window: float,
    ) -> None:
        self.routes = routes
        self.guards = dict(guards)
        self.states = dict(restored.states)
        self.unknown_routes = restored.unknown_routes
        self.state_file = state_file
        self.audit = audit
        self.notifier = notifier
        self.check_interval = check_interval
        self.warm_window = warm_window
        self.watches: dict[str, Watch] = {}
        self.trips: dict[tuple[str, str, str], int] = {}  # (route, version, rule) -> count
        self.last_change: dict[str, dict[str, Any]] = {}  # route -> how long its last change took
        self.drill_durations: dict[str, Histogram] = {}  # route -> command to first request
        self.plans: dict[str, RolloutPlan] = {}  # route -> its rollout plan (set by the caller)
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
            await self.add_route(name, state, actor="config", reason="first start")
        self.background.start(self._watch_loop(), "guardrails")
        self.background.start(self._warm_loop(), "warm-window")

    async def close(self) -> None:
        await self.background.stop()
        self.audit.close()

    async def add_route(self, name: str, state: RouteState, *, actor: str, reason: str) -> None:
        """A route with no live state yet starts from its config."""
        await self._apply(
            name,
            lambda _: state,
            actor=actor,
            action="init",
            reason=f"{reason}: initial weights from the config",
        )

    async def change(
        self,
        name: str,
        move: Move,
        *,
        actor: str,
        action: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
        decided: float | None = None,
    ) -> dict[str, Any]:
        """Apply `move` to the route's current state: swap, audit, persist, announce.

        The move runs under the lock, on the state as it is then, so two changes never
        overwrite each other; a move may raise `Refused`. Returns the audit record once it
        is durable. `decided` (a perf_counter reading) is when the change was decided."""

        def on_current(before: RouteState | None) -> RouteState:
            if before is None:
                raise Refused(f"unknown route {name!r}", status=404, code="unknown_route")
            return move(before)

        return await self._apply(
            name,
            on_current,
            actor=actor,
            action=action,
            reason=reason,
            details=details,
            decided=decided,
        )

    async def _apply(
        self,
        name: str,
        compute: Callable[[RouteState | None], RouteState],
        *,
        actor: str,
        action: str,
        reason: str,
        details: Mapping[str, Any] | None = None,
        decided: float | None = None,
    ) -> dict[str, Any]:
        decided = decided if decided is not None else time.perf_counter()
        async with self.lock:
            before = self.states.get(name)
            after = compute(before)
            table = after.table()  # checks the weights before anything changes
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
                "actor": actor,
                "reason": reason,
                "at": record["at"],
                "audit_seq": record["seq"],
                "swapped_at_unix": swapped_at,
                "decision_to_swap_seconds": swapped - decided,
                "decision_to_durable_seconds": time.perf_counter() - decided,
            }
            self._rewatch(name, after, before)
        self.notifier.send(self._message(name, before, after, record))
        return record

    async def checkpoint(self, name: str, update: Move) -> None:
        """Save progress that changes no weight (a ramp's bake time): the state file only,
        no swap, no audit record, no announcement."""
        async with self.lock:
            state = self.states.get(name)
            if state is None:
                return
            after = update(state)
            if dict(after.weights) != dict(state.weights):
                raise ValueError("a checkpoint may not change weights; use change()")
            self.states[name] = after
            await asyncio.to_thread(self._save, self.audit.seq)

    async def note(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        """Audit and announce an event that changes no route's state (a reload, say)."""
        async with self.lock:
            record = await asyncio.to_thread(self.audit.append, dict(entry))
        text = f"{record['action']} by {record['actor']} at {record['at'][11:19]}Z"
        self.notifier.send({"text": f"{text}: {record['reason']}", **record})
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

    def rewatch(self, name: str) -> None:
        """After a reload changed the route's rules: watch again (the evidence starts afresh)."""
        self.watches.pop(name, None)
        state = self.states.get(name)
        if state is not None:
            self._rewatch(name, state)

    def forget(self, name: str) -> None:
        """A route left the config: stop serving its state, but keep it in the state file."""
        self.watches.pop(name, None)
        state = self.states.pop(name, None)
        if state is not None:
            self.unknown_routes[name] = state.as_dict()

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            for name, watch in list(self.watches.items()):
                verdict = watch.check()
                if verdict is not None:
                    await self.trip(name, verdict)

    async def trip(self, name: str, verdict: Verdict) -> dict[str, Any] | None:
        """Drain the canary to 0 (its weight goes to the control) and mark it rolled back."""
        decided = time.perf_counter()
        watched = self.watches.pop(name, None)  # judge once; a person re-enables the canary
        candidate = watched.candidate.version if watched else None
        state, plan = self.states.get(name), self.plans.get(name)
        ramping = state is not None and state.ramp is not None and state.ramp.active
        if ramping and plan is not None and not plan.auto_rollback:
            return await self._halt(name, verdict, decided)

        def drain(state: RouteState) -> RouteState:
            if state.candidate != candidate or not state.canary_live:
                raise Refused("the canary changed while it was judged")
            assert candidate is not None
            weights = dict(state.weights)
            weights[state.active] = weights.get(state.active, 0) + weights[candidate]
            weights[candidate] = 0
            trip = {**verdict.as_dict(), "at": utc_now(), "description": verdict.describe()}
            ramp = state.ramp
            if ramp is not None and ramp.active:
                ramp = replace(ramp, status=ROLLED_BACK, note=f"tripped: {verdict.describe()}")
            return replace(
                state, weights=weights, candidate_state=ROLLED_BACK, trip=trip, ramp=ramp
            )

        try:
            record = await self.change(
                name,
                drain,
                actor="guardrail",
                action="trip",
                reason=f"guardrail {verdict.describe()}",
                details={"verdict": verdict.as_dict()},
                decided=decided,
            )
        except Refused:
            return None  # a person moved first; nothing to drain
        key = (name, str(candidate), verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
        return record

    async def _halt(self, name: str, verdict: Verdict, decided: float) -> dict[str, Any]:
        """The plan says auto_rollback: off. Halt the ramp where it is and alert."""
        reason = f"guardrail {verdict.describe()}"
        key = (name, str(self.states[name].candidate), verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
        return await self.change(
            name,
            lambda state: halt_ramp(state, reason),
            actor="guardrail",
            action="ramp_halt",
            reason=f"{reason}; auto_rollback is off, so the canary keeps its weight",
            details={"verdict": verdict.as_dict()},
            decided=decided,
        )

    async def _warm_loop(self) -> None:
        """Warm versions past `warm_window` move to archived."""
        while True:
            await asyncio.sleep(WARM_CHECK_SECONDS)
            oldest = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - self.warm_window))
            for name, state in list(self.states.items()):
                if archive_expired(state, oldest) is None:
                    continue

                def expire(current: RouteState, oldest: str = oldest) -> RouteState:
                    return archive_expired(current, oldest) or current

                await self.change(
                    name,
                    expire,
                    actor="router",
                    action="archive",
                    reason=f"warm for longer than the warm window ({self.warm_window:g} s)",
                )

    async def drill(
        self, name: str, probe: Callable[[], Awaitable[str]], *, actor: str, started: float
    ) -> dict[str, Any]:
        """A real rollback on the live path, timed, then rolled forward.

        `probe` sends one real request through the proxy and returns the version that
        served it; `started` is when the command arrived (perf_counter)."""
        now = utc_now()
        previous: dict[str, RouteState] = {}
        watched = self.watches.get(name)  # the canary's evidence survives its drill

        def roll_back(state: RouteState) -> RouteState:
            previous["state"] = state
            return rollback(state, now)[0]

        record = await self.change(
            name, roll_back, actor=actor, action="drill", reason="rollback drill", decided=started
        )
        timing = self.last_change[name]
        expected = record["after"]["active"]
        served = await probe()
        first_request = time.perf_counter() - started
        if served != expected:
            raise Refused(
                f"the drill's probe was served by {served}, not {expected}; the rollback did "
                "not take effect on the live path",
                status=500,
                code="drill_failed",
            )
        result = {
            "route": name,
            "rolled_back_to": expected,
            "command_to_swap_seconds": timing["decision_to_swap_seconds"],
            "command_to_durable_seconds": timing["decision_to_durable_seconds"],
            "command_to_first_request_seconds": first_request,
        }
        before = previous["state"]
        self.drill_durations.setdefault(name, Histogram(LATENCY_BOUNDS)).observe(first_request)
        await self.change(
            name,
            lambda _: with_drill(before, now, first_request),
            actor=actor,
            action="drill_forward",
            reason=f"rolled forward after the drill (rollback took {first_request:.3f} s)",
            details={"drill": result},
        )
        if watched is not None and name in self.watches:
            self.watches[name] = watched
        return result

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
        elif record["action"] == "ramp_halt" and after.ramp:
            text = (
                f"{name} rollout of {after.candidate} HALTED at {after.ramp.percent:g}% at "
                f"{clock} by {record['reason']}. Decide: bundle-router rollback {name}, "
                f"or bundle-router rollout resume {name}"
            )
        elif record["action"] in ("promote", "ramp_promote"):
            text = (
                f"{name} {after.active} promoted to 100% at {clock} by {record['actor']} "
                f"({record['reason']})"
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
