"""Counters, histograms and sliding windows, in process."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.proxy.telemetry import (
    LATENCY_BOUNDS,
    Histogram,
    Outcome,
    TokenPrice,
    Usage,
    VersionStats,
    quantile,
)

PRICE = TokenPrice(input=15e-6, output=75e-6, cache_read=1.5e-6, cache_write=18.75e-6)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stats_with_clock(window: int = 60) -> tuple[VersionStats, FakeClock]:
    stats = VersionStats("refund-agent", "v1.5", PRICE, window)
    clock = FakeClock()
    stats.clock = clock
    return stats, clock


def test_window_rates() -> None:
    stats, _ = stats_with_clock()
    latencies = [0.05 + i / 1000 for i in range(100)]  # 50 .. 149 ms
    for i, seconds in enumerate(latencies):
        error = i < 4
        stats.record_request(
            Outcome.PROVIDER_5XX if error else Outcome.OK, seconds=seconds, overhead=0.0001
        )
    for _ in range(10):
        stats.record_usage(Usage(input=1000, output=100))
    stats.record_tool_call("valid")
    stats.record_tool_call("invalid_arguments")
    stats.record_refusal()
    stats.record_feedback(True, 0.9)
    stats.record_feedback(False, None)
    view = stats.window()
    assert view.requests == 100 and view.error_rate == pytest.approx(0.04)
    assert view.cost_per_request == pytest.approx(1000 * 15e-6 + 100 * 75e-6)
    assert view.tool_failure_rate == 0.5
    assert view.refusal_rate == pytest.approx(0.01)
    assert view.eval_pass_rate == 0.5
    assert view.p95_seconds == pytest.approx(sorted(latencies)[94], rel=0.05)


def test_window_forgets_old_seconds() -> None:
    stats, clock = stats_with_clock(window=10)
    stats.record_request(Outcome.PROVIDER_5XX, seconds=1, overhead=0)
    clock.now += 5
    stats.record_request(Outcome.OK, seconds=1, overhead=0)
    assert stats.window().requests == 2
    assert stats.window(3).requests == 1  # only the last 3 seconds
    clock.now += 6  # the error is now 11 s old
    view = stats.window()
    assert view.requests == 1 and view.errors == 0
    clock.now += 100  # a slot reused after a long gap starts from zero
    stats.record_request(Outcome.OK, seconds=1, overhead=0)
    assert stats.window().requests == 1
    assert stats.outcomes[0] == 2  # the lifetime counters keep everything


def test_unpriced_model_is_flagged_not_free() -> None:
    stats = VersionStats("r", "v", None, 60)
    stats.record_usage(Usage(input=10, output=10))
    stats.record_usage(None)
    assert stats.unpriced == 1 and stats.usage_incomplete == 1
    assert stats.cost_usd == 0 and stats.window().cost_per_request is None
    assert stats.tokens == [10, 10, 0, 0]


def test_bounds_cover_1ms_to_10min_finely() -> None:
    assert LATENCY_BOUNDS[0] == 0.001 and LATENCY_BOUNDS[-1] >= 600
    ratios = [b / a for a, b in itertools.pairwise(LATENCY_BOUNDS)]
    assert max(ratios) < 1.095


@settings(max_examples=30, deadline=None)
@given(st.floats(0.005, 30), st.floats(0.1, 1.0), st.integers(0, 2**31))
def test_quantiles_within_a_few_percent(median: float, sigma: float, seed: int) -> None:
    """Latency-like (log-normal) samples: p50/p95/p99 read from the buckets are within 5 %."""
    rng = random.Random(seed)
    samples = (rng.lognormvariate(0, sigma) * median for _ in range(4000))
    values = sorted(v for v in samples if 0.001 < v < 600)
    histogram = Histogram(LATENCY_BOUNDS)
    for v in values:
        histogram.observe(v)
    for q in (0.5, 0.95, 0.99):
        exact = sorted(values)[int(q * len(values)) - 1]
        estimate = quantile(LATENCY_BOUNDS, histogram.counts, q)
        assert estimate == pytest.approx(exact, rel=0.05), q
