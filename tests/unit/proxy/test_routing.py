"""Sticky weighted routing: split, stickiness and monotonic ramps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.proxy.routing import BASIS_POINTS, WeightTable, bucket_of

KEYS = [f"session-{n}" for n in range(10_000)]


def table(candidate_bp: int, *, warm_bp: int = 0) -> WeightTable:
    weights = {"v1.5": candidate_bp, "v1.4": BASIS_POINTS - candidate_bp - warm_bp}
    if warm_bp:
        weights["v1.3"] = warm_bp
    return WeightTable.build(weights, active="v1.4", candidate="v1.5")


def test_split_95_5_within_binomial_tolerance() -> None:
    t = table(500)
    on_candidate = sum(t.choose(bucket_of("refund-agent", k)) == "v1.5" for k in KEYS)
    n, p = len(KEYS), 0.05
    sigma = math.sqrt(n * p * (1 - p))  # about 21.8 sessions
    assert abs(on_candidate - n * p) < 4 * sigma


def test_a_key_always_gets_the_same_version() -> None:
    t = table(2500)
    for key in KEYS[:500]:
        first = t.choose(bucket_of("refund-agent", key))
        assert all(t.choose(bucket_of("refund-agent", key)) == first for _ in range(3))


def test_ramp_never_moves_a_session_off_the_candidate() -> None:
    buckets = [bucket_of("refund-agent", k) for k in KEYS]
    on_candidate: set[int] = set()
    for step in (0, 100, 500, 2500, 5000, 10_000):
        t = table(step)
        now = {i for i, b in enumerate(buckets) if t.choose(b) == "v1.5"}
        assert on_candidate <= now, "a session left the candidate during the ramp"
        on_candidate = now
    assert len(on_candidate) == len(KEYS)


def test_routes_hash_independently() -> None:
    same = sum(bucket_of("refund-agent", k) == bucket_of("support-agent", k) for k in KEYS[:2000])
    assert same < 20  # about 2000 / 10000 expected by chance


def test_zero_weight_version_gets_nothing() -> None:
    t = table(0)
    assert {t.choose(b) for b in range(BASIS_POINTS)} == {"v1.4"}


def test_weights_must_sum_to_10000() -> None:
    with pytest.raises(ValueError, match="9999"):
        WeightTable.build({"v1.4": 9999}, active="v1.4", candidate=None)


@given(
    st.lists(st.integers(0, BASIS_POINTS), min_size=2, max_size=6).map(sorted),
    st.integers(0, 200),
)
def test_raising_candidate_weight_only_moves_active_sessions(steps: list[int], warm: int) -> None:
    """Any ramp, even with a warm version holding some weight, is monotonic for the candidate
    and never touches the warm version's sessions."""
    steps = [min(s, BASIS_POINTS - warm) for s in steps]
    before = table(steps[0], warm_bp=warm)
    for step in steps[1:]:
        after = table(step, warm_bp=warm)
        for bucket in range(0, BASIS_POINTS, 7):
            old, new = before.choose(bucket), after.choose(bucket)
            if old == "v1.5":
                assert new == "v1.5"
            if old != new:
                assert (old, new) == ("v1.4", "v1.5")
        before = after
