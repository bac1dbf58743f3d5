"""Per-version counters and sliding windows, updated on the hot path with no lock.

One process runs one event loop, and nothing else runs between two awaits, so a request's
`record_*` call updates plain ints, floats and preallocated lists directly. The Prometheus
exposition (`router/admin/metrics.py`) reads the same objects at scrape time, and the guardrails
read the sliding windows through `VersionStats.window()`.

A version's sliding window allocates a one-second slot only in a second that counts
something, so thousands of idle versions cost little. A slot's bucket counts are an array of
machine ints, which the garbage collector never walks: busy versions keep a minute of slots
each, and as lists their millions of entries made every full collection stall the event loop.
The other counters are lists, built with the config and frozen with it (`router.heap`).

Latency histograms use log-spaced buckets, eight per doubling (each bound is 2^(1/8) =
1.09 times the last), from 1 ms to 10 min: a quantile read from them is within about 4.5 %
of the true value anywhere in that range.
"""

from __future__ import annotations

import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from itertools import accumulate
from typing import Any


class Outcome(Enum):
    """How a request ended, and whether that counts against the version that served it.

    A provider 4xx is usually the caller's doing and is counted apart; a 429 may be the new
    snapshot's tighter limit, so it counts. A router error (a 400 for a bad request, say) is
    never the version's fault."""

    label: str
    index: int  # position in a version's per-outcome counters
    is_error: bool

    def __new__(cls, label: str, is_error: bool) -> Outcome:
        member = object.__new__(cls)
        member._value_ = label
        member.label = label
        member.index = len(cls.__members__)
        member.is_error = is_error
        return member

    OK = ("ok", False)
    PROVIDER_4XX = ("provider_4xx", False)
    PROVIDER_5XX = ("provider_5xx", True)
    PROVIDER_429 = ("provider_429", True)
    TIMEOUT = ("timeout", True)
    CONNECT_ERROR = ("connect_error", True)
    CLIENT_DISCONNECT = ("client_disconnect", False)
    ROUTER_ERROR = ("router_error", False)

    @classmethod
    def of_status(cls, status: int) -> Outcome:
        """The outcome of an answer the provider sent with this status."""
        if status < 400:
            return cls.OK
        if status == 429:
            return cls.PROVIDER_429
        return cls.PROVIDER_4XX if status < 500 else cls.PROVIDER_5XX


OUTCOMES = tuple(outcome.label for outcome in Outcome)
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
# `client_tool`: a call to a tool the client sent (client_tools: merge), not a bundle's.
TOOL_RESULTS = ("valid", "unknown_tool", "invalid_json", "invalid_arguments", "client_tool")
TOOL_INDEX = {name: i for i, name in enumerate(TOOL_RESULTS)}


def _log_bounds(low: float, high: float, per_doubling: int) -> tuple[float, ...]:
    bounds, k = [], 0
    while True:
        bound = low * 2 ** (k / per_doubling)
        bounds.append(float(f"{bound:.6g}"))
        if bound >= high:
            return tuple(bounds)
        k += 1


LATENCY_BOUNDS = _log_bounds(0.001, 600.0, 8)  # seconds, 155 bounds
# The guardrails judge p95 against the control's p95 plus a margin of a few hundred ms, so
# they count latency in finer buckets (2.2 % wide: 33 ms at 1.5 s) than /metrics needs.
GUARD_LATENCY_BOUNDS = _log_bounds(0.001, 600.0, 32)
OVERHEAD_BOUNDS = _log_bounds(0.00001, 1.0, 4)  # seconds, 10 us .. 1 s


def zeros(n: int) -> array[int]:
    """n counters at 0, in an array the garbage collector does not walk."""
    return array("q", bytes(8 * n))


