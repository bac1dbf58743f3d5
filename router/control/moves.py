"""A route's deploy stack: who is active, the canary, the warm versions, and the moves
between them. Each move is a pure function from one `RouteState` to the next; it refuses
with a `Refused` (router.errors) that says what to do instead. `ChangeCore.change` applies
the result.

    deploy   -> the version becomes the candidate, at weight 0
    weights  -> traffic split (a rolled-back candidate given weight again is re-enabled)
    promote  -> the candidate becomes active at 100 %; the old active goes on top of `warm`
    rollback -> drains a live candidate; else pops `warm`: the active is rolled back and the
                top warm version becomes active at 100 %
    trip     -> a guardrail's verdict drains the candidate it judged (the same drain as a
                rollback's), or with `auto_rollback: off` halts its ramp (`halt_on_breach`)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from router.config import Route
from router.errors import BadRequest, Refused
from router.proxy.routing import BASIS_POINTS, WeightTable

LIVE = "live"
ROLLED_BACK = "rolled_back"
DRILLS_KEPT = 12


@dataclass(frozen=True, slots=True)
class Warm:
    version: str
    since: str  # when it stopped being active (UTC, ISO 8601)


RUNNING, PAUSED, HALTED, HOLDING = "running", "paused", "halted", "holding"
PROMOTED, ABORTED = "promoted", "aborted"
CANARY, WAVES = "canary", "waves"  # a ramp's phases: per-request weights, then instances flip
FORWARD, REVERSE = "forward", "reverse"


@dataclass(frozen=True, slots=True)
class Waves:
    """The rolling phase of a ramp in a fleet: instances flip from `leaving` to `to` wave by
    wave. `plan` is fixed when the phase starts: (group, instances) per wave. `done` waves
    are flipped (forward), or, walking back (`direction` reverse), still flipped. `flipped`
    are the instances on `to` now, `flipped_at` when each flipped (UTC), for the sessions a
    flipped sidecar keeps on `leaving`."""

    to: str
    leaving: str
    plan: tuple[tuple[str, tuple[str, ...]], ...]
    done: int = 0
    flipped: tuple[str, ...] = ()
    flipped_at: Mapping[str, str] = field(default_factory=dict)
    direction: str = FORWARD
    halted_group: str | None = None
    session_max_age: float = 0.0
    session_idle: float = 0.0
    walked: int = 0  # waves walked back so far by `rollback --rolling`

    def groups(self) -> list[str]:
        """Every group of the plan, in order, once."""
        return list(dict.fromkeys(group for group, _ in self.plan))

    def planned(self, group: str) -> list[str]:
        return [i for g, instances in self.plan if g == group for i in instances]

    def flipped_in(self, group: str) -> list[str]:
        flipped = set(self.flipped)
        return [i for i in self.planned(group) if i in flipped]

    def as_dict(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "leaving": self.leaving,
            "plan": [{"group": g, "instances": list(i)} for g, i in self.plan],
            "done": self.done,
            "flipped": list(self.flipped),
            "flipped_at": dict(self.flipped_at),
            "direction": self.direction,
            "halted_group": self.halted_group,
            "session_max_age": self.session_max_age,
            "session_idle": self.session_idle,
            "walked": self.walked,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Waves:
        return cls(
            to=str(data["to"]),
            leaving=str(data["leaving"]),
            plan=tuple(
                (str(w["group"]), tuple(str(i) for i in w["instances"])) for w in data["plan"]
            ),
            done=int(data.get("done", 0)),
            flipped=tuple(str(i) for i in data.get("flipped") or ()),
            flipped_at={str(k): str(v) for k, v in (data.get("flipped_at") or {}).items()},
            direction=str(data.get("direction", FORWARD)),
            halted_group=data.get("halted_group"),
            session_max_age=float(data.get("session_max_age", 0.0)),
            session_idle=float(data.get("session_idle", 0.0)),
            walked=int(data.get("walked", 0)),
        )


@dataclass(frozen=True, slots=True)
class Ramp:
    """A candidate's walk up the rollout plan's steps. `baked` counts the seconds this step
    has baked while the router ran and the ramp was running: a restart or a pause does not
    count as bake."""

    status: str  # RUNNING, PAUSED, HALTED, HOLDING, ROLLED_BACK, ABORTED or PROMOTED
    step: int  # index into the plan's steps
    percent: float  # the candidate's weight at this step
    baked: float = 0.0
    note: str | None = None  # why it halted, or what it waits for
    started: str = ""  # when the ramp started (UTC)
    phase: str = CANARY  # CANARY, then WAVES when the plan has waves (a fleet)
    scope: str | None = None  # the canary's weights apply only in this pool (a fleet)
    waves: Waves | None = None  # the rolling phase's plan and progress

    @property
    def active(self) -> bool:
        return self.status in (RUNNING, PAUSED, HALTED, HOLDING)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "step": self.step,
            "percent": self.percent,
            "baked": self.baked,
            "note": self.note,
            "started": self.started,
            "phase": self.phase,
            "scope": self.scope,
            "waves": self.waves.as_dict() if self.waves else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ramp:
        return cls(
            **{key: data[key] for key in ("status", "step", "percent")},
            baked=float(data.get("baked", 0.0)),
            note=data.get("note"),
            started=data.get("started", ""),
            phase=data.get("phase", CANARY),
            scope=data.get("scope"),
            waves=Waves.from_dict(data["waves"]) if data.get("waves") else None,
        )


class _SavedRoute(BaseModel):
    """The rules a saved route state must keep, checked when one is read back (state file,
    audit replay): a hand-edited or corrupted state never reaches the weight table."""

    model_config = ConfigDict(extra="allow")
    active: StrictStr
    candidate: StrictStr | None = None
    weights: dict[str, Annotated[StrictInt, Field(ge=0, le=BASIS_POINTS)]]
    candidate_state: Literal["live", "rolled_back"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> _SavedRoute:
        total = sum(self.weights.values())
        if total != BASIS_POINTS:
            raise ValueError(f"weights add up to {total} basis points, not {BASIS_POINTS}")
        if (self.candidate is None) != (self.candidate_state is None):
            raise ValueError("candidate and candidate_state must be set together")
        if self.candidate is not None and self.candidate == self.active:
            raise ValueError(f"{self.active} is both active and candidate")
        return self


@dataclass(frozen=True, slots=True)
class RouteState:
    """A route's live deploy state."""

    active: str
    candidate: str | None
    weights: Mapping[str, int]  # basis points, summing to 10000
    candidate_state: str | None = None  # LIVE or ROLLED_BACK while there is a candidate
    trip: Mapping[str, Any] | None = None  # why the candidate was rolled back
    digests: Mapping[str, str] = field(default_factory=dict)  # version -> digest when first seen
    warm: tuple[Warm, ...] = ()  # previous actives, the last one on top
    rolled_back: tuple[str, ...] = ()  # versions rolled back from active
    archived: tuple[str, ...] = ()  # warm versions past the warm window
    drills: tuple[Mapping[str, Any], ...] = ()  # the last DRILLS_KEPT drills: at, seconds
    ramp: Ramp | None = None  # the candidate's rollout, if one was started

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
        """Raises ValueError naming what breaks the rules."""
        try:
            _SavedRoute.model_validate(data)
        except ValidationError as exc:
            raise ValueError(
                "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'the route'}: "
                    f"{e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()
                )
            ) from None
        return cls(
            active=data["active"],
            candidate=data.get("candidate"),
            weights={version: int(points) for version, points in data["weights"].items()},
            candidate_state=data.get("candidate_state"),
            trip=data.get("trip"),
            digests=dict(data.get("digests") or {}),
            warm=tuple(Warm(w["version"], w["since"]) for w in data.get("warm") or ()),
            rolled_back=tuple(data.get("rolled_back") or ()),
            archived=tuple(data.get("archived") or ()),
            drills=tuple(data.get("drills") or ()),
            ramp=Ramp.from_dict(data["ramp"]) if data.get("ramp") else None,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "candidate": self.candidate,
            "weights": dict(self.weights),
            "candidate_state": self.candidate_state,
            "trip": dict(self.trip) if self.trip else None,
            "digests": dict(self.digests),
            "warm": [{"version": w.version, "since": w.since} for w in self.warm],
            "rolled_back": list(self.rolled_back),
            "archived": list(self.archived),
            "drills": [dict(d) for d in self.drills],
            "ramp": self.ramp.as_dict() if self.ramp else None,
        }

    def table(self) -> WeightTable:
        return WeightTable.build(
            self.weights, self.active, self.candidate, candidate_live=self.canary_live
        )

    @property
    def canary_live(self) -> bool:
        return self.candidate is not None and self.candidate_state == LIVE

    def role(self, version: str) -> str:
        """active, candidate, rolled_back (as candidate or from active), warm, archived or
        available (loaded, never given a role)."""
        if version == self.active:
            return "active"
        if version == self.candidate:
            return "candidate" if self.candidate_state == LIVE else ROLLED_BACK
        if any(w.version == version for w in self.warm):
            return "warm"
        if version in self.rolled_back:
            return ROLLED_BACK
        if version in self.archived:
            return "archived"
        return "available"

    def describe_weights(self) -> str:
        return " ".join(f"{v}={p / 100:g}%" for v, p in self.weights.items() if p)


