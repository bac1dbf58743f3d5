"""The rolling release's plan and each sidecar's view of it, as pure functions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.config import WavePlan
from router.control.moves import (
    ABORTED,
    HALTED,
    REVERSE,
    ROLLED_BACK,
    RUNNING,
    WAVES,
    Ramp,
    RouteState,
    Waves,
    promote,
    reverse_waves,
    start_waves,
)
from router.errors import Refused
from router.fleet.view import table_for
from router.fleet.waves import describe_plan, plan_waves

SIDECARS = [
    {"instance": f"{region}-{i}", "region": region, "pool": pool}
    for region, pool in [("us-east", "paid"), ("eu", "free"), ("apac", "paid")]
    for i in range(3)
]


def test_region_order_puts_listed_groups_first_and_never_mixes_groups() -> None:
    plan = plan_waves("r", SIDECARS, WavePlan(groups=["us-east", "eu"], size=2))
    assert [g for g, _ in plan] == ["us-east", "us-east", "eu", "eu", "apac", "apac"]
    assert [len(i) for _, i in plan] == [2, 1, 2, 1, 2, 1]
    assert describe_plan(plan) == "us-east 2+1, eu 2+1, apac 2+1"


def test_a_percent_size_is_a_share_of_each_group_rounded_up() -> None:
    plan = plan_waves("r", SIDECARS, WavePlan.model_validate({"order": "pool", "size": "25%"}))
    assert [g for g, _ in plan][:2] == ["free", "free"]  # unlisted groups by name
    assert all(len(i) == 2 for g, i in plan if g == "paid")  # 25% of 6 -> 2


def test_hash_order_is_stable_and_a_permutation() -> None:
    first = plan_waves("r", SIDECARS, WavePlan(order="hash", size=4))
    again = plan_waves("r", list(reversed(SIDECARS)), WavePlan(order="hash", size=4))
    assert first == again
    assert {g for g, _ in first} == {"all"}
    assert sorted(i for _, w in first for i in w) == sorted(s["instance"] for s in SIDECARS)


def _rolling(flipped: tuple[str, ...], status: str = RUNNING) -> RouteState:
    state = RouteState("v1", "v2", {"v1": 10000, "v2": 0}, candidate_state="live")
    waves = Waves(
        to="v2",
        leaving="v1",
        plan=(("us-east", ("a", "b")), ("eu", ("c",))),
        done=1 if flipped else 0,
        flipped=flipped,
        flipped_at=dict.fromkeys(flipped, "2026-11-27T10:00:00.000Z"),
        session_max_age=600.0,
        session_idle=60.0,
    )
    state = start_waves(replace(state, ramp=Ramp(RUNNING, 0, 0.0)), waves, "now")
    assert state.ramp is not None
    return replace(state, ramp=replace(state.ramp, status=status))


def test_a_flipped_instance_serves_the_new_version_and_holds_old_sessions() -> None:
    state = _rolling(("a", "b"))
    flip = 1_795_773_600.0  # 2026-11-27T10:00:00Z
    table = table_for(
        state, {"instance": "a", "pool": "p"}, wall=lambda: flip + 60, monotonic=lambda: 100.0
    )
    assert table.choose(0) == table.choose(9999) == "v2"
    assert table.hold is not None and table.hold.version == "v1"
    assert table.hold.until == pytest.approx(100.0 + 540.0)
    expired = table_for(state, {"instance": "a"}, wall=lambda: flip + 601, monotonic=lambda: 1.0)
    assert expired.hold is None


def test_a_promotion_keeps_the_holds_of_the_last_flips() -> None:
    flip = 1_795_773_600.0  # 2026-11-27T10:00:00Z
    state = promote(_rolling(("a", "b")), "now")
    table = table_for(state, {"instance": "a"}, wall=lambda: flip + 60, monotonic=lambda: 0.0)
    assert table.choose(0) == table.choose(9999) == "v2"
    assert table.hold is not None and table.hold.version == "v1"
    assert table_for(state, {"instance": "c"}).hold is None  # never flipped: nothing held


def test_an_unflipped_instance_serves_the_old_version_and_remembers_sessions() -> None:
    table = table_for(_rolling(("a", "b")), {"instance": "c"}, remember=True)
    assert table.choose(0) == table.choose(9999) == "v1"
    assert table.remember_sessions and table.hold is None
    assert not table_for(_rolling(("a", "b")), {"instance": "c"}).remember_sessions
    # Before the release starts, too: the first flip holds what was seen before it.
    plain = RouteState("v1", "v2", {"v1": 10000, "v2": 0}, candidate_state="live")
    assert table_for(plain, {"instance": "c"}, remember=True).remember_sessions
    # A table that splits sessions does not remember: the memory keeps no version.
    canary = RouteState("v1", "v2", {"v1": 9500, "v2": 500}, candidate_state="live")
    assert not table_for(canary, {"instance": "c"}, remember=True).remember_sessions
    walking_back = reverse_waves(_rolling(("a",)))
    assert not table_for(walking_back, {"instance": "c"}, remember=True).remember_sessions


def test_a_reverse_flip_holds_nothing() -> None:
    state = reverse_waves(_rolling(("a", "b")))
    assert state.ramp is not None and state.ramp.waves is not None
    assert state.ramp.waves.direction == REVERSE and state.ramp.phase == WAVES
    table = table_for(state, {"instance": "a"})
    assert table.choose(0) == "v2" and table.hold is None


def test_rollback_rolling_needs_flipped_instances() -> None:
    with pytest.raises(Refused, match="nothing to walk back"):
        reverse_waves(_rolling(()))
    with pytest.raises(Refused, match="rolling release in progress, and there is none"):
        reverse_waves(RouteState("v1", None, {"v1": 10000}))


def test_a_canary_pool_keeps_the_canary_to_its_pool() -> None:
    state = RouteState(
        "v1",
        "v2",
        {"v1": 9000, "v2": 1000},
        candidate_state="live",
        ramp=Ramp(RUNNING, 0, 10.0, scope="canary"),
    )
    assert table_for(state, {"pool": "canary"}).percent("v2") == 10
    assert table_for(state, {"pool": "paid"}).percent("v2") == 0


def test_waves_survive_the_state_file() -> None:
    state = _rolling(("a",))
    assert RouteState.from_dict(state.as_dict()) == state


def _waves() -> Waves:
    return Waves(to="v2", leaving="v1", plan=(("us-east", ("a", "b")),))


@pytest.mark.parametrize("ended", [ROLLED_BACK, ABORTED])
def test_a_plan_of_waves_only_starts_again_after_a_rollout_ended(ended: str) -> None:
    # `rollout start` of a plan whose first step is 100 starts the waves at once; the last
    # rollout of the same candidate (aborted, or rolled back and given weight again) is over.
    ramp = Ramp(ended, 0, 0.0, phase=WAVES, waves=replace(_waves(), flipped=("a",)))
    state = RouteState("v1", "v2", {"v1": 10000, "v2": 0}, candidate_state="live", ramp=ramp)
    started = start_waves(state, _waves(), "later")
    assert started.ramp is not None
    assert (started.ramp.status, started.ramp.started) == (RUNNING, "later")
    assert started.ramp.waves == _waves()


def test_waves_do_not_start_for_a_rolled_back_candidate() -> None:
    state = RouteState("v1", "v2", {"v1": 10000, "v2": 0}, candidate_state=ROLLED_BACK)
    with pytest.raises(Refused, match="no live candidate"):
        start_waves(state, _waves(), "now")


@pytest.mark.parametrize("status", [RUNNING, HALTED])
def test_waves_do_not_start_over_a_rolling_release_in_progress(status: str) -> None:
    with pytest.raises(Refused, match="already") as refused:
        start_waves(_rolling(("a",), status), _waves(), "now")
    assert refused.value.code == "ramp_exists"
