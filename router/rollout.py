"""Each route's deploy state, the one change function, and the guardrail watch.

Every change of weights or roles, whatever its source (the config at first start, an
operator, a guardrail trip, the ramp), goes through `Rollouts.change`, which

    swaps the route's weight table (one assignment: the next request sees it)
 -> appends an audit record (fsynced: from here on the change survives a crash)
 -> rewrites the state file when its snapshot is due (a start replays newer records)
 -> announces it (queued; the webhook never holds anything up)

and returns only once the change is durable (`router.store` does the writing). If the
disk refuses, a change that takes risk away (a trip, a rollback) stays in force and is
written as soon as it can; any other change is undone. Batches (first start, reload) go
through `Rollouts.commit`: durable first, in force after. Changes are serialised by one
asyncio lock; the data path never takes it, it only reads `LiveRoute.table`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from router.catalog import Catalog, RouteSpec
from router.config import RolloutPlan
from router.guardrails import Guard, Verdict, Watch
from router.live import LiveRoute
from router.notify import Notifier
from router.stack import (
    HALTED,
    PAUSED,
    Refused,
    RouteState,
    archive_expired,
    drain_candidate,
    halt_ramp,
    rollback,
    with_drill,
)
from router.state import (
    REBUILD,
    AuditLog,
    DurabilityError,
    StateError,
    StateFile,
    read_records,
    utc_now,
)
from router.store import LocalStore
from router.tasks import Background, count_failure, to_completion
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
    difference is reported, never applied silently. Raises StateError, naming the file and
    the way out, for state that breaks the rules or an audit log with records missing."""
    notes = []
    data = state_file.load() or {"audit_seq": 0, "routes": {}}
    repair = audit.open(expect_seq=data["audit_seq"])
    if repair:
        notes.append(f"audit log: {repair}")
    saved: dict[str, Any] = dict(data["routes"])
    source = dict.fromkeys(saved, str(state_file.path))
    replays = []
    for record in read_records(audit.path):
        if record["seq"] > data["audit_seq"] and record.get("after") is not None:
            saved[record["route"]] = record["after"]
            source[record["route"]] = f"{audit.path}, record {record['seq']}"
            replays.append(f"{record['seq']} ({record['action']} on {record['route']})")
    if replays:
        shown = ", ".join(replays[:5]) + (f" and {len(replays) - 5} more" if replays[5:] else "")
        notes.append(f"replayed audit record {shown}, newer than the state file")
    replayed = bool(replays)
    states, new_routes = {}, {}
    for name, spec in catalog.routes.items():
        if name not in saved:
            new_routes[name] = RouteState.from_config(spec.config, digests_of(spec))
            continue
        try:
            loaded = RouteState.from_dict(saved[name])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{source[name]}: the live state of route {name} breaks the rules ({exc}). "
                f"{REBUILD}"
            ) from None
        state, found, changed = reconcile(spec, loaded)
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
DURABILITY_RETRY_SECONDS = 1.0
# Changes that take risk away. If the disk cannot take their audit record, they stay in
# force in memory and are written as soon as it can: a rollback is never undone by a full
# disk. Every other change is refused whole instead.
KEPT_IN_MEMORY = frozenset({"trip", "ramp_halt", "rollback", "rollout_abort"})
# Changes swapped in before their record is written: the ones above, and a drill, which times
# that path. Every other change is written first and swapped in after, so a change the disk
# refuses never serves a request.
SWAPPED_FIRST = KEPT_IN_MEMORY | {"drill"}


def starting_at(state: RouteState) -> Callable[[RouteState | None], RouteState]:
    """The move of a route that starts (or comes back) with `state`."""
    return lambda _: state