def _all_on(state: RouteState, version: str) -> dict[str, int]:
    weights = dict.fromkeys(state.weights, 0)
    weights[version] = BASIS_POINTS
    return weights


def _without(versions: tuple[str, ...], *drop: str | None) -> tuple[str, ...]:
    return tuple(v for v in versions if v not in drop)


def _warm_without(warm: tuple[Warm, ...], *drop: str | None) -> tuple[Warm, ...]:
    return tuple(w for w in warm if w.version not in drop)


def set_weights(state: RouteState, points: Mapping[str, int]) -> RouteState:
    """Versions not named get 0. Giving a rolled-back candidate weight re-enables it: that
    is the person's decision the trip waits for."""
    if state.ramp and state.ramp.status == RUNNING:
        raise Refused(
            "a rollout is running and sets the weights; pause or abort it first "
            "(bundle-router rollout pause|abort ROUTE)",
            code="ramp_running",
        )
    if state.ramp and state.ramp.active and state.ramp.phase == WAVES:
        raise Refused(
            "a rolling release is in progress: its instances serve by wave, not by weight. "
            "End it first (bundle-router rollout abort ROUTE, or rollback ROUTE)",
            code="rolling_release",
        )
    if sum(points.values()) != BASIS_POINTS:
        raise BadRequest(
            f"the weights add up to {sum(points.values()) / 100:g}%, not 100%",
            code="weights_not_100",
        )
    unwatched = sorted(
        v for v, p in points.items() if p and v not in (state.active, state.candidate)
    )
    if unwatched:
        version = unwatched[0]
        raise BadRequest(
            f"{version} is {state.role(version)}, neither the active version "
            f"({state.active}) nor the candidate ({state.candidate or 'none'}); the guardrails "
            "watch only those two, so traffic on it would go unguarded. Make it the candidate "
            f"first (bundle-router deploy ROUTE {version}), or roll back to it "
            f"(bundle-router rollback ROUTE --to {version} --force)",
            code="version_not_deployed",
        )
    weights = {**dict.fromkeys(state.weights, 0), **points}
    after = replace(state, weights=weights)
    candidate = state.candidate
    if candidate and state.candidate_state == ROLLED_BACK and weights.get(candidate, 0) > 0:
        after = replace(after, candidate_state=LIVE, trip=None)
    return after


