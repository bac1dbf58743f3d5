"""A sidecar's own view of the fleet's state: the weight table it serves a route with.

Every sidecar holds the same snapshot; what it serves depends on who it is:

    canary pool   a canary kept to one pool (`rollout.canary_pool`): a sidecar of another
                  pool serves the active version alone
    flipped       in a rolling release, an instance that has flipped serves the new version
                  alone; sessions it saw before the flip stay on the old version until idle
                  for `session_idle` or `session_max_age` after the flip
    unflipped     serves the old version alone; on a route whose plan has waves it
                  remembers its sessions, from before the release starts, for that hold
    promoted      the release is done: every instance serves the new version; the sessions
                  a flip held stay held until their max age
    reverse       a flip back holds nothing: stop the bleed

The snapshot itself (`ChangeCore.states`) stays the fleet's; only the table differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime

from router.control.moves import CANARY, FORWARD, PROMOTED, WAVES, RouteState, Waves
from router.proxy.routing import BASIS_POINTS, SessionHold, WeightTable


def table_for(
    state: RouteState,
    labels: Mapping[str, str],
    *,
    remember: bool = False,
    wall: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> WeightTable:
    """The table this sidecar (`labels`: region, pool, instance) serves `state` with.
    `remember`: the route's plan has waves, so an instance that has not flipped remembers its
    sessions (from before the release starts, so that its first flip can hold them)."""
    ramp = state.ramp
    weights: Mapping[str, int] = state.weights
    hold = None
    live = ramp is not None and ramp.active and state.canary_live and state.candidate is not None
    waves = ramp.waves if ramp is not None and ramp.phase == WAVES else None
    if live and ramp is not None and ramp.phase == CANARY:
        if ramp.scope is not None and labels.get("pool") != ramp.scope:
            weights = _all_on(state, state.active)
    elif ramp is not None and ramp.status == PROMOTED and waves is not None:
        # Promoted after the last wave: sessions a flip held stay held to their max age.
        if labels.get("instance", "") in waves.flipped:
            hold = _hold(waves, labels.get("instance", ""), wall, monotonic)
            remember = False
    elif live and waves is not None:
        instance = labels.get("instance", "")
        if instance in waves.flipped:
            weights = _all_on(state, waves.to)
            hold = _hold(waves, instance, wall, monotonic)
            remember = False
        else:
            weights = _all_on(state, waves.leaving)
            remember = remember and waves.direction == FORWARD
    # The memory records no version: a session it keeps is assumed to be on the active one,
    # so only a table that sends every session there may remember (not a canary's split).
    remember = remember and weights.get(state.active, 0) == BASIS_POINTS
    return WeightTable.build(
        weights,
        state.active,
        state.candidate,
        candidate_live=state.canary_live,
        hold=hold,
        remember_sessions=remember,
    )


def _all_on(state: RouteState, version: str) -> dict[str, int]:
    weights = dict.fromkeys(state.weights, 0)
    weights[version] = BASIS_POINTS
    return weights


def _hold(
    waves: Waves, instance: str, wall: Callable[[], float], monotonic: Callable[[], float]
) -> SessionHold | None:
    """The sessions kept on the old version after this instance's flip, until when."""
    flipped_at = waves.flipped_at.get(instance)
    if waves.direction != FORWARD or waves.session_max_age <= 0 or flipped_at is None:
        return None
    try:
        since = datetime.fromisoformat(flipped_at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    left = waves.session_max_age - (wall() - since)
    if left <= 0:
        return None
    return SessionHold(waves.leaving, monotonic() + left, waves.session_idle)


def flipped(state: RouteState, instance: str) -> bool | None:
    """Whether `instance` serves the new version of a rolling release now; None when the
    route has none."""
    ramp = state.ramp
    if ramp is None or not ramp.active or ramp.waves is None:
        return None
    return instance in ramp.waves.flipped
