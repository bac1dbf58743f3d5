"""The rolling phase of a rollout, run by the leading controller: flip the fleet wave by wave.

Every `TICK`, for each route whose ramp is in its `waves` phase and running:

    judge    every group with flipped instances: the new version's answers there since the
             group's first flip, against the old version's in the same group (the whole
             fleet's once the group has no unflipped instance left), with the route's
             guardrails (`Guard.judge`) on the fleet's pooled counts (`Pool.totals`)
    halt     a group past a threshold halts the release before the next wave (`wave_halt`,
             naming the group); with `auto_rollback: reverse` the flipped instances flip back
             at once, the breached group's first (`wave_reverse` twice), and the candidate is
             drained. Groups that never flipped never serve the version
    bake     the current wave bakes `bake` seconds (a pause or a controller restart does not
             count; the bake is checkpointed), and needs `min_samples` answers on the new
             version in its group and every rule's samples: then `wave_baked`, and the next
             wave flips (`wave_start`); after the last, the candidate is promoted
    reverse  `rollback --rolling` walks the flipped waves back, the newest first, baking
             `reverse_bake` between them; the candidate is drained when none is left

Evidence lives in this process's memory (the baselines of the groups): a controller that
takes over judges the groups afresh, and the bake it resumes is the durable one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from router.background import Background, count_failure
from router.config import RolloutPlan, WavePlan
from router.control.core import ChangeCore
from router.control.durable import utc_now
from router.control.guardrails import Guard, Verdict
from router.control.moves import (
    FORWARD,
    HALTED,
    PAUSED,
    REVERSE,
    RUNNING,
    WAVES,
    RouteState,
    Waves,
    drain_candidate,
    expect_waves,
    halt_waves,
    promote,
    start_waves,
    with_waves,
)
from router.errors import Refused
from router.fleet.waves import describe_plan, plan_waves
from router.proxy.telemetry import Totals

log = logging.getLogger("router.waves")
TICK = 0.25  # seconds
CHECKPOINT = 5.0  # seconds between saves of the bake time
Where = Callable[[Mapping[str, str]], bool]


class Evidence(Protocol):
    """The fleet's pooled counts (router.fleet.pool.Pool)."""

    def totals(self, route: str, version: str, where: Where | None = None) -> Totals: ...


@dataclass(slots=True)
class Baseline:
    """A group's counts when this process began judging it."""

    candidate: Totals
    control_group: Totals
    control_fleet: Totals


@dataclass(slots=True)
class WaveProgress:
    """What this process has seen of the current wave (not durable, but `baked` is saved)."""

    done: int
    direction: str
    samples_at_start: int
    baked: float
    last_tick: float
    last_checkpoint: float
    waiting_for: str | None = None


def _in(instances: list[str]) -> Where:
    members = frozenset(instances)
    return lambda labels: labels.get("instance") in members