@dataclass(frozen=True, slots=True)
class Change:
    """One route's change in a batch (`Rollouts.commit`): `move` gets the current state, or
    None for a route with no live state yet."""

    route: str
    move: Callable[[RouteState | None], RouteState]
    action: str
    reason: str
    details: Mapping[str, Any] | None = None


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
        self.notifier = notifier
        self.check_interval = check_interval
        self.warm_window = warm_window
        self.watches: dict[str, Watch] = {}
        self.trips: dict[tuple[str, str, str], int] = {}  # (route, version, rule) -> count
        self.last_change: dict[str, dict[str, Any]] = {}  # route -> how long its last change took
        self.drill_durations: dict[str, Histogram] = {}  # route -> command to first request
        self.plans: dict[str, RolloutPlan] = {}  # route -> its rollout plan
        self.lock = asyncio.Lock()
        self._restored = restored
        self.background = Background()
        self.store = LocalStore(state_file, audit, notifier, self._snapshot)

    def configure(
        self,
        guards: Mapping[str, Guard | None],
        check_interval: float,
        plans: Mapping[str, RolloutPlan],
        warm_window: float,
    ) -> None:
        """The settings that come from the config, at start and on every reload."""
        self.guards = dict(guards)
        self.check_interval = check_interval
        self.plans = dict(plans)
        self.warm_window = warm_window

    async def start(self) -> None:
        """Serve live state, record first-time routes, and start watching canaries."""
        for name, state in self.states.items():
            self.routes[name].table = state.table()
            self._rewatch(name, state)
        if self._restored.replayed:
            async with self.lock:
                await self.store.save()
        await self.add_routes(self._restored.new_routes, actor="config", reason="first start")
        self.background.keep_running(self._watch_loop, "guardrails")
        self.background.keep_running(self._warm_loop, "warm-window")
        self.background.keep_running(self._durability_loop, "durability")

    async def close(self) -> None:
        await self.background.stop()
        async with self.lock:
            await self.store.close()

    def _snapshot(self) -> dict[str, Any]:
        """Every route's state for the state file; routes gone from the config are kept."""
        return {**self.unknown_routes, **{n: s.as_dict() for n, s in self.states.items()}}

    async def _durability_loop(self) -> None:
        """Retry what the disk refused until it takes it."""
        while True:
            await asyncio.sleep(DURABILITY_RETRY_SECONDS)
            if self.store.degraded:
                await to_completion(self._flush())

    async def _flush(self) -> None:
        async with self.lock:
            await self.store.flush()

    # -- changes ------------------------------------------------------------------------

    async def add_routes(
        self, states: Mapping[str, RouteState], *, actor: str, reason: str
    ) -> list[dict[str, Any]]:
        """Routes with no live state yet start from their config: one `init` record each,
        written with one fsync, and the state file written once."""
        return await self.commit(
            [
                Change(
                    name, starting_at(state), "init", f"{reason}: initial weights from the config"
                )
                for name, state in states.items()
            ],
            actor=actor,
        )

    async def commit(
        self,
        changes: Sequence[Change],
        *,
        actor: str,
        install: Callable[[], None] | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Several changes as one: durable first, then in force (for first start and reload).

        Under the lock, every move is computed and checked, then all audit records (and
        `note`, an event that changes no route) are written with one fsync. Only then is
        `install` called (a reload swaps in its new routes there) and each route's table
        swapped. If the disk refuses, DurabilityError is raised and nothing has changed."""
        return await to_completion(self._commit(changes, actor, install, note))

    async def _commit(
        self,
        changes: Sequence[Change],
        actor: str,
        install: Callable[[], None] | None,
        note: Mapping[str, Any] | None,
    ) -> list[dict[str, Any]]:
        if not changes and note is None:
            if install is not None:
                install()
            return []
        async with self.lock:
            befores = {c.route: self.states.get(c.route) for c in changes}
            afters = {}
            for change in changes:
                afters[change.route] = after = change.move(befores[change.route])
                after.table()  # checks the weights before anything changes
            entries = [
                self._entry(
                    c.route, befores[c.route], afters[c.route], actor, c.action, c.reason, c.details
                )
                for c in changes
            ]
            if note is not None:
                entries.append(dict(note))
            try:
                records = await self.store.append(entries)
            except DurabilityError as exc:
                log.error("refused %s: %s", ", ".join(e["action"] for e in entries), exc)
                raise
            if install is not None:
                install()
            for change, record in zip(changes, records, strict=False):
                name, after = change.route, afters[change.route]
                self.routes[name].table = after.table()
                self.states[name] = after
                self._rewatch(name, after, befores[name])
                self._remember(name, record, time.perf_counter(), time.time(), time.perf_counter())
            await self.store.recorded(len(records), len(self.states))
        for change, record in zip(changes, records, strict=False):
            self.notifier.send(
                self._message(change.route, befores[change.route], afters[change.route], record)
            )
        if note is not None:
            record = records[-1]
            text = f"{record['action']} by {record['actor']} at {record['at'][11:19]}Z"
            self.notifier.send({"text": f"{text}: {record['reason']}", **record})
        return records

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
        is durable. `decided` (a perf_counter reading) is when the change was decided.

        If the disk refuses the audit record, a change in KEPT_IN_MEMORY stays in force and
        is written as soon as the disk takes it (the record returned has `durable: false`);
        any other change is undone and DurabilityError raised."""
        decided = decided if decided is not None else time.perf_counter()
        return await to_completion(
            self._change(name, move, actor, action, reason, details or {}, decided)
        )

    async def _change(
        self,
        name: str,
        move: Move,
        actor: str,
        action: str,
        reason: str,
        details: Mapping[str, Any],
        decided: float,
    ) -> dict[str, Any]:
        async with self.lock:
            before = self.states.get(name)
            if before is None:
                raise Refused(f"unknown route {name!r}", status=404, code="unknown_route")
            after = move(before)
            table = after.table()  # checks the weights before anything changes
            route = self.routes[name]
            entry = self._entry(name, before, after, actor, action, reason, details)
            swap_first = action in SWAPPED_FIRST
            if swap_first:  # taking risk away cannot wait for the disk
                old_table, route.table = route.table, table  # the swap: one assignment
                swapped, swapped_at = time.perf_counter(), time.time()
                self.states[name] = after
            try:
                (record,) = await self.store.append([entry])
            except DurabilityError as exc:
                if action not in KEPT_IN_MEMORY:
                    if swap_first:  # all or nothing: as if it was never asked
                        route.table = old_table
                        self.states[name] = before
                    log.error("refused %s on %s: %s", action, name, exc)
                    raise
                self.store.keep(entry, exc)
                log.error(
                    "%s on %s is in force in memory, but NOT durable yet: %s", action, name, exc
                )
                record = {
                    "seq": None,
                    **entry,
                    "durable": False,
                    "warning": f"in force, but not durable yet: {exc}",
                }
            else:
                if not swap_first:  # durable first, then in force
                    route.table = table
                    swapped, swapped_at = time.perf_counter(), time.time()
                    self.states[name] = after
                # The audit record is the commitment: if the state file is not written
                # now, the next start replays the record into it.
                await self.store.recorded(1, len(self.states))
            self._remember(name, record, decided, swapped_at, swapped)
            self._rewatch(name, after, before)
        self.notifier.send(self._message(name, before, after, record))
        return record

    @staticmethod
    def _entry(
        name: str,
        before: RouteState | None,
        after: RouteState,
        actor: str,
        action: str,
        reason: str,
        details: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        return {
            "at": utc_now(),  # when decided: a record kept in memory is written later
            "action": action,
            "actor": actor,
            "route": name,
            "reason": reason,
            "before": before.as_dict() if before else None,
            "after": after.as_dict(),
            "details": dict(details or {}),
        }

    def _remember(
        self,
        name: str,
        record: Mapping[str, Any],
        decided: float,
        swapped_at: float,
        swapped: float,
    ) -> None:
        self.last_change[name] = {
            "action": record["action"],
            "actor": record["actor"],
            "reason": record["reason"],
            "at": record["at"],
            "audit_seq": record["seq"],
            "durable": record.get("durable", True),
            "swapped_at_unix": swapped_at,
            "decision_to_swap_seconds": swapped - decided,
            "decision_to_durable_seconds": time.perf_counter() - decided,
        }

    async def checkpoint(self, name: str, update: Move) -> None:
        """Save progress that changes no weight (a ramp's bake time): the state file only,
        no swap, no audit record, no announcement."""
        await to_completion(self._checkpoint(name, update))

    async def _checkpoint(self, name: str, update: Move) -> None:
        async with self.lock:
            state = self.states.get(name)
            if state is None:
                return
            after = update(state)
            if dict(after.weights) != dict(state.weights):
                raise ValueError("a checkpoint may not change weights; use change()")
            self.states[name] = after
            await self.store.save()

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

    # -- the loops ----------------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """Judge every watched canary. One route's failure is logged, counted and skipped:
        it never stops the others' guardrails."""
        while True:
            await asyncio.sleep(self.check_interval)
            for name, watch in list(self.watches.items()):
                try:
                    verdict = watch.check()
                    if verdict is not None:
                        await self.trip(name, verdict)
                except Exception:
                    count_failure("guardrails")
                    log.exception("guardrails of route %s: the check failed; retrying", name)

    async def trip(self, name: str, verdict: Verdict) -> dict[str, Any] | None:
        """Drain the canary to 0 (its weight goes to the control) and mark it rolled back."""
        decided = time.perf_counter()
        watched = self.watches.pop(name, None)  # judge once; a person re-enables the canary
        candidate = watched.candidate.version if watched else None
        state, plan = self.states.get(name), self.plans.get(name)
        ramping = state is not None and state.ramp is not None and state.ramp.active
        if ramping and plan is not None and not plan.auto_rollback:
            try:
                return await self._halt(name, verdict, decided)
            except Exception:
                if watched is not None:  # not halted: keep judging it
                    self.watches.setdefault(name, watched)
                raise

        def drain(state: RouteState) -> RouteState:
            if state.candidate != candidate or not state.canary_live:
                raise Refused("the canary changed while it was judged")
            trip = {**verdict.as_dict(), "at": utc_now(), "description": verdict.describe()}
            return drain_candidate(state, trip)

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
        except Exception:
            if watched is not None:  # not drained: keep judging it
                self.watches.setdefault(name, watched)
            raise
        key = (name, str(candidate), verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
        return record

    async def _halt(self, name: str, verdict: Verdict, decided: float) -> dict[str, Any]:
        """The plan says auto_rollback: off. Halt the ramp where it is and alert."""
        reason = f"guardrail {verdict.describe()}"
        candidate = str(self.states[name].candidate)

        def halt(state: RouteState) -> RouteState:
            ramp = state.ramp
            if ramp is not None and ramp.status in (PAUSED, HALTED):  # already stopped:
                return replace(state, ramp=replace(ramp, note=reason))  # record the breach
            return halt_ramp(state, reason)

        record = await self.change(
            name,
            halt,
            actor="guardrail",
            action="ramp_halt",
            reason=f"{reason}; auto_rollback is off, so the canary keeps its weight",
            details={"verdict": verdict.as_dict()},
            decided=decided,
        )
        key = (name, candidate, verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
        return record

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

                try:
                    await self.change(
                        name,
                        expire,
                        actor="router",
                        action="archive",
                        reason=f"warm for longer than the warm window ({self.warm_window:g} s)",
                    )
                except Exception:  # a full disk, say: archiving waits for the next round
                    count_failure("warm-window")
                    log.exception("warm window of route %s: archiving failed; retrying", name)

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
        try:
            await self.change(
                name,
                lambda _: with_drill(before, now, first_request),
                actor=actor,
                action="drill_forward",
                reason=f"rolled forward after the drill (rollback took {first_request:.3f} s)",
                details={"drill": result},
            )
        except DurabilityError as exc:
            raise Refused(
                f"the drill rolled {name} back, but rolling forward could not be made durable "
                f"({exc}); the route stays rolled back, which is safe. Once the disk has room, "
                f"restore the weights with bundle-router weights {name} ...",
                status=503,
                code="state_not_durable",
            ) from None
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