class Histogram:
    """Counts per bucket (the last one is +Inf) and a sum; bisect finds the bucket."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value


def quantile(bounds: tuple[float, ...], counts: Sequence[int], q: float) -> float | None:
    """The q-quantile of bucket counts, interpolated geometrically inside its bucket."""
    cumulative = list(accumulate(counts))
    n = cumulative[-1] if cumulative else 0
    if n == 0:
        return None
    rank = q * n
    # The first bucket whose running total reaches the rank (it has a count of its own).
    i = bisect_left(cumulative, rank) if rank > 0 else bisect_right(cumulative, 0)
    if i >= len(bounds):
        return bounds[-1]
    count = counts[i]
    upper = bounds[i]
    lower = bounds[i - 1] if i else upper / (bounds[1] / bounds[0])
    fraction = (rank - (cumulative[i] - count)) / count
    return float(lower * (upper / lower) ** fraction)


class WindowSlot:
    """One second of one version's outcomes."""

    __slots__ = (
        "cost",
        "errors",
        "eval_fail",
        "eval_pass",
        "latency",
        "priced",
        "refusals",
        "requests",
        "second",
        "tool_calls",
        "tool_failures",
    )

    def __init__(self, second: int) -> None:
        self.second = second
        self.requests = 0
        self.errors = 0
        self.priced = 0
        self.cost = 0.0
        self.tool_calls = 0
        self.tool_failures = 0
        self.refusals = 0
        self.eval_pass = 0
        self.eval_fail = 0
        self.latency = zeros(len(LATENCY_BOUNDS) + 1)


# Every version's window starts out as this one empty slot, shared and never written (its
# second matches no clock reading): a version allocates a slot only in a second it counts
# something, so thousands of idle versions cost a list of pointers each.
_NEVER = WindowSlot(-1)


@dataclass(frozen=True, slots=True)
class WindowView:
    """One version's outcomes over the last `seconds` seconds."""

    seconds: int
    requests: int
    errors: int
    p95_seconds: float | None
    cost_usd: float
    priced_requests: int
    tool_calls: int
    tool_failures: int
    refusals: int
    eval_pass: int
    eval_fail: int

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def cost_per_request(self) -> float | None:
        return self.cost_usd / self.priced_requests if self.priced_requests else None

    @property
    def tool_failure_rate(self) -> float | None:
        return self.tool_failures / self.tool_calls if self.tool_calls else None

    @property
    def refusal_rate(self) -> float | None:
        return self.refusals / self.requests if self.requests else None

    @property
    def eval_pass_rate(self) -> float | None:
        judged = self.eval_pass + self.eval_fail
        return self.eval_pass / judged if judged else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "window_seconds": self.seconds,
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "p95_seconds": self.p95_seconds,
            "cost_per_request_usd": self.cost_per_request,
            "tool_calls": self.tool_calls,
            "tool_failures": self.tool_failures,
            "tool_failure_rate": self.tool_failure_rate,
            "refusals": self.refusals,
            "refusal_rate": self.refusal_rate,
            "eval_pass": self.eval_pass,
            "eval_fail": self.eval_fail,
            "eval_pass_rate": self.eval_pass_rate,
        }


@dataclass(frozen=True, slots=True)
class Totals:
    """One version's cumulative counts at one moment. `since(earlier)` gives the counts
    between two moments, which is what a sequential test needs (a sliding window is not)."""

    requests: int = 0
    errors: int = 0
    latency: tuple[int, ...] = (0,) * (len(GUARD_LATENCY_BOUNDS) + 1)  # per GUARD_LATENCY_BOUNDS
    priced: int = 0
    cost_usd: float = 0.0
    tool_calls: int = 0
    tool_failures: int = 0
    refusals: int = 0
    eval_pass: int = 0
    eval_fail: int = 0

    def since(self, earlier: Totals) -> Totals:
        return Totals(
            requests=self.requests - earlier.requests,
            errors=self.errors - earlier.errors,
            latency=tuple(a - b for a, b in zip(self.latency, earlier.latency, strict=True)),
            priced=self.priced - earlier.priced,
            cost_usd=self.cost_usd - earlier.cost_usd,
            tool_calls=self.tool_calls - earlier.tool_calls,
            tool_failures=self.tool_failures - earlier.tool_failures,
            refusals=self.refusals - earlier.refusals,
            eval_pass=self.eval_pass - earlier.eval_pass,
            eval_fail=self.eval_fail - earlier.eval_fail,
        )


