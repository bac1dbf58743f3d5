"""The canary ramp: walks a candidate up its rollout plan's steps, gated by the guardrails.

Every `TICK` seconds, for each route whose rollout is running:

- the step bakes: `baked` grows by the time since the last tick (so a pause, or the time
  the router was down, never counts as bake), checkpointed to the state file every
  `CHECKPOINT` seconds so that a restart resumes the same step with the bake it had;
- when the bake is done, the step moves up only if the candidate answered at least the
  plan's `min_samples` requests at this step *and* every guardrail has its samples and
  passes. Otherwise the bake is extended, and `status` says what it waits for: the ramp
  never advances blind;
- the last step promotes the candidate (or, with `auto_promote: false`, holds for a person).

A breach is the guardrails' business (`Watcher.trip`): it rolls the candidate back and
ends the ramp, or with `auto_rollback: false` halts the ramp and alerts. Every step change
goes through the change function, so it is audited and announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from router.background import Background, count_failure
from router.config import RolloutPlan
from router.control.core import ChangeCore, Component, Settings
from router.control.durable import utc_now
from router.control.moves import (
    CANARY,
    RUNNING,
    RouteState,
    abort_ramp,
    hold_ramp,
    pause_ramp,
    promote,
    resume_ramp,
    start_ramp,
    step_ramp,
)
from router.control.watcher import Watcher
from router.errors import Refused
from router.proxy.live import LiveRoute

log = logging.getLogger("router.ramp")
TICK = 0.25  # seconds
CHECKPOINT = 5.0  # seconds between saves of the bake time


@dataclass(slots=True)
class StepProgress:
    """What this process has seen of the current step (not durable: evidence is in memory)."""

    step: int
    requests_at_start: int
    baked: float
    last_tick: float
    last_checkpoint: float
    waiting_for: str | None = None


class Rollouts(Component):
    def __init__(self, core: ChangeCore, watcher: Watcher, routes: Mapping[str, LiveRoute]) -> None:
        self.core = core
        self.watcher = watcher
        self.routes = routes
        self.plans: dict[str, RolloutPlan] = {}
        self.progress: dict[str, StepProgress] = {}
        self.background = Background()
        # Fleet mode: what follows the canary when the plan has waves (the controller's
        # rolling releases). Called with (route, plan, how the canary passed).
        self.next_phase: Callable[[str, RolloutPlan, str], Awaitable[Any]] | None = None

    def configure(self, settings: Settings) -> None:
        self.plans = dict(settings.plans)

    def start(self) -> None:
        self.background.keep_running(self._loop, "ramp")

    async def close(self) -> None:
        await self.background.stop()

    def plan(self, name: str) -> RolloutPlan:
        return self.plans.get(name) or RolloutPlan()

    # -- commands --------------------------------------------------------------------------

    async def command(self, name: str, action: str, *, actor: str, reason: str) -> dict[str, Any]:
        plan = self.plan(name)
        if action == "start" and plan.steps[0] >= 100 and self._waves(plan):
            assert self.next_phase is not None
            return dict(await self.next_phase(name, plan, f"rollout started by {actor}"))
        moves = {
            "start": lambda state: start_ramp(state, plan.steps[0], utc_now(), plan.canary_pool),
            "pause": pause_ramp,
            "resume": resume_ramp,
            "abort": abort_ramp,
        }
        record = await self.core.change(
            name, moves[action], actor=actor, action=f"rollout_{action}", reason=reason
        )
        self.progress.pop(name, None)  # a new step, or a resumed one, is measured afresh
        return record

    # -- the controller --------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if not self.core.decides():
                continue
            for name, state in list(self.core.states.items()):
                ramp = state.ramp
                if ramp is not None and ramp.status == RUNNING and ramp.phase == CANARY:
                    try:
                        await self._tick(name, state)
                    except Exception:  # one route's trouble must not stop the others' ramps
                        count_failure("ramp")
                        log.exception("rollout of %s: tick failed", name)
                else:
                    self.progress.pop(name, None)

    def _candidate_requests(self, name: str, state: RouteState) -> int:
        target = self.routes[name].targets.get(state.candidate or "")
        return sum(target.stats.outcomes) if target else 0

    async def _tick(self, name: str, state: RouteState) -> None:
        ramp = state.ramp
        assert ramp is not None
        now = time.monotonic()
        progress = self.progress.get(name)
        if progress is None or progress.step != ramp.step:
            progress = StepProgress(
                ramp.step, self._candidate_requests(name, state), ramp.baked, now, now
            )
            self.progress[name] = progress
        progress.baked += now - progress.last_tick
        progress.last_tick = now
        plan = self.plan(name)
        samples = self._candidate_requests(name, state) - progress.requests_at_start
        waiting = self._waiting_for(name, samples, plan)
        if progress.baked < plan.bake_of(ramp.step):
            progress.waiting_for = None
        elif waiting:
            if progress.waiting_for is None:
                log.info("rollout of %s: bake extended at %g%%: %s", name, ramp.percent, waiting)
            progress.waiting_for = waiting
        else:
            await self._advance(name, state, plan, progress)
            return
        if now - progress.last_checkpoint >= CHECKPOINT:
            progress.last_checkpoint = now
            baked = progress.baked

            def save(current: RouteState) -> RouteState:
                if current.ramp is None or current.ramp.step != ramp.step:
                    return current
                return replace(current, ramp=replace(current.ramp, baked=baked))

            await self.core.checkpoint(name, save)

    def _waiting_for(self, name: str, samples: int, plan: RolloutPlan) -> str | None:
        """What keeps the step from moving up, in words; None when nothing does."""
        reasons = []
        if samples < plan.min_samples:
            reasons.append(f"{samples}/{plan.min_samples} answers at this step")
        verdicts = self.watcher.verdicts(name)
        if verdicts is None and self.watcher.guarded(name):
            reasons.append("the guardrails are not watching")
        for verdict in verdicts or []:
            if verdict.silent:  # no tool calls or feedback on either version: nothing to judge
                continue
            if verdict.waiting:
                reasons.append(f"{verdict.rule} {verdict.samples}/{verdict.min_samples}")
            elif verdict.tripped:
                reasons.append(f"{verdict.rule} over its limit")
        if not reasons:
            return None
        return "too little traffic to judge: " + ", ".join(reasons)

    async def _advance(
        self, name: str, state: RouteState, plan: RolloutPlan, progress: StepProgress
    ) -> None:
        ramp = state.ramp
        assert ramp is not None
        baked = f"baked {progress.baked:.0f}s at {ramp.percent:g}%"
        following = [(i, p) for i, p in enumerate(plan.steps) if i > ramp.step and p < 100]
        self.progress.pop(name, None)
        if not following and self._waves(plan):
            assert self.next_phase is not None
            try:
                await self.next_phase(name, plan, f"canary {baked}, every gate passed")
            except Refused as exc:  # no sidecar to flip yet: wait at this step, and say why
                progress.waiting_for = str(exc)
                self.progress[name] = progress
        elif following:
            step, percent = following[0]
            await self.core.change(
                name,
                lambda current: step_ramp(current, step, percent),
                actor="rollout",
                action="ramp_step",
                reason=f"{baked}, every gate passed; up to {percent:g}%",
            )
        elif plan.auto_promote:
            now = utc_now()
            await self.core.change(
                name,
                lambda current: promote(current, now),
                actor="rollout",
                action="ramp_promote",
                reason=f"{baked}, every gate passed; promoted to 100%",
            )
        else:
            note = f"{baked}; auto_promote is off: bundle-router promote {name}"
            await self.core.change(
                name,
                lambda current: hold_ramp(current, note),
                actor="rollout",
                action="ramp_hold",
                reason=note,
            )

    def _waves(self, plan: RolloutPlan) -> bool:
        """The plan goes on in waves, and this process runs them (a fleet's controller)."""
        return plan.waves is not None and self.next_phase is not None

    def describe(self, name: str) -> dict[str, Any] | None:
        """The ramp of a route for `status`: step, bake, what it waits for."""
        state = self.core.states.get(name)
        if state is None or state.ramp is None:
            return None
        ramp, plan = state.ramp, self.plan(name)
        progress = self.progress.get(name)
        baked = progress.baked if progress and progress.step == ramp.step else ramp.baked
        return {
            **ramp.as_dict(),
            "baked": baked,
            "bake": plan.bake_of(ramp.step)
            if ramp.step < len(plan.bake) or len(plan.bake) == 1
            else None,
            "steps": plan.steps,
            "waiting_for": progress.waiting_for if progress else None,
        }
