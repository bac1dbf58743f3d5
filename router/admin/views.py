"""What the operator surfaces show of a route, built once for `status` (the admin socket) and
the fleet view page (router.admin.page): its versions in order, each version's row, its drills
and their trend, its rollout and rolling release, what the rollout does next, and each
route's last change."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from router.config import RolloutPlan
from router.control.moves import HALTED, HOLDING, PAUSED, REVERSE, WAVES, Ramp, RouteState, Waves
from router.control.plane import ControlPlane
from router.fleet.build import FleetPart
from router.fleet.controller import Controller
from router.proxy.live import LiveRoute


def ordered(state: RouteState, route: LiveRoute) -> list[str]:
    """Candidate, active, warm (newest first), then the rest (the order of `status`)."""
    first = [v for v in (state.candidate, state.active) if v]
    warm = [w.version for w in reversed(state.warm)]
    rest = sorted(v for v in route.targets if v not in first and v not in warm)
    return [v for v in [*first, *warm, *rest] if v in route.targets]


def stack(state: RouteState, route: LiveRoute) -> list[str]:
    """The deploy stack top down: active, candidate, warm (newest first), rolled back,
    archived, then versions loaded but never given a role."""
    rank = {"active": 0, "candidate": 1, "warm": 2, "rolled_back": 3, "archived": 4}
    warm = [w.version for w in reversed(state.warm)]

    def key(version: str) -> tuple[int, int, str]:
        within = warm.index(version) if version in warm else 0
        return (rank.get(state.role(version), 5), within, version)

    return sorted(route.targets, key=key)


def version_row(state: RouteState, route: LiveRoute, version: str) -> dict[str, Any]:
    """The fields every view shows of one version."""
    bundle = route.targets[version].bundle
    return {
        "version": version,
        "role": state.role(version),
        # What this process serves: a sidecar's own table (flipped or not, in the canary
        # pool or not); the state's weights elsewhere.
        "weight_percent": route.table.weights.get(version, 0) / 100,
        "model": bundle.model,
        "digest": bundle.short_digest,
    }


def drills(state: RouteState) -> dict[str, Any]:
    """The route's rollback drills (the last few kept in its state): each one's time and
    duration, their median, and whether they are getting faster."""
    seconds = [float(d["seconds"]) for d in state.drills]
    return {
        "count": len(seconds),
        "history": [{"at": d.get("at"), "seconds": float(d["seconds"])} for d in state.drills],
        "median_seconds": statistics.median(seconds) if seconds else None,
        "last_seconds": seconds[-1] if seconds else None,
        "trend": trend(seconds),
    }


def trend(seconds: list[float]) -> str | None:
    """How the last three drills compare with the three before them."""
    if len(seconds) < 4:
        return None
    recent, earlier = statistics.median(seconds[-3:]), statistics.median(seconds[-6:-3])
    if recent < earlier * 0.8:
        return "faster"
    if recent > earlier * 1.25:
        return "slower"
    return "steady"


def rollout(control: ControlPlane, name: str) -> dict[str, Any] | None:
    """The canary ramp of the route (`Rollouts.describe`), or None."""
    return control.rollouts.describe(name)


def waves(fleet: FleetPart | None, name: str) -> dict[str, Any] | None:
    """The rolling release of the route, known only to a fleet's controller, or None."""
    return fleet.rolling.describe(name) if isinstance(fleet, Controller) else None


def last_records(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each route's last audit record: seq, at, action, actor, reason."""
    last: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("route"):
            last[record["route"]] = {
                key: record.get(key) for key in ("seq", "at", "action", "actor", "reason")
            }
    return last


def _instances(names: Iterable[str], shown: int = 5) -> str:
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _bake(view: Mapping[str, Any]) -> str:
    """'when the bake ends (bake 12s of 30s)', and what an extended bake waits for."""
    baked, bake = view.get("baked"), view.get("bake")
    text = "when the bake ends"
    if baked is not None and bake is not None:
        text += f" (bake {baked:.0f}s of {bake:.0f}s)"
    if view.get("waiting_for"):
        text += f"; the bake is extended: {view['waiting_for']}"
    return text


def next_step(
    state: RouteState,
    plan: RolloutPlan,
    ramp_view: Mapping[str, Any] | None,
    waves_view: Mapping[str, Any] | None,
) -> str | None:
    """What the route's rollout does next, in words; None when nothing is planned."""
    ramp = state.ramp
    if ramp is None or not ramp.active:
        if state.canary_live and state.weights.get(state.candidate or "", 0) > 0:
            return (
                f"nothing planned: {state.candidate} stays at "
                f"{state.weights[state.candidate or ''] / 100:g}% until a person acts "
                "(rollout start, promote or rollback)"
            )
        return None
    if ramp.phase == WAVES and ramp.waves is not None:
        return _next_wave(ramp, ramp.waves, waves_view or {})
    at = f"{ramp.percent:g}%"
    if ramp.status == PAUSED:
        return f"paused at {at}: nothing moves until rollout resume"
    if ramp.status == HALTED:
        why = f" ({ramp.note})" if ramp.note else ""
        return f"halted at {at}{why}: a person decides (rollout resume, or rollback)"
    if ramp.status == HOLDING:
        return f"holding at {at}: {ramp.note or 'a person promotes'}"
    following = [p for i, p in enumerate(plan.steps) if i > ramp.step and p < 100]
    if following:
        what = f"up to {following[0]:g}%"
    elif plan.waves is not None:  # fleet mode only: the controller starts the waves
        what = "the fleet flips in waves"
    elif plan.auto_promote:
        what = "promote to 100%"
    else:
        what = "hold for a person to promote"
    return f"{what} {_bake(ramp_view or {})}"


def _next_wave(ramp: Ramp, waves: Waves, view: Mapping[str, Any]) -> str:
    total = len(waves.plan)
    if ramp.status == PAUSED:
        return f"paused at wave {waves.done}/{total}: nothing flips until rollout resume"
    if waves.direction == REVERSE:
        flipped = set(waves.flipped)
        left = [w for w in waves.plan[: waves.done] if set(w[1]) & flipped]
        if not left:
            return f"{waves.to} is rolled back"
        group, instances = left[-1]
        back = [i for i in instances if i in flipped]
        when = "now" if ramp.status == HALTED or waves.walked == 0 else _bake(view)
        last = f"; then {waves.to} is rolled back" if len(left) == 1 else ""
        return f"{group} flips {_instances(back)} back to {waves.leaving} {when}{last}"
    if ramp.status == HALTED:
        return (
            f"halted in {waves.halted_group or 'a group'} at wave {waves.done}/{total}: "
            "nothing flips until a person acts (rollback --rolling walks it back)"
        )
    if waves.done >= total:
        return f"promote {waves.to} everywhere {_bake(view)}"
    group, instances = waves.plan[waves.done]
    when = "now" if waves.done == 0 else _bake(view)
    return f"wave {waves.done + 1}/{total}: {group} flips {_instances(instances)} {when}"
