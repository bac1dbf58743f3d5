"""Confidence sequences: the bounds, and the reason they exist (valid at every look)."""

from __future__ import annotations

import math
import random

import pytest

from router.control.confidence import lower_bound, outside, surely_above, surely_below, upper_bound


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (10, 10), (3, 1000), (500, 1000)])
def test_bounds_bracket_the_estimate(k: int, n: int) -> None:
    low, high = lower_bound(k, n, 0.01), upper_bound(k, n, 0.01)
    assert 0.0 <= low <= k / n <= high <= 1.0
    if low > 0:
        assert outside(k, n, low * 0.99, 0.01) and not outside(k, n, low * 1.01, 0.01)
    if high < 1:
        assert outside(k, n, high * 1.01, 0.01) and not outside(k, n, high * 0.99, 0.01)


def test_bounds_narrow_as_samples_grow() -> None:
    widths = [upper_bound(n // 10, n, 0.01) - lower_bound(n // 10, n, 0.01) for n in (50, 500)]
    assert widths[1] < widths[0] / 2


def test_no_evidence_claims_nothing() -> None:
    assert (lower_bound(0, 0, 0.01), upper_bound(0, 0, 0.01)) == (0.0, 1.0)
    assert not surely_above(0, 0, 0.02, 0.01) and not surely_below(0, 0, 0.02, 0.01)


def test_surely_above_and_below_agree_with_the_bounds() -> None:
    assert surely_above(30, 60, 0.02, 1e-4) and lower_bound(30, 60, 1e-4) > 0.02
    assert not surely_above(1, 60, 0.02, 1e-4)
    assert surely_below(1, 500, 0.2, 1e-4) and upper_bound(1, 500, 1e-4) < 0.2


def _ever_wrong(p: float, looks: int, rng: random.Random, wrong_at: object) -> bool:
    k = 0
    for n in range(1, looks + 1):
        k += rng.random() < p
        if wrong_at(k, n):  # type: ignore[operator]
            return True
    return False


def test_checked_after_every_sample_it_is_wrong_at_most_alpha_of_the_time() -> None:
    """The point of a confidence sequence. Checked after every one of 400 samples, a fixed
    95 % Wald interval excludes the true rate at some look in most runs; the sequence at
    alpha = 5 % does in at most about 5 %."""
    p, alpha, runs, looks = 0.1, 0.05, 300, 400
    rng = random.Random(7)

    def wald_wrong(k: int, n: int) -> bool:
        if n < 10:
            return False
        estimate = k / n
        half = 1.96 * math.sqrt(max(estimate * (1 - estimate), 1e-12) / n)
        return abs(estimate - p) > half

    def sequence_wrong(k: int, n: int) -> bool:
        return outside(k, n, p, alpha)

    wald = sum(_ever_wrong(p, looks, rng, wald_wrong) for _ in range(runs)) / runs
    sequence = sum(_ever_wrong(p, looks, rng, sequence_wrong) for _ in range(runs)) / runs
    assert wald > 0.3, wald
    assert sequence <= alpha + 0.03, sequence