def deploy(state: RouteState, version: str, digest: str) -> RouteState:
    if version == state.active:
        raise Refused(f"{version} is already the active version", code="already_active")
    recorded = state.digests.get(version)
    if recorded is not None and recorded != digest:
        raise Refused(
            f"{version} changed since it was deployed (digest {recorded[:12]}, now "
            f"{digest[:12]}); bump the version",
            code="digest_changed",
        )
    current = state.candidate
    ramp = state.ramp
    if ramp is not None and ramp.active and ramp.phase == WAVES:
        raise Refused(
            f"a rolling release of {current} is {ramp.status}: its flipped instances serve it. "
            "End it first: bundle-router rollout abort ROUTE (every instance back at once), "
            "rollback ROUTE, or rollback ROUTE --rolling",
            code="rolling_release",
        )
    if current and current != version and state.canary_live and state.weights.get(current):
        raise Refused(
            f"candidate {current} is live at {state.weights[current] / 100:g}%; promote it or "
            "roll it back first",
            code="candidate_live",
        )
    weights = dict(state.weights)
    freed = weights.get(version, 0)
    weights[version] = 0
    weights[state.active] = weights.get(state.active, 0) + freed
    rolled_back = state.rolled_back
    archived = state.archived
    if current and current != version:  # the old candidate leaves the stage
        if state.candidate_state == ROLLED_BACK:
            rolled_back = (*_without(rolled_back, current), current)
        else:
            archived = (*_without(archived, current), current)
    return replace(
        state,
        candidate=version,
        candidate_state=LIVE,
        trip=None,
        weights=weights,
        digests={**state.digests, version: digest},
        warm=_warm_without(state.warm, version),
        rolled_back=_without(rolled_back, version),
        archived=_without(archived, version),
        ramp=None,  # a new candidate starts without a rollout
    )


