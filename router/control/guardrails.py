"""Guardrails: rules that compare a canary with its control and decide a trip.

Each rule reads the counts of both versions *since the canary came under watch* (a `Watch`
subtracts the totals of that moment) and returns a `Verdict`. The rates are judged with
confidence sequences (`router/control/confidence.py`), which stay valid when the rule is checked
after every request for hours: a healthy canary falsely trips a rule with probability at
most 1 - confidence over its whole life, not per look. A sliding window could not give
that guarantee (its counts are not a running sum), so the windows are for people to read
and the decisions use these since-watch counts.

- A rate with an absolute limit trips when the candidate's rate is surely above it.
- A rate relative to the control trips when the candidate's lower bound is above the
  control's upper bound plus the margin. The rule's alpha is split over the bounds it uses.
- p95 latency becomes a rate: the share of candidate requests slower than the control's p95
  (its upper bound) plus the margin. If the candidate's p95 were within the margin, at most
  5 % of its requests could be that slow; the rule trips when surely more than 5 % are.
- Cost per request is a magnitude rule: the ratio of the two means after `min_samples`
  priced answers each. Cost is token counts times fixed prices, so a blow-up is large and
  steady; the floor and the 2x margin keep noise out (benchmarks/guardrails.py measures it).
- The eval pass rate trips when it is surely below its minimum; feedback is slow, so it waits
  for its `min_samples` like every rule.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any

from router.config import CostRule, EvalRule, Guardrails, LatencyRule, RateRule
from router.control.confidence import surely_above, surely_below, upper_bound
from router.proxy.telemetry import GUARD_LATENCY_BOUNDS, Totals, VersionStats, quantile

P95 = 0.95


@dataclass(frozen=True, slots=True)
class Verdict:
    """One rule's judgement of the candidate at one moment."""

    rule: str
    unit: str  # "rate", "seconds" or "ratio": how to print observed and threshold
    observed: float | None  # the candidate's value
    threshold: float | None  # the limit it is held to (the control's value plus the margin)
    samples: int  # the candidate's count behind `observed`
    min_samples: int
    confidence: float
    tripped: bool = False
    silent: bool = False  # neither version has produced this signal (no tool calls, feedback)

    @property
    def waiting(self) -> bool:
        """Too few samples to judge yet."""
        return self.samples < self.min_samples

    def show(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.unit == "rate":
            return f"{value * 100:.1f}%"
        if self.unit == "seconds":
            return f"{value * 1000:.0f}ms"
        return f"{value:.2f}x"

    def describe(self) -> str:
        """'error_rate (4.1% > 2.0%, n=180)'."""
        sign = ">" if self.tripped else "<="
        return (
            f"{self.rule} ({self.show(self.observed)} {sign} {self.show(self.threshold)}, "
            f"n={self.samples})"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "unit": self.unit,
            "observed": self.observed,
            "threshold": self.threshold,
            "samples": self.samples,
            "min_samples": self.min_samples,
            "confidence": self.confidence,
            "tripped": self.tripped,
            "waiting": self.waiting,
            "silent": self.silent,
        }


class Guard:
    """A route's rules, ready to judge (candidate, control) counts. `split` > 1 makes it a
    floor (a fleet's sidecar, under the controller's pooled judge): each rule then judges at
    alpha / split, so `split` such judges falsely trip no more often than one would (see
    `local_floor`)."""

    def __init__(self, rules: Guardrails, split: int = 1) -> None:
        if split < 1:
            raise ValueError(f"split {split} must be at least 1")
        self.rules = rules
        self.alpha = (1.0 - rules.confidence) / split

    def judge(self, candidate: Totals, control: Totals) -> list[Verdict]:
        rules, verdicts = self.rules, []
        if rules.error_rate:
            verdicts.append(
                self._rate(
                    "error_rate",
                    rules.error_rate,
                    (candidate.errors, candidate.requests),
                    (control.errors, control.requests),
                )
            )
        if rules.p95_latency:
            verdicts.append(self._latency(rules.p95_latency, candidate, control))
        if rules.cost_per_request:
            verdicts.append(self._cost(rules.cost_per_request, candidate, control))
        if rules.tool_call_failure_rate:
            verdicts.append(
                self._rate(
                    "tool_call_failure_rate",
                    rules.tool_call_failure_rate,
                    (candidate.tool_failures, candidate.tool_calls),
                    (control.tool_failures, control.tool_calls),
                    optional=True,
                )
            )
        if rules.refusal_rate:
            verdicts.append(
                self._rate(
                    "refusal_rate",
                    rules.refusal_rate,
                    (candidate.refusals, candidate.requests),
                    (control.refusals, control.requests),
                )
            )
        if rules.eval_pass_rate:
            verdicts.append(self._eval(rules.eval_pass_rate, candidate, control))
        return verdicts

    def _rate(
        self,
        name: str,
        rule: RateRule,
        candidate: tuple[int, int],
        control: tuple[int, int],
        optional: bool = False,
    ) -> Verdict:
        """`optional`: the signal need not occur at all (an agent may call no tools)."""
        k, n = candidate
        k_control, n_control = control
        observed = k / n if n else None
        limits = []
        if rule.max is not None:
            limits.append(rule.max)
        if rule.max_over_control is not None and n_control:
            limits.append(k_control / n_control + rule.max_over_control)
        verdict = Verdict(
            name,
            "rate",
            observed,
            min(limits) if limits else None,
            n,
            rule.min_samples,
            1.0 - self.alpha,
            silent=optional and n == 0 and n_control == 0,
        )
        if verdict.waiting or observed is None:
            return verdict
        # Alpha is split over the bounds this rule computes (a union bound).
        bounds = (rule.max is not None) + 2 * (rule.max_over_control is not None)
        alpha = self.alpha / bounds
        tripped = rule.max is not None and surely_above(k, n, rule.max, alpha)
        relative = rule.max_over_control
        # Only a rate above the control's estimate plus the margin can trip; skip the rest.
        if not tripped and relative is not None and observed > _rate_of(control) + relative:
            ceiling = upper_bound(k_control, n_control, alpha) + relative
            tripped = ceiling < 1.0 and surely_above(k, n, ceiling, alpha)
        return _tripped(verdict) if tripped else verdict

    def _latency(self, rule: LatencyRule, candidate: Totals, control: Totals) -> Verdict:
        n, n_control = candidate.requests, control.requests
        control_p95 = quantile(GUARD_LATENCY_BOUNDS, control.latency, P95)
        verdict = Verdict(
            "p95_latency",
            "seconds",
            quantile(GUARD_LATENCY_BOUNDS, candidate.latency, P95),
            None if control_p95 is None else control_p95 + rule.max_over_control,
            n,
            rule.min_samples,
            1.0 - self.alpha,
        )
        if verdict.waiting or n_control < rule.min_samples or control_p95 is None:
            return verdict
        faster = list(accumulate(candidate.latency))  # answers at or below each bound
        # Only a candidate with over 5 % of its answers above the control's p95 plus the
        # margin can trip; skip the bounds otherwise.
        if (
            n - faster[bisect_left(GUARD_LATENCY_BOUNDS, control_p95 + rule.max_over_control)]
            <= (1.0 - P95) * n
        ):
            return verdict
        alpha = self.alpha / 2
        ceiling = _quantile_upper_bound(control.latency, n_control, P95, alpha)
        if ceiling is None:
            return verdict
        # Answers surely slower than the ceiling: in buckets whose lower edge is at or above it.
        last_fast = bisect_left(GUARD_LATENCY_BOUNDS, ceiling + rule.max_over_control)
        slow = n - faster[last_fast]
        tripped = surely_above(slow, n, 1.0 - P95, alpha)
        return _tripped(verdict) if tripped else verdict

    def _cost(self, rule: CostRule, candidate: Totals, control: Totals) -> Verdict:
        ratio = None
        if candidate.priced and control.priced and control.cost_usd > 0:
            ratio = (candidate.cost_usd / candidate.priced) / (control.cost_usd / control.priced)
        verdict = Verdict(
            "cost_per_request",
            "ratio",
            ratio,
            rule.max_ratio,
            candidate.priced,
            rule.min_samples,
            1.0 - self.alpha,
        )
        if verdict.waiting or control.priced < rule.min_samples or ratio is None:
            return verdict
        return _tripped(verdict) if ratio > rule.max_ratio else verdict

    def _eval(self, rule: EvalRule, candidate: Totals, control: Totals) -> Verdict:
        passed, judged = candidate.eval_pass, candidate.eval_pass + candidate.eval_fail
        verdict = Verdict(
            "eval_pass_rate",
            "rate",
            passed / judged if judged else None,
            rule.min,
            judged,
            rule.min_samples,
            1.0 - self.alpha,
            silent=judged == 0 and control.eval_pass + control.eval_fail == 0,
        )
        if verdict.waiting:
            return verdict
        tripped = surely_below(passed, judged, rule.min, self.alpha)
        return _tripped(verdict) if tripped else verdict


def local_floor(rules: Guardrails, split: int) -> Guard:
    """A sidecar's own guard in a fleet whose controller judges the pooled evidence: the
    route's rules at alpha / split (fleet.local_floor_split). Up to `split` such judges,
    each on its own slice, falsely trip a healthy canary with probability at most alpha
    together (a union bound), so the floor adds at most the pooled judge's own alpha.
    The price is log(split) more evidence before a sidecar trips on its own
    (benchmarks/pooled.py measures it)."""
    return Guard(rules, split)


def _rate_of(counts: tuple[int, int]) -> float:
    events, trials = counts
    return events / trials if trials else 1.0  # no control data: nothing is above it


def _tripped(verdict: Verdict) -> Verdict:
    return replace(verdict, tripped=True)


def _quantile_upper_bound(counts: tuple[int, ...], n: int, q: float, alpha: float) -> float | None:
    """The smallest bucket bound b with P(latency > b) < 1 - q at confidence 1 - alpha.
    (Judged as the small share above b, where the confidence sequence is tightest.)"""
    below = list(accumulate(counts))
    # Below the q-quantile estimate no bound can qualify; start there.
    for i in range(bisect_left(below, q * n), len(GUARD_LATENCY_BOUNDS)):
        above = n - below[i]
        if above / n < 1.0 - q and surely_below(above, n, 1.0 - q, alpha):
            return GUARD_LATENCY_BOUNDS[i]
    return None


class Watch:
    """One canary under watch: the guard and both versions' totals when watching began.

    `check()` is cheap when nothing new has happened, so it can run on a short tick."""

    def __init__(self, guard: Guard, candidate: VersionStats, control: VersionStats) -> None:
        self.guard = guard
        self.candidate = candidate
        self.control = control
        self.candidate_start = candidate.totals()
        self.control_start = control.totals()
        self._seen = -1

    def verdicts(self) -> list[Verdict]:
        return self.guard.judge(
            self.candidate.totals().since(self.candidate_start),
            self.control.totals().since(self.control_start),
        )

    def check(self) -> Verdict | None:
        """The first rule that trips, if any; None also when nothing new was counted."""
        stats = self.candidate
        seen = sum(stats.outcomes) + stats.eval_pass + stats.eval_fail
        if seen == self._seen:
            return None
        self._seen = seen
        for verdict in self.verdicts():
            if verdict.tripped:
                return verdict
        return None
