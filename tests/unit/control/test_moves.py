"""The deploy stack's moves, as pure functions of a route's state."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.control.moves import (
    HALTED,
    PAUSED,
    ROLLED_BACK,
    RouteState,
    Warm,
    archive_expired,
    deploy,
    halt_on_breach,
    pause_ramp,
    promote,
    rollback,
    set_weights,
    start_ramp,
    trip_candidate,
    with_drill,
)
from router.errors import BadRequest, Refused

NOW = "2026-11-26T12:00:00.000Z"


def canary() -> RouteState:
    return RouteState(
        active="v1",
        candidate="v2",
        weights={"v1": 9500, "v2": 500},
        candidate_state="live",
        digests={"v1": "a" * 64, "v2": "b" * 64},
    )


def test_promote_then_rollback_pops_back_to_the_old_active() -> None:
    promoted = promote(canary(), NOW)
    assert (promoted.active, promoted.candidate) == ("v2", None)
    assert promoted.weights == {"v1": 0, "v2": 10000} and promoted.warm == (Warm("v1", NOW),)
    back, what = rollback(promoted, NOW)
    assert back.active == "v1" and back.weights == {"v1": 10000, "v2": 0}
    assert back.warm == () and back.rolled_back == ("v2",) and "v2 rolled back" in what
    assert back.role("v2") == ROLLED_BACK


def test_rollback_drains_a_live_candidate_before_touching_the_stack() -> None:
    drained, what = rollback(canary(), NOW)
    assert drained.active == "v1" and drained.weights == {"v1": 10000, "v2": 0}
    assert drained.candidate_state == ROLLED_BACK and "drained candidate v2" in what
    with pytest.raises(Refused, match="nothing is warm"):
        rollback(drained, NOW)


def test_a_trip_drains_the_candidate_it_judged_as_a_rollback_does() -> None:
    verdict = {"rule": "error_rate", "at": NOW, "description": "error_rate over its limit"}
    tripped = trip_candidate(canary(), "v2", verdict)
    drained, _ = rollback(canary(), NOW)
    assert tripped.weights == drained.weights == {"v1": 10000, "v2": 0}
    assert tripped.candidate_state == ROLLED_BACK and tripped.trip == verdict
    with pytest.raises(Refused, match="changed while it was judged"):
        trip_candidate(canary(), "v3", verdict)  # another candidate now
    with pytest.raises(Refused, match="changed while it was judged"):
        trip_candidate(tripped, "v2", verdict)  # a person drained it first
    ramping = start_ramp(canary(), 10, NOW)
    ended = trip_candidate(ramping, "v2", verdict).ramp
    assert ended is not None and ended.status == ROLLED_BACK
    assert ended.note == "tripped: error_rate over its limit"


def test_a_breach_with_auto_rollback_off_halts_the_ramp_and_keeps_the_weights() -> None:
    ramping = start_ramp(canary(), 10, NOW)
    halted = halt_on_breach(ramping, "guardrail error_rate")
    assert halted.weights == ramping.weights
    assert halted.ramp is not None and (halted.ramp.status, halted.ramp.note) == (
        HALTED,
        "guardrail error_rate",
    )
    paused = halt_on_breach(pause_ramp(ramping), "guardrail latency")  # stopped already
    assert paused.ramp is not None and (paused.ramp.status, paused.ramp.note) == (
        PAUSED,
        "guardrail latency",
    )


def test_a_rolled_back_candidate_comes_back_only_by_a_persons_weights() -> None:
    drained, _ = rollback(canary(), NOW)
    with pytest.raises(Refused, match="was rolled back"):
        promote(drained, NOW)
    again = set_weights(drained, {"v1": 9000, "v2": 1000})
    assert again.candidate_state == "live" and again.trip is None


def test_deploy_refuses_a_changed_digest_and_a_second_live_candidate() -> None:
    with pytest.raises(Refused, match=r"v2 changed since it was deployed .*; bump the version"):
        deploy(canary(), "v2", "c" * 64)
    with pytest.raises(Refused, match="candidate v2 is live at 5%"):
        deploy(canary(), "v3", "c" * 64)
    drained, _ = rollback(canary(), NOW)
    deployed = deploy(drained, "v3", "c" * 64)
    assert deployed.candidate == "v3" and deployed.weights["v3"] == 0
    assert deployed.rolled_back == ("v2",) and deployed.digests["v3"] == "c" * 64


def test_warm_versions_past_the_window_are_archived() -> None:
    state = promote(canary(), "2026-11-20T00:00:00.000Z")
    assert archive_expired(state, "2026-11-19T00:00:00") is None
    archived = archive_expired(state, "2026-11-24T00:00:00")
    assert archived is not None and archived.warm == () and archived.archived == ("v1",)
    with pytest.raises(Refused, match="nothing is warm"):
        rollback(archived, NOW)


def test_state_round_trips_through_its_dict() -> None:
    state = with_drill(promote(canary(), NOW), NOW, 0.2)
    assert RouteState.from_dict(state.as_dict()) == state


def test_weights_must_sum_to_100() -> None:
    with pytest.raises(BadRequest, match="add up to 95%"):
        set_weights(canary(), {"v1": 9000, "v2": 500})


def test_weights_go_only_to_what_the_guardrails_watch() -> None:
    """Traffic on a warm or merely loaded version would go unguarded (the guardrails watch
    the active version and the candidate), so such weights are refused with the way out."""
    promoted = promote(canary(), NOW)  # v1 is warm now, v2 active
    loaded = replace(promoted, weights={**promoted.weights, "v3": 0})  # v3: loaded, no role
    for version in ("v1", "v3"):
        with pytest.raises(BadRequest) as refused:
            set_weights(loaded, {"v2": 0, version: 10000})
        assert refused.value.code == "version_not_deployed"
        assert f"bundle-router deploy ROUTE {version}" in refused.value.message
    assert set_weights(canary(), {"v1": 5000, "v2": 5000}).weights == {"v1": 5000, "v2": 5000}
