"""The change core: each route's live deploy state, and the one function that changes it.

Every change of weights or roles, whatever its source (the config at first start, an
operator, a guardrail trip, the ramp, a drill), goes through `ChangeCore.change`, which

    swaps the route's weight table (one assignment: the next request sees it)
 -> appends an audit record (durable: from here on the change survives a crash)
 -> saves a snapshot of every route's state when one is due (a start replays newer records)
 -> announces it (queued; the webhook never holds anything up)

and returns only once the change is durable (a `router.control.store.Store` does the writing). If
the store refuses, a change that takes risk away (a trip, a rollback) stays in force and is
written as soon as it can; any other change is undone. Batches (first start, reload) go
through `ChangeCore.commit`: durable first, in force after. Changes are serialised by one
asyncio lock; the data path never takes it, it only reads `LiveRoute.table`.

The parts built on the core (`router.control.plane` lists them) call `change` like any other
caller, and hear of every change through `on_change`. `Settings` and `Component` are their
contract. Fleet mode (`router.fleet`) sets `gate`, asked before every change, and hears of
every audit record through `on_record`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from router.background import Background, to_completion
from router.config import RolloutPlan
from router.control.durable import DurabilityError, utc_now
from router.control.guardrails import Guard
from router.control.moves import RouteState
from router.control.notify import Notifier, change_message, event_message
from router.control.restore import Restored
from router.control.store import Store
from router.errors import NotFound
from router.proxy.live import LiveRoute
from router.proxy.routing import WeightTable

log = logging.getLogger("router.rollout")

Move = Callable[[RouteState], RouteState]
# Told of every change once it is in force, under the change lock: (route, before, after);
# `after` is None when the route left the config. It must not block or raise.
Listener = Callable[[str, RouteState | None, RouteState | None], None]
# Told of every audit record of a route change once it is in force (durable or kept in
# memory), under the change lock. Fleet mode uses it to publish trips. Must not block or raise.
Recorder = Callable[[Mapping[str, Any]], None]
# Asked before every change (action, route, details); raises `Refused` to refuse it. Fleet
# mode sets one: a sidecar takes only trips and the fleet's state, a standby controller
# nothing, and a deploy needs a published bundle.
Gate = Callable[[str, str, Mapping[str, Any]], Awaitable[None]]
DURABILITY_RETRY_SECONDS = 1.0
# Changes that take risk away. If the disk cannot take their audit record, they stay in
# force in memory and are written as soon as it can: a rollback is never undone by a full
# disk. Every other change is refused whole instead.
KEPT_IN_MEMORY = frozenset(
    {"trip", "ramp_halt", "rollback", "rollout_abort", "wave_halt", "wave_reverse"}
)
# Changes swapped in before their record is written: the ones above, and a drill, which times
# that path. Every other change is written first and swapped in after, so a change the disk
# refuses never serves a request.
SWAPPED_FIRST = KEPT_IN_MEMORY | {"drill"}


@dataclass(frozen=True, slots=True)
class Settings:
    """What the config says to the control plane; given whole at start and on every reload
    (`ControlPlane.configure`), never assigned piece by piece."""

    guards: Mapping[str, Guard | None]  # route -> its guardrails (None: guardrails off)
    check_interval: float  # seconds between guardrail checks
    plans: Mapping[str, RolloutPlan]  # route -> its rollout plan
    warm_window: float  # seconds a previous active stays warm


class Component:
    """A part of the control plane built on the core (the guardrail watch, the warm window,
    drills, the ramp). It gets the core when it is made and changes state only through
    `ChangeCore.change`. `ControlPlane` calls these hooks in its order (`close` in reverse)."""

    def configure(self, settings: Settings) -> None:
        """New settings, at start (before `start`) and after every reload."""

    def start(self) -> None:
        """Start background work, once the core serves live state."""

    async def close(self) -> None:
        """Stop background work."""


def starting_at(state: RouteState) -> Callable[[RouteState | None], RouteState]:
    """The move of a route that starts (or comes back) with `state`."""
    return lambda _: state


@dataclass(frozen=True, slots=True)
class Change:
    """One route's change in a batch (`ChangeCore.commit`): `move` gets the current state, or
    None for a route with no live state yet."""

    route: str
    move: Callable[[RouteState | None], RouteState]
    action: str
    reason: str
    details: Mapping[str, Any] | None = None


class ChangeCore:
    """The live deploy state of every route, and the only way to change it."""

    def __init__(self, routes: Mapping[str, LiveRoute], store: Store, notifier: Notifier) -> None:
        self.routes = routes
        self.store = store
        self.notifier = notifier
        self._states: dict[str, RouteState] = {}
        self.states: Mapping[str, RouteState] = MappingProxyType(self._states)  # read-only
        self._kept: dict[str, Any] = {}  # routes in the store but not in the config
        self._last_change: dict[str, dict[str, Any]] = {}  # route -> how its last change went
        self._listeners: list[Listener] = []
        self._recorders: list[Recorder] = []
        self.gate: Gate | None = None
        # Whether this process decides changes of its own now (the ramp, the warm window):
        # a standby controller of a fleet does not, until it leads.
        self.decides: Callable[[], bool] = lambda: True
        # The table a route's state is served with. A fleet's sidecar serves its own view of
        # the fleet's state (flipped or not in a rolling release, in the canary pool or not).
        self.table_of: Callable[[str, RouteState], WeightTable] = lambda _, state: state.table()
        self.lock = asyncio.Lock()
        self.background = Background()

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def on_record(self, recorder: Recorder) -> None:
        self._recorders.append(recorder)

    def kept(self, name: str) -> Mapping[str, Any] | None:
        """The saved state of a route that is not in the config (kept, not served)."""
        return self._kept.get(name)

    def last_change(self, name: str) -> dict[str, Any] | None:
        """The route's last change: who, why, and how long it took to swap and to persist."""
        return self._last_change.get(name)

    async def start(self, restored: Restored) -> None:
        """Serve the restored live state, then record first-time routes."""
        self._kept = dict(restored.unknown_routes)
        for name, state in restored.states.items():
            self.routes[name].table = self.table_of(name, state)
            self._states[name] = state
            self._changed(name, None, state)
        if restored.replayed:
            async with self.lock:
                await self.store.save(self._snapshot)
        await self.add_routes(restored.new_routes, actor="config", reason="first start")
        self.background.keep_running(self._durability_loop, "durability")

    async def close(self) -> None:
        await self.background.stop()
        async with self.lock:
            await self.store.close(self._snapshot)

    def forget(self, name: str) -> None:
        """A route left the config: stop serving its state, but keep it in the store."""
        state = self._states.pop(name, None)
        if state is not None:
            self._kept[name] = state.as_dict()
        self._changed(name, state, None)

    def _changed(self, name: str, before: RouteState | None, after: RouteState | None) -> None:
        for listener in self._listeners:
            listener(name, before, after)

    def _recorded(self, record: Mapping[str, Any]) -> None:
        for recorder in self._recorders:
            recorder(record)

    def _snapshot(self) -> dict[str, Any]:
        """Every route's state for the store; routes gone from the config are kept."""
        return {**self._kept, **{n: s.as_dict() for n, s in self._states.items()}}

    async def _durability_loop(self) -> None:
        """Retry what the disk refused until it takes it."""
        while True:
            await asyncio.sleep(DURABILITY_RETRY_SECONDS)
            if self.store.degraded:
                await to_completion(self._flush())

    async def _flush(self) -> None:
        async with self.lock:
            await self.store.flush(self._snapshot)

    # -- changes ------------------------------------------------------------------------

    async def add_routes(
        self, states: Mapping[str, RouteState], *, actor: str, reason: str
    ) -> list[dict[str, Any]]:
        """Routes with no live state yet start from their config: one `init` record each,
        all made durable together."""
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
        announce: bool = True,
    ) -> list[dict[str, Any]]:
        """Several changes as one: durable first, then in force (for first start and reload).

        Under the lock, every move is computed and checked, then all audit records (and
        `note`, an event that changes no route) are made durable together. Only then is
        `install` called (a reload swaps in its new routes there) and each route's table
        swapped. If the store refuses, DurabilityError is raised and nothing has changed.
        `announce=False` leaves the webhook out: a fleet's sidecars apply changes that the
        controller has announced already."""
        return await to_completion(self._commit(changes, actor, install, note, announce))

    async def _commit(
        self,
        changes: Sequence[Change],
        actor: str,
        install: Callable[[], None] | None,
        note: Mapping[str, Any] | None,
        announce: bool = True,
    ) -> list[dict[str, Any]]:
        if not changes and note is None:
            if install is not None:
                install()
            return []
        if self.gate is not None:
            for change in changes:
                await self.gate(change.action, change.route, change.details or {})
            if note is not None:
                await self.gate(str(note.get("action")), "", note)
        async with self.lock:
            befores = {c.route: self._states.get(c.route) for c in changes}
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
                self.routes[name].table = self.table_of(name, after)
                self._states[name] = after
                self._kept.pop(name, None)  # served again: live state, not kept
                self._remember(name, record, time.perf_counter(), time.time(), time.perf_counter())
                self._changed(name, befores[name], after)
                self._recorded(record)
            await self.store.recorded(len(records), len(self._states), self._snapshot)
        for change, record in zip(changes, records, strict=False) if announce else ():
            self.notifier.send(
                change_message(change.route, befores[change.route], afters[change.route], record)
            )
        if note is not None:
            self.notifier.send(event_message(records[-1]))
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
        if self.gate is not None:
            await self.gate(action, name, details)
        async with self.lock:
            before = self._states.get(name)
            if before is None:
                raise NotFound(f"unknown route {name!r}", code="unknown_route")
            after = move(before)
            table = self.table_of(name, after)  # checks the weights before anything changes
            route = self.routes[name]
            entry = self._entry(name, before, after, actor, action, reason, details)
            swap_first = action in SWAPPED_FIRST
            if swap_first:  # taking risk away cannot wait for the disk
                old_table, route.table = route.table, table  # the swap: one assignment
                swapped, swapped_at = time.perf_counter(), time.time()
                self._states[name] = after
            try:
                (record,) = await self.store.append([entry])
            except DurabilityError as exc:
                if action not in KEPT_IN_MEMORY:
                    if swap_first:  # all or nothing: as if it was never asked
                        route.table = old_table
                        self._states[name] = before
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
                    self._states[name] = after
                # The audit record is the commitment: if no snapshot is saved now, the
                # next start replays the record.
                await self.store.recorded(1, len(self._states), self._snapshot)
            self._remember(name, record, decided, swapped_at, swapped)
            self._changed(name, before, after)
            self._recorded(record)
        self.notifier.send(change_message(name, before, after, record))
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
        self._last_change[name] = {
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
        """Save progress that changes no weight (a ramp's bake time): a snapshot only, no
        swap, no audit record, no announcement."""
        await to_completion(self._checkpoint(name, update))

    async def _checkpoint(self, name: str, update: Move) -> None:
        async with self.lock:
            state = self._states.get(name)
            if state is None:
                return
            after = update(state)
            if dict(after.weights) != dict(state.weights):
                raise ValueError("a checkpoint may not change weights; use change()")
            self._states[name] = after
            await self.store.save(self._snapshot)
