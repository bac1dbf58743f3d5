"""Guardrail rules on synthetic counts: each trips on its regression, none on healthy
numbers, none before its min_samples."""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import pytest

from router.config import Guardrails, Route
from router.control.guardrails import Guard, Watch, local_floor
from router.proxy.telemetry import (
    GUARD_LATENCY_BOUNDS,
    Outcome,
    TokenPrice,
    Totals,
    Usage,
    VersionStats,
)


def totals(requests: int, latency_ms: float = 100.0, slow: int = 0, **counts: Any) -> Totals:
    """`requests` answers at `latency_ms`, `slow` of them at ten times that."""
    latency = [0] * (len(GUARD_LATENCY_BOUNDS) + 1)
    latency[bisect_left(GUARD_LATENCY_BOUNDS, latency_ms / 1000)] += requests - slow
    latency[bisect_left(GUARD_LATENCY_BOUNDS, latency_ms / 100)] += slow
    return Totals(requests=requests, latency=tuple(latency), **counts)


def tripped(rules: Guardrails, candidate: Totals, control: Totals) -> list[str]:
    return [v.rule for v in Guard(rules).judge(candidate, control) if v.tripped]


CONTROL = totals(2000, errors=20, priced=2000, cost_usd=20.0, tool_calls=1000, tool_failures=10)


def test_a_healthy_canary_trips_nothing() -> None:
    candidate = totals(100, errors=1, priced=100, cost_usd=1.1, tool_calls=50, tool_failures=1)
    assert tripped(Guardrails(), candidate, CONTROL) == []


def test_error_rate_over_the_absolute_limit_trips() -> None:
    candidate = totals(40, errors=20, priced=40, cost_usd=0.4)
    assert tripped(Guardrails(), candidate, CONTROL) == ["error_rate"]


def test_rules_wait_for_their_min_samples() -> None:
    candidate = totals(9, errors=9)
    verdicts = {v.rule: v for v in Guard(Guardrails()).judge(candidate, CONTROL)}
    assert verdicts["error_rate"].waiting and not verdicts["error_rate"].tripped


def test_error_rate_relative_to_control() -> None:
    rules = Guardrails(error_rate={"max_over_control": "1%"})  # type: ignore[arg-type]
    # control at 1%: 8% on the candidate is surely more than 1 point above it
    assert tripped(rules, totals(600, errors=48), CONTROL) == ["error_rate"]
    assert tripped(rules, totals(600, errors=9), CONTROL) == []


def test_p95_latency_over_control_plus_margin_trips() -> None:
    slow_candidate = totals(60, latency_ms=450.0)  # control answers in 100 ms
    assert tripped(Guardrails(), slow_candidate, CONTROL) == ["p95_latency"]
    a_few_slow = totals(200, latency_ms=100.0, slow=4)  # 2 % slow: p95 unchanged
    assert tripped(Guardrails(), a_few_slow, CONTROL) == []


def test_cost_per_request_ratio_trips() -> None:
    candidate = totals(60, priced=60, cost_usd=60 * 0.03)  # 3x the control's 0.01
    assert tripped(Guardrails(), candidate, CONTROL) == ["cost_per_request"]
    rules = Guardrails(cost_per_request={"max_ratio": 4})  # type: ignore[arg-type]
    assert tripped(rules, candidate, CONTROL) == []


def test_tool_call_failures_and_refusals_trip_relative_to_control() -> None:
    broken_tools = totals(60, tool_calls=60, tool_failures=25)
    assert tripped(Guardrails(), broken_tools, CONTROL) == ["tool_call_failure_rate"]
    refusing = totals(60, refusals=20)
    assert tripped(Guardrails(), refusing, CONTROL) == ["refusal_rate"]


def test_eval_pass_rate_minimum() -> None:
    rules = Guardrails(eval_pass_rate={"min": "90%"})  # type: ignore[arg-type]
    assert tripped(rules, totals(10, eval_pass=40, eval_fail=30), CONTROL) == ["eval_pass_rate"]
    assert tripped(rules, totals(10, eval_pass=68, eval_fail=2), CONTROL) == []


def test_verdict_describes_the_trip_for_people() -> None:
    verdict = Guard(Guardrails()).judge(totals(180, errors=74), CONTROL)[0]
    assert verdict.describe() == "error_rate (41.1% > 2.0%, n=180)"


def _route(**fields: Any) -> Route:
    return Route.model_validate({"bundles": "b", "active": "v1", "candidate": "v2", **fields})


def test_no_block_means_the_defaults_and_off_means_unguarded() -> None:
    defaults = _route().guardrails
    assert isinstance(defaults, Guardrails) and defaults.error_rate is not None
    assert defaults.error_rate.max == 0.02 and defaults.cost_per_request is not None
    assert _route(guardrails=False).guardrails == "off"  # YAML reads `off` as false
    assert not _route(guardrails="off").guarded


def test_a_rule_can_be_switched_off_and_rates_read_as_percent() -> None:
    rules = _route(guardrails={"p95_latency": False, "error_rate": {"max": "5%"}}).guardrails
    assert isinstance(rules, Guardrails)
    assert rules.p95_latency is None and rules.error_rate and rules.error_rate.max == 0.05


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"error_rate": {"min_samples": 5}}, "sets no limit"),
        ({"error_rate": {"max": "150%"}}, "between 0% and 100%"),
        ({"cost_per_request": {"max_ratio": 0.5}}, "greater than 1"),
        ({"p95_latency": {"max_over_control": "soon"}}, "not a duration"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _route(guardrails=block)


def test_a_watch_counts_only_what_happened_since_it_began() -> None:
    price = TokenPrice(1e-6, 1e-6, 1e-6, 1e-6)
    candidate, control = VersionStats("r", "v2", price, 60), VersionStats("r", "v1", price, 60)
    for _ in range(50):  # errors before the watch began do not count against the canary
        candidate.record_request(Outcome.PROVIDER_5XX, seconds=0.1, overhead=0.0)
    watch = Watch(Guard(Guardrails()), candidate, control)
    for _ in range(50):
        for stats in (candidate, control):
            stats.record_usage(Usage(input=10, output=10))
            stats.record_request(Outcome.OK, seconds=0.1, overhead=0.0)
    assert watch.check() is None
    assert watch.check() is None  # nothing new: not even judged
    for _ in range(20):
        candidate.record_request(Outcome.PROVIDER_5XX, seconds=0.1, overhead=0.0)
    verdict = watch.check()
    assert verdict is not None and verdict.rule == "error_rate" and verdict.samples == 70


def test_the_local_floor_judges_at_alpha_over_split() -> None:
    rules = Guardrails()
    floor = local_floor(rules, 1000)
    assert floor.alpha == pytest.approx((1 - rules.confidence) / 1000)
    # 8 errors in 40 answers is surely over 2 % at the route's confidence, not at the floor's.
    candidate = totals(40, errors=8, priced=40, cost_usd=0.4)
    assert tripped(rules, candidate, CONTROL) == ["error_rate"]
    assert [v.rule for v in floor.judge(candidate, CONTROL) if v.tripped] == []
    # A larger regression trips the floor too, only later.
    worse = totals(80, errors=20, priced=80, cost_usd=0.8)
    assert [v.rule for v in floor.judge(worse, CONTROL) if v.tripped] == ["error_rate"]
    assert floor.judge(worse, CONTROL)[0].confidence == pytest.approx(1 - floor.alpha)


def test_a_split_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="split 0 must be at least 1"):
        local_floor(Guardrails(), 0)
