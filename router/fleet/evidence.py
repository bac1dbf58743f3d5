"""Pooled evidence: every sidecar's per-version counters on Redis, for the controller to
judge the whole fleet's traffic (docs/fleet.md, "Pooled guardrails").

    Counts   one sidecar process's counters of one version: from its `VersionStats`, as
             compact JSON and back, the difference of two readings, added into the
             controller's own `VersionStats` (router.fleet.pool)
    Flusher  a sidecar's loop: about once a second, one pipeline writes the cumulative
             counters of every version whose counters moved to `Keys.evidence(route,
             version)`, field INSTANCE@BOOT, with the sidecar's labels

Cumulative counts written with HSET make a write idempotent: a sidecar that reconnects
writes the same numbers again (nothing is counted twice), one that disappears leaves its
last field behind (its counts stay), and a restarted one writes under a new BOOT (the old
process's counts stay too). The loop reads counters the data path keeps anyway, so the hot
path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from router.fleet.keys import Keys
from router.pacing import Pacer
from router.proxy.live import LiveRoute
from router.proxy.telemetry import (
    GUARD_LATENCY_BOUNDS,
    LATENCY_BOUNDS,
    OUTCOMES,
    TOKEN_KINDS,
    TOOL_INDEX,
    TOOL_RESULTS,
    Outcome,
    Totals,
    VersionStats,
)

log = logging.getLogger("router.fleet")
TTL_SECONDS = 24 * 3600  # an evidence hash outlives its last write by a day
REFRESH_SECONDS = 60.0  # every version with counts is written again this often (the TTL;
# a Redis that came back empty gets the counts of versions that are quiet now)
ERRORS = tuple(o.index for o in Outcome if o.is_error)
CLIENT_TOOL = TOOL_INDEX["client_tool"]
VALID_TOOL = TOOL_INDEX["valid"]

Sparse = Mapping[int, int]  # bucket index -> count, buckets with a count only


def _sparse(counts: Sequence[int]) -> dict[int, int]:
    return {i: n for i, n in enumerate(counts) if n}


@dataclass(frozen=True, slots=True)
class Counts:
    """One process's counters of one version at one moment (or the difference of two)."""

    outcomes: tuple[int, ...] = (0,) * len(OUTCOMES)
    guard_latency: Sparse = field(default_factory=dict)  # per GUARD_LATENCY_BOUNDS
    latency: Sparse = field(default_factory=dict)  # per LATENCY_BOUNDS, for /metrics
    latency_sum: float = 0.0
    ttft: Sparse = field(default_factory=dict)  # per LATENCY_BOUNDS
    ttft_sum: float = 0.0
    tool_calls: tuple[int, ...] = (0,) * len(TOOL_RESULTS)
    refusals: int = 0
    eval_pass: int = 0
    eval_fail: int = 0
    tokens: tuple[int, ...] = (0,) * len(TOKEN_KINDS)
    cost_usd: float = 0.0
    priced: int = 0
    unpriced: int = 0
    usage_incomplete: int = 0

    @property
    def requests(self) -> int:
        return sum(self.outcomes)

    @property
    def errors(self) -> int:
        return sum(self.outcomes[i] for i in ERRORS)

    @classmethod
    def of(cls, stats: VersionStats) -> Counts:
        """The counters now (no await: one moment's numbers)."""
        return cls(
            outcomes=tuple(stats.outcomes),
            guard_latency=_sparse(stats.guard_latency),
            latency=_sparse(stats.latency.counts),
            latency_sum=stats.latency.total,
            ttft=_sparse(stats.ttft.counts),
            ttft_sum=stats.ttft.total,
            tool_calls=tuple(stats.tool_calls),
            refusals=stats.refusals,
            eval_pass=stats.eval_pass,
            eval_fail=stats.eval_fail,
            tokens=tuple(stats.tokens),
            cost_usd=stats.cost_usd,
            priced=stats.priced,
            unpriced=stats.unpriced,
            usage_incomplete=stats.usage_incomplete,
        )

    def _ints(self) -> tuple[int, ...]:
        """Every integer counter, for comparing two readings."""
        return (
            *self.outcomes,
            *self.tool_calls,
            *self.tokens,
            self.refusals,
            self.eval_pass,
            self.eval_fail,
            self.priced,
            self.unpriced,
            self.usage_incomplete,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "outcomes": list(self.outcomes),
            "guard_latency": {str(i): n for i, n in self.guard_latency.items()},
            "latency": {str(i): n for i, n in self.latency.items()},
            "latency_sum": self.latency_sum,
            "ttft": {str(i): n for i, n in self.ttft.items()},
            "ttft_sum": self.ttft_sum,
            "tool_calls": list(self.tool_calls),
            "refusals": self.refusals,
            "eval_pass": self.eval_pass,
            "eval_fail": self.eval_fail,
            "tokens": list(self.tokens),
            "cost_usd": self.cost_usd,
            "priced": self.priced,
            "unpriced": self.unpriced,
            "usage_incomplete": self.usage_incomplete,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Counts:
        """Raises ValueError (or KeyError, TypeError) for anything malformed."""
        return cls(
            outcomes=_counts(data["outcomes"], len(OUTCOMES), "outcomes"),
            guard_latency=_buckets(data["guard_latency"], len(GUARD_LATENCY_BOUNDS) + 1),
            latency=_buckets(data["latency"], len(LATENCY_BOUNDS) + 1),
            latency_sum=_number(data["latency_sum"]),
            ttft=_buckets(data["ttft"], len(LATENCY_BOUNDS) + 1),
            ttft_sum=_number(data["ttft_sum"]),
            tool_calls=_counts(data["tool_calls"], len(TOOL_RESULTS), "tool_calls"),
            refusals=_count(data["refusals"]),
            eval_pass=_count(data["eval_pass"]),
            eval_fail=_count(data["eval_fail"]),
            tokens=_counts(data["tokens"], len(TOKEN_KINDS), "tokens"),
            cost_usd=_number(data["cost_usd"]),
            priced=_count(data["priced"]),
            unpriced=_count(data.get("unpriced", 0)),
            usage_incomplete=_count(data.get("usage_incomplete", 0)),
        )

    def since(self, earlier: Counts) -> Counts | None:
        """What was counted after `earlier`; None if any counter went down (the field is
        not the same process's, or Redis was replaced): nothing can be trusted of it."""
        if any(a < b for a, b in zip(self._ints(), earlier._ints(), strict=True)):
            return None
        for now, then in ((self.guard_latency, earlier.guard_latency), (self.ttft, earlier.ttft)):
            if any(now.get(i, 0) < n for i, n in then.items()):
                return None
        if any(self.latency.get(i, 0) < n for i, n in earlier.latency.items()):
            return None
        return Counts(
            outcomes=_minus(self.outcomes, earlier.outcomes),
            guard_latency=_sparse_minus(self.guard_latency, earlier.guard_latency),
            latency=_sparse_minus(self.latency, earlier.latency),
            latency_sum=max(0.0, self.latency_sum - earlier.latency_sum),
            ttft=_sparse_minus(self.ttft, earlier.ttft),
            ttft_sum=max(0.0, self.ttft_sum - earlier.ttft_sum),
            tool_calls=_minus(self.tool_calls, earlier.tool_calls),
            refusals=self.refusals - earlier.refusals,
            eval_pass=self.eval_pass - earlier.eval_pass,
            eval_fail=self.eval_fail - earlier.eval_fail,
            tokens=_minus(self.tokens, earlier.tokens),
            cost_usd=max(0.0, self.cost_usd - earlier.cost_usd),
            priced=self.priced - earlier.priced,
            unpriced=self.unpriced - earlier.unpriced,
            usage_incomplete=self.usage_incomplete - earlier.usage_incomplete,
        )

    def plus(self, other: Counts) -> Counts:
        return Counts(
            outcomes=_plus(self.outcomes, other.outcomes),
            guard_latency=_sparse_plus(self.guard_latency, other.guard_latency),
            latency=_sparse_plus(self.latency, other.latency),
            latency_sum=self.latency_sum + other.latency_sum,
            ttft=_sparse_plus(self.ttft, other.ttft),
            ttft_sum=self.ttft_sum + other.ttft_sum,
            tool_calls=_plus(self.tool_calls, other.tool_calls),
            refusals=self.refusals + other.refusals,
            eval_pass=self.eval_pass + other.eval_pass,
            eval_fail=self.eval_fail + other.eval_fail,
            tokens=_plus(self.tokens, other.tokens),
            cost_usd=self.cost_usd + other.cost_usd,
            priced=self.priced + other.priced,
            unpriced=self.unpriced + other.unpriced,
            usage_incomplete=self.usage_incomplete + other.usage_incomplete,
        )

    @property
    def empty(self) -> bool:
        return not any(self._ints()) and not self.guard_latency and self.cost_usd == 0.0

    def totals(self) -> Totals:
        """As the guardrails read counts (router.control.guardrails)."""
        latency = [0] * (len(GUARD_LATENCY_BOUNDS) + 1)
        for i, n in self.guard_latency.items():
            latency[i] = n
        bundle_calls = sum(self.tool_calls) - self.tool_calls[CLIENT_TOOL]
        return Totals(
            requests=self.requests,
            errors=self.errors,
            latency=tuple(latency),
            priced=self.priced,
            cost_usd=self.cost_usd,
            tool_calls=bundle_calls,
            tool_failures=bundle_calls - self.tool_calls[VALID_TOOL],
            refusals=self.refusals,
            eval_pass=self.eval_pass,
            eval_fail=self.eval_fail,
        )

    def add_to(self, stats: VersionStats) -> None:
        """Add these counts (a difference) to `stats`, its sliding window's current second
        included, as if its own requests had made them: its guardrails, windows and
        /metrics then count them. No await: one step on the loop."""
        for i, n in enumerate(self.outcomes):
            stats.outcomes[i] += n
        stats.errors += self.errors
        for i, n in self.guard_latency.items():
            stats.guard_latency[i] += n
        for i, n in self.latency.items():
            stats.latency.counts[i] += n
        stats.latency.total += self.latency_sum
        for i, n in self.ttft.items():
            stats.ttft.counts[i] += n
        stats.ttft.total += self.ttft_sum
        for i, n in enumerate(self.tool_calls):
            stats.tool_calls[i] += n
        stats.refusals += self.refusals
        stats.eval_pass += self.eval_pass
        stats.eval_fail += self.eval_fail
        for i, n in enumerate(self.tokens):
            stats.tokens[i] += n
        stats.cost_usd += self.cost_usd
        stats.priced += self.priced
        stats.unpriced += self.unpriced
        stats.usage_incomplete += self.usage_incomplete
        slot = stats.window_slot()
        slot.requests += self.requests
        slot.errors += self.errors
        for i, n in self.latency.items():
            slot.latency[i] += n
        slot.priced += self.priced
        slot.cost += self.cost_usd
        totals = self.totals()
        slot.tool_calls += totals.tool_calls
        slot.tool_failures += totals.tool_failures
        slot.refusals += self.refusals
        slot.eval_pass += self.eval_pass
        slot.eval_fail += self.eval_fail


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a count")
    return value


def _number(value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not value >= 0:
        raise ValueError(f"{value!r} is not a non-negative number")
    return float(value)


def _counts(value: Any, length: int, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{name} is not a list of {length} counts")
    return tuple(_count(n) for n in value)


def _buckets(value: Any, size: int) -> dict[int, int]:
    if not isinstance(value, dict):
        raise ValueError("buckets are not an object")
    found = {}
    for key, n in value.items():
        i = int(key)
        if not 0 <= i < size:
            raise ValueError(f"bucket {key} is out of range")
        if _count(n):
            found[i] = n
    return found


def _minus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def _plus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _sparse_minus(a: Sparse, b: Sparse) -> dict[int, int]:
    return {i: n - b.get(i, 0) for i, n in a.items() if n != b.get(i, 0)}


def _sparse_plus(a: Sparse, b: Sparse) -> dict[int, int]:
    summed = dict(a)
    for i, n in b.items():
        summed[i] = summed.get(i, 0) + n
    return summed


@dataclass(frozen=True, slots=True)
class Reading:
    """One field of an evidence hash as written: whose counts, when, and the counts."""

    labels: Mapping[str, str]  # region, pool, instance
    at: float  # unix seconds of the write
    counts: Counts


def encode(labels: Mapping[str, str], at: float, counts: Counts) -> bytes:
    return orjson.dumps({"labels": dict(labels), "at": at, **counts.as_json()})


def decode(raw: bytes | str) -> Reading:
    """Raises ValueError for a field that is not what `encode` writes."""
    try:
        data = orjson.loads(raw)
        labels = data["labels"]
        if not isinstance(labels, dict) or not all(
            isinstance(labels.get(k), str) for k in ("region", "pool", "instance")
        ):
            raise ValueError("labels need region, pool and instance")
        return Reading(
            {k: str(v) for k, v in labels.items()}, _number(data["at"]), Counts.from_json(data)
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not an evidence field ({type(exc).__name__}: {exc})") from None


def _signature(stats: VersionStats) -> tuple[int, ...]:
    """Cheap: changes whenever any counter the flush writes does (every request counts an
    outcome; every usage report counts one of priced, unpriced or incomplete)."""
    return (
        sum(stats.outcomes),
        stats.priced,
        stats.unpriced,
        stats.usage_incomplete,
        sum(stats.tool_calls),
        stats.refusals,
        stats.eval_pass,
        stats.eval_fail,
    )


class Flusher:
    """A sidecar's evidence, written to Redis every `interval` by `run` (and once more by
    `close`). `routes` is read afresh each time: a reload's new routes are flushed too."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        routes: Mapping[str, LiveRoute],
        labels: Mapping[str, str],
        interval: float,
        boot: str | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.routes = routes
        self.labels = {k: labels[k] for k in ("region", "pool", "instance")}
        self.interval = interval
        self.field = f"{self.labels['instance']}@{boot or uuid.uuid4().hex[:12]}"
        self.sent: dict[tuple[str, str], tuple[int, ...]] = {}  # what Redis has, as written
        self.refreshed = time.monotonic()
        self.closing = False
        self.flushes = 0  # pipelines written
        self.failing = False

    async def flush(self) -> int:
        """One pipeline with every version whose counters moved since the last write (all
        with counts, every REFRESH_SECONDS). The number of fields written. Raises Redis
        errors; what failed is written at the next flush."""
        refresh = time.monotonic() - self.refreshed >= REFRESH_SECONDS
        pending: list[tuple[str, str, tuple[int, ...], Counts]] = []
        pacer = Pacer()
        for name, route in list(self.routes.items()):
            for version, target in list(route.targets.items()):
                signature = _signature(target.stats)
                if not any(signature):
                    continue
                if refresh or self.sent.get((name, version)) != signature:
                    pending.append((name, version, signature, Counts.of(target.stats)))
            await pacer.pause()
        if refresh:
            self.refreshed = time.monotonic()
        if not pending:
            return 0
        at = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, version, _, counts in pending:
                key = self.keys.evidence(name, version)
                pipe.hset(key, self.field, encode(self.labels, at, counts))
                pipe.expire(key, TTL_SECONDS)
            await pipe.execute()
        for name, version, signature, _ in pending:
            self.sent[(name, version)] = signature
        self.flushes += 1
        return len(pending)

    async def run(self) -> None:
        while not self.closing:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
                self.failing = False
            except RedisError as exc:
                if not self.failing:  # the follow loop reports Redis itself; say it once
                    log.warning(
                        "fleet: evidence not written (%s); writing it when Redis answers",
                        type(exc).__name__,
                    )
                self.failing = True

    async def close(self) -> None:
        """The last counts, so a sidecar that stops leaves all it counted."""
        self.closing = True
        with contextlib.suppress(RedisError, TimeoutError):
            await asyncio.wait_for(self.flush(), timeout=2.0)