class RollingReleases:
    """The rolling phase's controller. `sidecars` lists the live sidecars' labels."""

    def __init__(
        self,
        core: ChangeCore,
        evidence: Evidence,
        plans: Callable[[str], RolloutPlan],
        guards: Callable[[str], Guard | None],
        sidecars: Callable[[], Any],
        leading: Callable[[], bool],
    ) -> None:
        self.core = core
        self.evidence = evidence
        self.plans = plans
        self.guards = guards
        self.sidecars = sidecars  # async: the live sidecars' labels
        self.leading = leading
        self.baselines: dict[tuple[str, str], Baseline] = {}
        self.progress: dict[str, WaveProgress] = {}
        self.health: dict[str, dict[str, list[Verdict]]] = {}  # route -> group -> verdicts
        self.decided: dict[str, float] = {}  # route -> when its halt was decided (perf_counter)
        self.background = Background()

    def start(self) -> None:
        self.background.keep_running(self._loop, "waves")

    async def close(self) -> None:
        await self.background.stop()

    # -- the phase starts ------------------------------------------------------------------

    async def begin(self, name: str, plan: RolloutPlan, why: str) -> dict[str, Any]:
        """The canary passed (`why` says how): plan the waves over the live sidecars and
        start the rolling phase. Raises Refused (no candidate, no sidecar)."""
        waves_plan = plan.waves
        assert waves_plan is not None
        state = self.core.states[name]
        candidate = state.candidate
        sidecars = await self.sidecars()
        planned = plan_waves(name, sidecars, waves_plan)
        if not planned:
            raise Refused(
                "no live sidecar reports to this fleet, so there is nothing to flip yet: "
                "start the sidecars (a rollout whose canary passed tries again on its own; "
                "otherwise run rollout start again)",
                code="no_sidecars",
            )
        waves = Waves(
            to=str(candidate),
            leaving=state.active,
            plan=planned,
            session_max_age=waves_plan.session_max_age,
            session_idle=waves_plan.session_idle,
        )
        now = utc_now()
        return await self.core.change(
            name,
            lambda current: start_waves(current, waves, now),
            actor="rollout",
            action="waves_start",
            reason=f"{why}; rolling {candidate} out in {len(planned)} waves by "
            f"{waves_plan.order}: {describe_plan(planned)}",
            details={"plan": [{"group": g, "instances": list(i)} for g, i in planned]},
        )

    # -- the loop ----------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            if not self.leading():
                self.progress.clear()
                self.baselines.clear()
                continue
            for name, state in list(self.core.states.items()):
                ramp = state.ramp
                if ramp is None or ramp.phase != WAVES or not ramp.active or ramp.waves is None:
                    self._forget(name)
                    continue
                try:
                    await self._step(name, state, ramp.status, ramp.waves)
                except Refused as exc:  # a person (or a takeover) moved first: decide again
                    log.info("rolling release of %s: %s", name, exc)
                except Exception:  # one route's trouble must not stop the others' waves
                    count_failure("waves")
                    log.exception("rolling release of %s: tick failed", name)

    async def _step(self, name: str, state: RouteState, status: str, waves: Waves) -> None:
        plan = self.plans(name).waves or WavePlan()
        if status == HALTED:
            self.progress.pop(name, None)
            if waves.direction == REVERSE and waves.halted_group is not None:
                await self._reverse_halted(name, waves)  # a halt's reverse-roll, to the end
            else:
                self._forget(name)  # a person decides; a resume judges afresh
            return
        if status == PAUSED:
            # A pause stops the waves and their bake, not the judging.
            self.progress.pop(name, None)
            if waves.direction == FORWARD:
                breach = self._judge(name, waves)
                if breach is not None:
                    await self._breach(name, waves, plan, *breach)
            return
        if status == RUNNING:
            await self._tick(name, state, waves, plan)

    def _forget(self, name: str) -> None:
        self.progress.pop(name, None)
        self.health.pop(name, None)
        for key in [k for k in self.baselines if k[0] == name]:
            del self.baselines[key]

    async def _tick(self, name: str, state: RouteState, waves: Waves, plan: WavePlan) -> None:
        now = time.monotonic()
        progress = self.progress.get(name)
        if progress is None or (progress.done, progress.direction) != (
            waves.done,
            waves.direction,
        ):
            ramp = state.ramp
            assert ramp is not None
            progress = WaveProgress(
                waves.done, waves.direction, self._samples(name, waves), ramp.baked, now, now
            )
            self.progress[name] = progress
        progress.baked += now - progress.last_tick
        progress.last_tick = now
        if waves.direction == FORWARD:
            breach = self._judge(name, waves)
            if breach is not None:
                await self._breach(name, waves, plan, *breach)
                return
            if waves.done == 0:
                await self._flip(name, waves)
                return
            waiting = self._waiting_for(name, waves, plan, progress)
            if progress.baked >= plan.bake and waiting is None:
                await self._baked(name, waves, progress)
                return
            progress.waiting_for = waiting if progress.baked >= plan.bake else None
        elif waves.walked == 0 or progress.baked >= plan.reverse_bake:
            await self._walk_back(name, waves)  # the first wave at once, then one a bake
            return
        if now - progress.last_checkpoint >= CHECKPOINT:
            progress.last_checkpoint = now
            await self._checkpoint(name, waves, progress.baked)

    async def _checkpoint(self, name: str, waves: Waves, baked: float) -> None:
        def save(current: RouteState) -> RouteState:
            ramp = current.ramp
            if ramp is None or ramp.waves is None or ramp.waves.done != waves.done:
                return current
            return replace(current, ramp=replace(ramp, baked=baked))

        await self.core.checkpoint(name, save)

    # -- evidence -----------------------------------------------------------------------------

    def _samples(self, name: str, waves: Waves) -> int:
        """Answers of the new version on the current wave's own instances so far."""
        if waves.done == 0:
            return 0
        instances = list(waves.plan[waves.done - 1][1])
        return self.evidence.totals(name, waves.to, _in(instances)).requests

    def _verdicts(self, name: str, waves: Waves, group: str) -> list[Verdict] | None:
        route_guard = self.guards(name)
        if route_guard is None:
            return None
        # The groups share one false-trip budget: each judges at alpha / (groups + 1), so
        # all of them together stay under the route's alpha (docs/fleet.md).
        guard = Guard(route_guard.rules, split=len(waves.groups()) + 1)
        planned = waves.planned(group)
        candidate = self.evidence.totals(name, waves.to, _in(planned))
        control_group = self.evidence.totals(name, waves.leaving, _in(planned))
        control_fleet = self.evidence.totals(name, waves.leaving)
        base = self.baselines.setdefault(
            (name, group), Baseline(candidate, control_group, control_fleet)
        )
        whole = len(waves.flipped_in(group)) == len(planned)  # no unflipped control left
        control = (
            control_fleet.since(base.control_fleet)
            if whole
            else control_group.since(base.control_group)
        )
        return guard.judge(candidate.since(base.candidate), control)

    def _judge(self, name: str, waves: Waves) -> tuple[str, Verdict] | None:
        """Every flipped group's gauge; the first breach, if any."""
        health: dict[str, list[Verdict]] = {}
        breach = None
        for group in waves.groups():
            if not waves.flipped_in(group):
                continue
            verdicts = self._verdicts(name, waves, group) or []
            health[group] = verdicts
            tripped = next((v for v in verdicts if v.tripped), None)
            if tripped is not None and breach is None:
                breach = (group, tripped)
        self.health[name] = health
        return breach

    def _waiting_for(
        self, name: str, waves: Waves, plan: WavePlan, progress: WaveProgress
    ) -> str | None:
        """What keeps the next wave back, in words; None when nothing does."""
        group = waves.plan[waves.done - 1][0]
        samples = self._samples(name, waves) - progress.samples_at_start
        reasons = []
        if samples < plan.min_samples:
            reasons.append(f"{samples}/{plan.min_samples} answers on {waves.to} in this wave")
        for verdict in self.health.get(name, {}).get(group, []):
            if verdict.waiting and not verdict.silent:
                reasons.append(f"{verdict.rule} {verdict.samples}/{verdict.min_samples}")
        return "too little traffic to judge: " + ", ".join(reasons) if reasons else None

    # -- moves ----------------------------------------------------------------------------------

    async def _flip(self, name: str, waves: Waves) -> None:
        group, instances = waves.plan[waves.done]
        now = utc_now()
        flipped = (*waves.flipped, *(i for i in instances if i not in waves.flipped))
        after = replace(
            waves,
            done=waves.done + 1,
            flipped=flipped,
            flipped_at={**waves.flipped_at, **dict.fromkeys(instances, now)},
        )
        await self.core.change(
            name,
            lambda current: with_waves(current, after, expected=waves),
            actor="rollout",
            action="wave_start",
            reason=f"wave {waves.done + 1}/{len(waves.plan)}: {group} flips "
            f"{', '.join(instances)} to {waves.to}",
            details={"wave": waves.done + 1, "group": group, "instances": list(instances)},
        )

    async def _baked(self, name: str, waves: Waves, progress: WaveProgress) -> None:
        group = waves.plan[waves.done - 1][0]
        samples = self._samples(name, waves) - progress.samples_at_start
        verdicts = self.health.get(name, {}).get(group, [])
        passed = ", ".join(v.describe() for v in verdicts if not v.silent) or "no rules"
        note = (
            f"wave {waves.done}/{len(waves.plan)} ({group}) baked {progress.baked:.0f}s, "
            f"{samples} answers on {waves.to}; every gate passed: {passed}"
        )
        self.progress.pop(name, None)
        await self.core.change(
            name,
            lambda current: expect_waves(current, waves, RUNNING),
            actor="rollout",
            action="wave_baked",
            reason=note,
            details={
                "wave": waves.done,
                "group": group,
                "baked": progress.baked,
                "samples": samples,
                "verdicts": [v.as_dict() for v in verdicts],
            },
        )
        if waves.done < len(waves.plan):
            await self._flip(name, waves)
            return
        now = utc_now()
        await self.core.change(
            name,
            lambda current: promote(expect_waves(current, waves, RUNNING), now),
            actor="rollout",
            action="ramp_promote",
            reason=f"all {len(waves.plan)} waves baked; {waves.to} is active everywhere",
        )

    async def _breach(
        self, name: str, waves: Waves, plan: WavePlan, group: str, verdict: Verdict
    ) -> None:
        """Halt before the next wave. With `auto_rollback: reverse` the halted release walks
        back at once (`_reverse_halted`, also after a restart or a takeover)."""
        never = [g for g in waves.groups() if not waves.flipped_in(g)]
        reason = (
            f"{group}: guardrail {verdict.describe()} on {waves.to}; halted before wave "
            f"{waves.done + 1}" + (f"; {', '.join(never)} never received it" if never else "")
        )
        log.error("rolling release of %s halted: %s", name, reason)
        reverse = plan.auto_rollback == "reverse"
        halted = replace(waves, halted_group=group, direction=REVERSE if reverse else FORWARD)
        self.decided[name] = time.perf_counter()
        await self.core.change(
            name,
            lambda current: halt_waves(current, halted, reason, expected=waves),
            actor="guardrail",
            action="wave_halt",
            reason=reason + ("; flipping back" if reverse else "; auto_rollback is halt"),
            details={"group": group, "verdict": verdict.as_dict(), "never_flipped": never},
            decided=self.decided[name],
        )
        if reverse:
            state = self.core.states[name]
            if state.ramp is not None and state.ramp.waves is not None:
                await self._reverse_halted(name, state.ramp.waves)

    async def _reverse_halted(self, name: str, waves: Waves) -> None:
        """A halt's reverse-roll: the breached group's flipped instances first, then every
        other one with the candidate drained. Each step is decided on the state as it is,
        so a controller that restarts or takes over in between finishes it."""
        group = str(waves.halted_group)
        decided = self.decided.pop(name, time.perf_counter())
        breached = waves.flipped_in(group)
        if breached:
            back = replace(waves, flipped=tuple(i for i in waves.flipped if i not in breached))
            await self.core.change(
                name,
                lambda current: with_waves(current, back, expected=waves, statuses=(HALTED,)),
                actor="guardrail",
                action="wave_reverse",
                reason=f"{group} flips back to {waves.leaving}: {', '.join(breached)}",
                details={"group": group, "instances": breached},
                decided=decided,
            )
            waves = back
        rest = list(waves.flipped)
        done = replace(waves, flipped=())
        trip = {"rule": "wave_halt", "at": utc_now(), "description": f"halted in {group}"}
        await self.core.change(
            name,
            lambda current: drain_candidate(
                with_waves(current, done, expected=waves, statuses=(HALTED,)), trip
            ),
            actor="guardrail",
            action="wave_reverse",
            reason=f"every other flipped instance flips back to {waves.leaving}"
            + (f": {', '.join(rest)}" if rest else " (none)")
            + f"; {waves.to} is rolled back",
            details={"instances": rest},
            decided=decided,
        )

    async def _walk_back(self, name: str, waves: Waves) -> None:
        """`rollback --rolling`: the newest flipped wave flips back; with the last one, the
        candidate is drained (marked rolled back)."""
        flipped = set(waves.flipped)
        remaining = [w for w in waves.plan[: waves.done] if set(w[1]) & flipped]
        group, instances = remaining[-1] if remaining else ("", ())
        back = replace(
            waves,
            done=max(0, waves.done - 1),
            flipped=tuple(i for i in waves.flipped if i not in instances),
            walked=waves.walked + 1,
        )
        last = not back.flipped
        trip = {"rule": "manual", "at": utc_now(), "description": "rolled back wave by wave"}

        def move(current: RouteState) -> RouteState:
            walked = with_waves(current, back, expected=waves)
            return drain_candidate(walked, trip) if last else walked

        what = f"{group} flips {', '.join(instances)} back to {waves.leaving}" if group else ""
        await self.core.change(
            name,
            move,
            actor="rollout",
            action="wave_reverse",
            reason=f"rolling back: {what or 'nothing left flipped'}"
            + (f"; every wave is back, {waves.to} is rolled back" if last else ""),
            details={"group": group, "instances": list(instances), "direction": "reverse"},
        )

    # -- reading ----------------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any] | None:
        """The rolling phase for `status`: the wave, the bake, what it waits for, each
        group's progress and health."""
        state = self.core.states.get(name)
        ramp = state.ramp if state else None
        if ramp is None or ramp.waves is None:
            return None
        waves, plan = ramp.waves, self.plans(name).waves or WavePlan()
        progress = self.progress.get(name)
        health = self.health.get(name, {})
        groups = {}
        for group in waves.groups():
            verdicts = health.get(group, [])
            groups[group] = {
                "planned": len(waves.planned(group)),
                "flipped": len(waves.flipped_in(group)),
                "healthy": not any(v.tripped for v in verdicts) and waves.halted_group != group,
                "verdicts": [v.as_dict() for v in verdicts],
            }
        current = waves.plan[waves.done - 1] if 0 < waves.done <= len(waves.plan) else None
        return {
            "wave": waves.done,
            "waves": len(waves.plan),
            "group": current[0] if current else None,
            "direction": waves.direction,
            "status": ramp.status,
            "baked": progress.baked if progress else ramp.baked,
            "bake": plan.bake if waves.direction == FORWARD else plan.reverse_bake,
            "waiting_for": progress.waiting_for if progress else None,
            "halted_group": waves.halted_group,
            "flipped": list(waves.flipped),
            "groups": groups,
        }
