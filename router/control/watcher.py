"""The guardrail watch: judges every live canary and trips the one that breaks a rule.

A canary is watched from the moment it (re)starts: the evidence is what both versions
counted since then (`router.control.guardrails.Watch`). Every `check_interval` the watch loop asks
each watch for a verdict; a tripped rule drains the canary to 0 through the change function
(`moves.trip_candidate`), or, when the route's rollout plan says `auto_rollback: off` and a
ramp is in progress, halts the ramp and alerts (`moves.halt_on_breach`). A canary is judged
once: after a trip it is not watched until a person gives it weight again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from router.background import Background, count_failure
from router.config import RolloutPlan
from router.control.core import ChangeCore, Component, Settings
from router.control.durable import utc_now
from router.control.guardrails import Guard, Verdict, Watch, local_floor
from router.control.moves import RouteState, halt_on_breach, trip_candidate
from router.errors import NotFound, Refused
from router.proxy.live import LiveRoute

log = logging.getLogger("router.watcher")


class Watcher(Component):
    def __init__(self, core: ChangeCore, routes: Mapping[str, LiveRoute]) -> None:
        self.core = core
        self.routes = routes
        self.guards: dict[str, Guard | None] = {}
        self.plans: dict[str, RolloutPlan] = {}
        self.check_interval = 0.1
        # A fleet's sidecar judges at alpha / floor_split: a floor under the controller's
        # pooled judge (config fleet.local_floor_split; 1 elsewhere).
        self.floor_split = 1
        self.watches: dict[str, Watch] = {}
        self.trips: dict[tuple[str, str, str], int] = {}  # (route, version, rule) -> count
        # Routes another judge watches now: a fleet's rolling release judges each group.
        self.defers: Callable[[str], bool] = lambda _: False
        self.background = Background()

    def configure(self, settings: Settings) -> None:
        """New rules, or fresh counters for a watched version (a reload changed its price):
        watch again, or the guardrails would judge counters no request updates. Called with
        the new routes already in place."""
        old_rules = {n: g.rules if g else None for n, g in self.guards.items()}
        self.guards = {
            name: local_floor(guard.rules, self.floor_split)
            if guard and self.floor_split > 1
            else guard
            for name, guard in settings.guards.items()
        }
        self.plans = dict(settings.plans)
        self.check_interval = settings.check_interval
        for name, route in self.routes.items():
            guard, watch = self.guards.get(name), self.watches.get(name)
            counters = {t.stats for t in route.targets.values()}
            stale = watch is not None and not {watch.candidate, watch.control} <= counters
            if stale or old_rules.get(name) != (guard.rules if guard else None):
                self.rewatch(name)

    def start(self) -> None:
        self.background.keep_running(self._loop, "guardrails")

    async def close(self) -> None:
        await self.background.stop()

    # -- what others read ----------------------------------------------------------------

    def guarded(self, name: str) -> bool:
        return self.guards.get(name) is not None

    def verdicts(self, name: str) -> list[Verdict] | None:
        """Each rule's verdict on the route's canary; None when no canary is watched."""
        watch = self.watches.get(name)
        return watch.verdicts() if watch else None

    @contextlib.contextmanager
    def evidence_kept(self, name: str) -> Iterator[None]:
        """The canary's evidence survives what happens inside (a drill rolls it back and
        forward); if that fails, the canary is watched as the changes left it."""
        watched = self.watches.get(name)
        yield
        if watched is not None and name in self.watches:
            self.watches[name] = watched

    # -- following changes ---------------------------------------------------------------

    def changed(self, name: str, before: RouteState | None, after: RouteState | None) -> None:
        """Watch a live canary from the moment it (re)starts; stop watching a finished one,
        or a route that left the config."""
        guard = self.guards.get(name)
        if after is None or guard is None or not after.canary_live or after.candidate is None:
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
        """Watch again, the evidence starting afresh."""
        self.watches.pop(name, None)
        state = self.core.states.get(name)
        if state is not None:
            self.changed(name, None, state)

    # -- judging -------------------------------------------------------------------------

    async def _loop(self) -> None:
        """Judge every watched canary. One route's failure is logged, counted and skipped:
        it never stops the others' guardrails."""
        while True:
            await asyncio.sleep(self.check_interval)
            if not self.core.decides():  # a fleet's standby controller: the leader judges
                continue
            for name, watch in list(self.watches.items()):
                if self.defers(name):
                    continue
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
        state, plan = self.core.states.get(name), self.plans.get(name)
        ramping = state is not None and state.ramp is not None and state.ramp.active
        if ramping and plan is not None and not plan.auto_rollback:
            try:
                return await self._halt(name, verdict, decided)
            except Exception:
                if watched is not None:  # not halted: keep judging it
                    self.watches.setdefault(name, watched)
                raise

        def drain(state: RouteState) -> RouteState:
            trip = {**verdict.as_dict(), "at": utc_now(), "description": verdict.describe()}
            return trip_candidate(state, candidate, trip)

        try:
            record = await self.core.change(
                name,
                drain,
                actor="guardrail",
                action="trip",
                reason=f"guardrail {verdict.describe()}",
                details={"verdict": verdict.as_dict()},
                decided=decided,
            )
        except (Refused, NotFound):  # the canary changed, or a reload removed its route
            return None  # a person moved first; nothing to drain
        except Exception:
            if watched is not None:  # not drained: keep judging it
                self.watches.setdefault(name, watched)
            raise
        self._count(name, str(candidate), verdict)
        return record

    async def _halt(self, name: str, verdict: Verdict, decided: float) -> dict[str, Any]:
        """The plan says auto_rollback: off. Halt the ramp where it is and alert."""
        reason = f"guardrail {verdict.describe()}"
        candidate = str(self.core.states[name].candidate)
        record = await self.core.change(
            name,
            lambda state: halt_on_breach(state, reason),
            actor="guardrail",
            action="ramp_halt",
            reason=f"{reason}; auto_rollback is off, so the canary keeps its weight",
            details={"verdict": verdict.as_dict()},
            decided=decided,
        )
        self._count(name, candidate, verdict)
        return record

    def _count(self, name: str, candidate: str, verdict: Verdict) -> None:
        key = (name, candidate, verdict.rule)
        self.trips[key] = self.trips.get(key, 0) + 1