@dataclass(slots=True)
class Usage:
    """Tokens of one answer, read from the provider's usage report."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0


@dataclass(frozen=True, slots=True)
class TokenPrice:
    """USD per token (the config gives USD per million)."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    def cost(self, usage: Usage) -> float:
        return (
            usage.input * self.input
            + usage.output * self.output
            + usage.cache_read * self.cache_read
            + usage.cache_write * self.cache_write
        )


class VersionStats:
    """Everything counted for one (route, version). Written only by the event loop."""

    enabled = True

    def __init__(self, route: str, version: str, price: TokenPrice | None, window_seconds: int):
        self.route = route
        self.version = version
        self.price = price
        self.outcomes = [0] * len(OUTCOMES)
        self.errors = 0
        self.latency = Histogram(LATENCY_BOUNDS)
        self.guard_latency = [0] * (len(GUARD_LATENCY_BOUNDS) + 1)
        self.ttft = Histogram(LATENCY_BOUNDS)
        self.overhead = Histogram(OVERHEAD_BOUNDS)
        self.tokens = [0] * len(TOKEN_KINDS)
        self.cost_usd = 0.0
        self.priced = 0  # answers with usage and a price: the denominator of cost per request
        self.unpriced = 0  # answers with usage whose model has no price
        self.usage_incomplete = 0  # answers whose usage never arrived or stayed partial
        self.tool_calls = [0] * len(TOOL_RESULTS)
        self.refusals = 0
        self.eval_pass = 0
        self.eval_fail = 0
        self.eval_score_sum = 0.0
        self.eval_scores = 0
        self.slots = [_NEVER] * window_seconds
        self.clock = time.monotonic  # replaceable, so tests can move time

    def _slot(self) -> WindowSlot:
        second = int(self.clock())
        slots = self.slots
        i = second % len(slots)
        slot = slots[i]
        if slot.second != second:
            slot = slots[i] = WindowSlot(second)
        return slot

    def window_slot(self) -> WindowSlot:
        """The slot of the current second, for counts that were made elsewhere: a fleet's
        controller adds its sidecars' counts here as they arrive (router.fleet.pool)."""
        return self._slot()

    def requests_within(self, seconds: int) -> int:
        """Requests of the last `seconds` (at most the window), without the window's
        latency sums: cheap enough to read for every version at every scrape."""
        span = min(seconds, len(self.slots))
        now = int(self.clock())
        oldest = now - span + 1
        return sum(slot.requests for slot in self.slots if oldest <= slot.second <= now)

    def record_request(
        self, outcome: Outcome, seconds: float, overhead: float, ttft: float | None = None
    ) -> None:
        self.outcomes[outcome.index] += 1
        bucket = bisect_left(LATENCY_BOUNDS, seconds)  # one search for the histogram and window
        latency = self.latency
        latency.counts[bucket] += 1
        latency.total += seconds
        self.guard_latency[bisect_left(GUARD_LATENCY_BOUNDS, seconds)] += 1
        self.overhead.observe(overhead)
        if ttft is not None:
            self.ttft.observe(ttft)
        slot = self._slot()
        slot.requests += 1
        slot.latency[bucket] += 1
        if outcome.is_error:
            self.errors += 1
            slot.errors += 1

    def record_usage(self, usage: Usage | None, complete: bool = True) -> None:
        """Tokens and cost of one answer. `usage` is None when none arrived; incomplete
        usage (a stream cut short) adds its tokens and cost to the totals, which are what
        the provider bills, but not to the per-request cost the guardrails compare."""
        if usage is None or not complete:
            self.usage_incomplete += 1
            if usage is None:
                return
        tokens = self.tokens
        tokens[0] += usage.input
        tokens[1] += usage.output
        tokens[2] += usage.cache_read
        tokens[3] += usage.cache_write
        if self.price is None:
            if complete:
                self.unpriced += 1
            return
        cost = self.price.cost(usage)
        self.cost_usd += cost
        if not complete:
            return
        self.priced += 1
        slot = self._slot()
        slot.cost += cost
        slot.priced += 1

    def record_tool_call(self, result: str) -> None:
        self.tool_calls[TOOL_INDEX[result]] += 1
        if result == "client_tool":
            return  # counted, but the guardrails judge only the bundle's own tools
        slot = self._slot()
        slot.tool_calls += 1
        if result != "valid":
            slot.tool_failures += 1

    def record_refusal(self) -> None:
        self.refusals += 1
        self._slot().refusals += 1

    def record_feedback(self, passed: bool, score: float | None) -> None:
        slot = self._slot()
        if passed:
            self.eval_pass += 1
            slot.eval_pass += 1
        else:
            self.eval_fail += 1
            slot.eval_fail += 1
        if score is not None:
            self.eval_score_sum += score
            self.eval_scores += 1

    def totals(self) -> Totals:
        """Everything counted so far; the guardrails subtract two of these."""
        tools = self.tool_calls
        bundle_calls = sum(tools) - tools[TOOL_INDEX["client_tool"]]
        return Totals(
            requests=sum(self.outcomes),
            errors=self.errors,
            latency=tuple(self.guard_latency),
            priced=self.priced,
            cost_usd=self.cost_usd,
            tool_calls=bundle_calls,
            tool_failures=bundle_calls - tools[TOOL_INDEX["valid"]],
            refusals=self.refusals,
            eval_pass=self.eval_pass,
            eval_fail=self.eval_fail,
        )

    def window(self, seconds: int | None = None) -> WindowView:
        """Outcomes of the last `seconds` (at most the window size), in O(slots)."""
        span = min(seconds or len(self.slots), len(self.slots))
        now = int(self.clock())
        oldest = now - span + 1
        requests = errors = priced = calls = failures = refusals = passed = failed = 0
        cost = 0.0
        latency = [0] * (len(LATENCY_BOUNDS) + 1)
        for slot in self.slots:
            if oldest <= slot.second <= now:
                requests += slot.requests
                errors += slot.errors
                priced += slot.priced
                cost += slot.cost
                calls += slot.tool_calls
                failures += slot.tool_failures
                refusals += slot.refusals
                passed += slot.eval_pass
                failed += slot.eval_fail
                for i, count in enumerate(slot.latency):
                    if count:
                        latency[i] += count
        return WindowView(
            seconds=span,
            requests=requests,
            errors=errors,
            p95_seconds=quantile(LATENCY_BOUNDS, latency, 0.95),
            cost_usd=cost,
            priced_requests=priced,
            tool_calls=calls,
            tool_failures=failures,
            refusals=refusals,
            eval_pass=passed,
            eval_fail=failed,
        )