def promote(state: RouteState, now: str) -> RouteState:
    candidate = state.candidate
    if candidate is None:
        raise Refused("there is no candidate to promote; deploy one first", code="no_candidate")
    if state.candidate_state == ROLLED_BACK:
        reason = (state.trip or {}).get("description", "rolled back")
        raise Refused(
            f"candidate {candidate} was rolled back ({reason}); give it weight again with "
            "`weights` and let it bake, or deploy another version",
            code="candidate_rolled_back",
        )
    return replace(
        state,
        active=candidate,
        candidate=None,
        candidate_state=None,
        trip=None,
        ramp=_ended(state.ramp, PROMOTED),
        weights=_all_on(state, candidate),
        warm=(*_warm_without(state.warm, candidate, state.active), Warm(state.active, now)),
    )


def rollback(
    state: RouteState, now: str, *, to: str | None = None, force: bool = False
) -> tuple[RouteState, str]:
    """The next state and what was done, in words."""
    if to is None and state.canary_live and state.candidate is not None:
        trip = {"rule": "manual", "at": now, "description": "rolled back by a person"}
        after = drain_candidate(state, trip)
        return after, f"drained candidate {state.candidate}; {state.active} serves all traffic"
    if to is not None:
        if not force:
            raise BadRequest(
                f"rollback --to {to} skips the warm stack; add --force if that is what you mean",
                code="force_needed",
            )
        if to == state.active:
            raise Refused(f"{to} is already active", code="already_active")
        target = to
    elif state.warm:
        target = state.warm[-1].version
    else:
        raise Refused(
            f"nothing is warm to roll back to (active {state.active}, no candidate live); "
            "name a version with --to VERSION --force",
            code="nothing_warm",
        )
    after = replace(
        state,
        active=target,
        weights=_all_on(state, target),
        warm=_warm_without(state.warm, target),
        rolled_back=(*_without(state.rolled_back, state.active, target), state.active),
        archived=_without(state.archived, target),
        candidate=None if state.candidate == target else state.candidate,
        candidate_state=None if state.candidate == target else state.candidate_state,
        ramp=_ended(state.ramp, ROLLED_BACK),
    )
    return after, f"{state.active} rolled back; {target} is active at 100%"


def drain_candidate(state: RouteState, trip: Mapping[str, Any]) -> RouteState:
    """The canary's weight goes to the active version and it is marked rolled back, with
    `trip` saying why (a guardrail's verdict, or a person); a ramp in progress ends."""
    assert state.candidate is not None
    note = None if trip.get("rule") == "manual" else f"tripped: {trip.get('description')}"
    weights = dict(state.weights)
    weights[state.active] = weights.get(state.active, 0) + weights.get(state.candidate, 0)
    weights[state.candidate] = 0
    return replace(
        state,
        weights=weights,
        candidate_state=ROLLED_BACK,
        trip=dict(trip),
        ramp=_ended(state.ramp, ROLLED_BACK, note),
    )


def trip_candidate(state: RouteState, candidate: str | None, trip: Mapping[str, Any]) -> RouteState:
    """A guardrail tripped on `candidate`: drain it as a rollback does, `trip` saying why.
    Refused when the canary is no longer the one judged (a person moved first)."""
    if state.candidate != candidate or not state.canary_live:
        raise Refused("the canary changed while it was judged")
    return drain_candidate(state, trip)


