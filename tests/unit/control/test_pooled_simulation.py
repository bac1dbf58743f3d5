"""The pooled guardrail simulation (benchmarks/pooled.py): healthy traffic over many
simulated sidecars trips neither the local floors nor the pooled judge, the pooled judge
catches a large regression before any sidecar alone does, and the simulation's shortcut (a
necessary condition deciding when the real guard looks) changes no outcome."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.guardrails import CONTROL, SCENARIOS
from benchmarks.pooled import simulate

HALF_ERRORS = SCENARIOS[1][1]  # error rate 1% -> 50%


def test_healthy_traffic_over_many_sidecars_does_not_trip() -> None:
    # 100 sidecars, 10 healthy canaries of 10 minutes, every judge looking every second:
    # 60,000 local looks per canary at alpha / 1000 and 600 pooled ones at alpha.
    outcomes = [simulate(CONTROL, 100, 600, (1, run)) for run in range(10)]
    trips = [o for o in outcomes if o.first is not None]
    assert trips == []


def test_the_pooled_judge_catches_a_large_regression_before_any_sidecar() -> None:
    for run in range(5):
        outcome = simulate(HALF_ERRORS, 10, 600, (2, run))
        assert outcome.pooled_rule == "error_rate", outcome
        assert outcome.pooled is not None and outcome.pooled <= 5, outcome
        # The floors still catch it alone, only later: each sidecar sees a tenth of it.
        assert outcome.local_rule == "error_rate", outcome
        assert outcome.local is not None and outcome.pooled < outcome.local, outcome


def test_the_prefilter_changes_no_outcome() -> None:
    slow = replace(CONTROL, latency_shift=0.6)
    for index, (name, candidate) in enumerate(
        [
            ("healthy", CONTROL),
            ("errors", SCENARIOS[0][1]),
            ("tools", SCENARIOS[3][1]),
            ("slow", slow),
        ]
    ):
        for run in range(2):
            seed = (3, index, run)
            # One cell per bucket: nothing is drawn lazily, so both see the same answers.
            fast = simulate(candidate, 3, 240, seed, window=None)
            exact = simulate(candidate, 3, 240, seed, window=None, prefilter=False)
            assert fast == exact, name
            # Every regression here trips both kinds of judge within the 4 minutes.
            assert name == "healthy" or None not in (exact.local, exact.pooled), name