class RouteCounters:
    """Per-route counts that belong to no version."""

    __slots__ = (
        "chained_requests",
        "client_system_prompts",
        "fingerprinted_requests",
        "in_flight",
        "overloaded",
        "sessionless_requests",
    )

    def __init__(self) -> None:
        self.sessionless_requests = 0  # no key at all: a random bucket
        self.fingerprinted_requests = 0  # keyed by the conversation's first user message
        self.chained_requests = 0  # sent where their previous_response_id was answered
        self.client_system_prompts = 0
        self.in_flight = 0  # requests being answered now, streams included
        self.overloaded = 0  # requests turned away with 503 because in_flight was at the limit


class NullStats(VersionStats):
    """Counts nothing. Used with `telemetry.enabled: false`, which exists to measure what
    the telemetry costs (benchmarks/telemetry.py); the proxy also skips reading answers."""

    enabled = False

    def record_request(
        self, outcome: Outcome, seconds: float, overhead: float, ttft: float | None = None
    ) -> None:
        pass

    def record_usage(self, usage: Usage | None, complete: bool = True) -> None:
        pass

    def record_tool_call(self, result: str) -> None:
        pass

    def record_refusal(self) -> None:
        pass

    def record_feedback(self, passed: bool, score: float | None) -> None:
        pass