def halt_on_breach(state: RouteState, reason: str) -> RouteState:
    """A guardrail tripped while the plan says `auto_rollback: off`: halt the ramp where it
    is. A ramp a person already stopped stays stopped, with the breach recorded."""
    ramp = state.ramp
    if ramp is not None and ramp.status in (PAUSED, HALTED):
        return replace(state, ramp=replace(ramp, note=reason))
    return halt_ramp(state, reason)


def archive_expired(state: RouteState, oldest: str) -> RouteState | None:
    """Warm versions that stopped being active before `oldest` (ISO time) move to archived."""
    expired = [w.version for w in state.warm if w.since < oldest]
    if not expired:
        return None
    return replace(
        state,
        warm=_warm_without(state.warm, *expired),
        archived=(*_without(state.archived, *expired), *expired),
    )


def with_drill(state: RouteState, at: str, seconds: float) -> RouteState:
    drills = (*state.drills, {"at": at, "seconds": seconds})[-DRILLS_KEPT:]
    return replace(state, drills=drills)


def _ended(ramp: Ramp | None, status: str, note: str | None = None) -> Ramp | None:
    """A ramp in progress ends with `status`; a finished one stays as it ended."""
    if ramp is None or not ramp.active:
        return ramp
    return replace(ramp, status=status, note=note or ramp.note)


def _candidate_at(state: RouteState, percent: float) -> dict[str, int]:
    """The candidate at `percent`, the active taking what the others do not hold."""
    assert state.candidate is not None
    points = round(percent * 100)
    others = sum(p for v, p in state.weights.items() if v not in (state.active, state.candidate))
    if points + others > BASIS_POINTS:
        raise Refused(
            f"other versions hold {others / 100:g}%, so the candidate cannot have {percent:g}%; "
            "set their weights to 0 first",
            code="weights_taken",
        )
    return {**state.weights, state.candidate: points, state.active: BASIS_POINTS - points - others}


def start_ramp(state: RouteState, percent: float, now: str, scope: str | None = None) -> RouteState:
    if state.candidate is None or not state.canary_live:
        raise Refused(
            "there is no live candidate to roll out; deploy one first (bundle-router deploy)",
            code="no_candidate",
        )
    if state.ramp and state.ramp.active:
        raise Refused(
            f"a rollout of {state.candidate} is already {state.ramp.status}", code="ramp_exists"
        )
    ramp = Ramp(RUNNING, 0, percent, started=now, scope=scope)
    return replace(state, weights=_candidate_at(state, percent), ramp=ramp)


def start_waves(state: RouteState, waves: Waves, now: str) -> RouteState:
    """The canary passed: the rolling phase begins. The per-request weights go back to the
    active version (an unflipped instance serves it alone); the first wave flips next."""
    ramp = state.ramp
    if ramp is None or not ramp.active:  # a plan whose first step is 100: `rollout start`
        if state.candidate is None or not state.canary_live:  # as start_ramp refuses
            raise Refused(
                "there is no live candidate to roll out; deploy one first (bundle-router "
                "deploy), or give a rolled-back one weight again (bundle-router weights)",
                code="no_candidate",
            )
        ramp = Ramp(RUNNING, 0, 0.0, started=now)  # a rollout that ended is over
    elif ramp.phase != CANARY:  # `rollout start` again would flip every instance back
        raise Refused(
            f"a rolling release of {state.candidate} is already {ramp.status}",
            code="ramp_exists",
        )
    ramp = _require_ramp(replace(state, ramp=ramp), RUNNING)
    return replace(
        state,
        weights=_candidate_at(state, 0),
        ramp=replace(ramp, phase=WAVES, percent=0.0, baked=0.0, note=None, waves=waves),
    )


def expect_waves(state: RouteState, expected: Waves, *statuses: str) -> RouteState:
    """`state` if its rolling release is still the one a decision was made on (the same
    waves, in one of `statuses`); else Refused: a person, or another controller, moved
    first, and the decision is dropped."""
    ramp = state.ramp
    if ramp is None or ramp.phase != WAVES or ramp.waves != expected or ramp.status not in statuses:
        raise Refused(
            "the rolling release changed while its next move was decided", code="ramp_state"
        )
    return state


def with_waves(
    state: RouteState, waves: Waves, *, expected: Waves, statuses: tuple[str, ...] = (RUNNING,)
) -> RouteState:
    """The rolling phase's next position (a flip, a flip back), decided on `expected`; the
    bake starts over."""
    ramp = expect_waves(state, expected, *statuses).ramp
    assert ramp is not None
    return replace(state, ramp=replace(ramp, waves=waves, baked=0.0))


def halt_waves(state: RouteState, waves: Waves, reason: str, *, expected: Waves) -> RouteState:
    """A group's gauge breached (while running or paused): the rolling release stops where
    it is. `waves` says whether it walks back (direction reverse) or waits for a person."""
    ramp = expect_waves(state, expected, RUNNING, PAUSED).ramp
    assert ramp is not None
    return replace(state, ramp=replace(ramp, status=HALTED, note=reason, waves=waves))


def reverse_waves(state: RouteState) -> RouteState:
    """`rollback --rolling`: walk the flipped waves back, one at a time, each with the
    plan's reverse bake; the candidate is drained when none is left flipped."""
    ramp = state.ramp
    if ramp is None or ramp.phase != WAVES or not ramp.active or ramp.waves is None:
        raise Refused(
            "rollback --rolling walks back a rolling release in progress, and there is none "
            "on this route; use `bundle-router rollback ROUTE` (big-bang, sub-second)",
            code="no_rolling_release",
        )
    if not ramp.waves.flipped:
        raise Refused(
            "no instance is flipped yet, so there is nothing to walk back; use "
            "`bundle-router rollback ROUTE` or `rollout abort ROUTE`",
            code="nothing_flipped",
        )
    waves = replace(ramp.waves, direction=REVERSE)
    return replace(
        state, ramp=replace(ramp, status=RUNNING, note="rolling back", waves=waves, baked=0.0)
    )


def step_ramp(state: RouteState, step: int, percent: float) -> RouteState:
    """Move a running ramp to `step`, the candidate at `percent`; the bake starts over."""
    ramp = _require_ramp(state, RUNNING)
    return replace(
        state,
        weights=_candidate_at(state, percent),
        ramp=replace(ramp, step=step, percent=percent, baked=0.0, note=None),
    )


def pause_ramp(state: RouteState) -> RouteState:
    ramp = _require_ramp(state, RUNNING, HOLDING)
    return replace(state, ramp=replace(ramp, status=PAUSED))


def resume_ramp(state: RouteState) -> RouteState:
    """Back to running at the step it was on (its weight again, if a person moved it)."""
    ramp = _require_ramp(state, PAUSED, HALTED, HOLDING)
    if not state.canary_live:
        raise Refused(
            f"candidate {state.candidate} is rolled back; give it weight with `weights` "
            "before resuming",
            code="candidate_rolled_back",
        )
    waves = replace(ramp.waves, halted_group=None) if ramp.waves else None
    running = replace(state, ramp=replace(ramp, status=RUNNING, note=None, waves=waves))
    return replace(running, weights=_candidate_at(running, ramp.percent))


def abort_ramp(state: RouteState) -> RouteState:
    """Stop the ramp and give the control all the candidate's traffic; the candidate stays
    deployed (live, at 0) for another try."""
    _require_ramp(state, RUNNING, PAUSED, HALTED, HOLDING)
    weights = _candidate_at(state, 0)
    return replace(state, weights=weights, ramp=_ended(state.ramp, ABORTED))


def halt_ramp(state: RouteState, reason: str) -> RouteState:
    ramp = _require_ramp(state, RUNNING, HOLDING)
    return replace(state, ramp=replace(ramp, status=HALTED, note=reason))


def hold_ramp(state: RouteState, reason: str) -> RouteState:
    ramp = _require_ramp(state, RUNNING)
    return replace(state, ramp=replace(ramp, status=HOLDING, note=reason))


def _require_ramp(state: RouteState, *statuses: str) -> Ramp:
    ramp = state.ramp
    if ramp is None or ramp.status not in statuses:
        now = f"it is {ramp.status}" if ramp else "none was started"
        raise Refused(
            f"this needs a rollout that is {' or '.join(statuses)}; {now}", code="ramp_state"
        )
    return ramp
