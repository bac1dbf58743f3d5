"""The page's time series: each version's counters sampled every `step` into a ring of an hour.

Every `telemetry.series_step` (10 s by default), on the event loop and between two requests,
the recorder reads every version's cumulative counters (`VersionStats`: no lock, like the
Prometheus exposition) and stores what changed since the last reading: the request rate and,
over the step, the error rate, p95 latency, p95 time to first token, cost per request,
tool-call failure rate, refusal rate and eval pass rate. On a fleet's controller those
counters are the whole fleet's (router.fleet.pool adds the sidecars' counts to them).

A version gets a ring only once it has served something, so idle versions cost nothing; a
ring is a flat array of doubles (NaN: unknown), about 26 KB for an hour of 10 s points. A
version whose counters went down or were replaced (a reload that changed it) starts afresh.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.pacing import Pacer
from router.proxy.live import LiveRoute
from router.proxy.telemetry import LATENCY_BOUNDS, VersionStats, quantile

HOUR = 3600.0
FIELDS = (
    "request_rate",
    "error_rate",
    "p95_seconds",
    "ttft_p95_seconds",
    "cost_per_request",
    "tool_failure_rate",
    "refusal_rate",
    "eval_pass_rate",
)
ROW = 1 + len(FIELDS)  # the time, then the fields
NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Reading:
    """One version's cumulative counters at one moment."""

    at: float  # monotonic seconds
    requests: int
    errors: int
    latency: array[int]
    ttft: array[int]
    cost_usd: float
    priced: int
    tool_calls: int  # the bundle's own tools' calls (client tools are not judged)
    tool_failures: int
    refusals: int
    eval_pass: int
    eval_fail: int

    @classmethod
    def of(cls, stats: VersionStats, at: float) -> Reading:
        """No await in here: the counters are read in one step on the loop."""
        totals = stats.totals()  # the guardrails' counts: bundle tools only, as judged
        return cls(
            at=at,
            requests=totals.requests,
            errors=totals.errors,
            latency=array("q", stats.latency.counts),
            ttft=array("q", stats.ttft.counts),
            cost_usd=totals.cost_usd,
            priced=totals.priced,
            tool_calls=totals.tool_calls,
            tool_failures=totals.tool_failures,
            refusals=totals.refusals,
            eval_pass=totals.eval_pass,
            eval_fail=totals.eval_fail,
        )

    def went_down_from(self, earlier: Reading) -> bool:
        return (
            self.requests < earlier.requests
            or self.priced < earlier.priced
            or self.tool_calls < earlier.tool_calls
            or self.eval_pass + self.eval_fail < earlier.eval_pass + earlier.eval_fail
        )


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else NAN


def _p95(now: array[int], earlier: array[int]) -> float:
    value = quantile(LATENCY_BOUNDS, [a - b for a, b in zip(now, earlier, strict=True)], 0.95)
    return NAN if value is None else value


def point(now: Reading, earlier: Reading) -> tuple[float, ...]:
    """The fields of one step, from two readings (NaN where nothing was there to measure)."""
    requests = now.requests - earlier.requests
    judged = now.eval_pass - earlier.eval_pass + now.eval_fail - earlier.eval_fail
    return (
        requests / max(now.at - earlier.at, 1e-9),
        _ratio(now.errors - earlier.errors, requests),
        _p95(now.latency, earlier.latency),
        _p95(now.ttft, earlier.ttft),
        _ratio(now.cost_usd - earlier.cost_usd, now.priced - earlier.priced),
        _ratio(now.tool_failures - earlier.tool_failures, now.tool_calls - earlier.tool_calls),
        _ratio(now.refusals - earlier.refusals, requests),
        _ratio(now.eval_pass - earlier.eval_pass, judged),
    )


class Ring:
    """The last `size` points of one version: rows of (unix time, fields...), flat."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows = array("d", bytes(8 * ROW * size))
        self.count = 0  # rows written so far
        self.last_served = 0.0  # unix time of the last point with requests

    def add(self, unix: float, fields: tuple[float, ...]) -> None:
        at = (self.count % self.size) * ROW
        self.rows[at] = unix
        self.rows[at + 1 : at + ROW] = array("d", fields)
        self.count += 1
        if fields[0] > 0:
            self.last_served = unix

    def columns(self, since: float) -> dict[str, list[float | None]]:
        """Oldest first, points at or after `since` (unix); NaN becomes None."""
        first = max(0, self.count - self.size)
        rows = [((i % self.size) * ROW) for i in range(first, self.count)]
        rows = [at for at in rows if self.rows[at] >= since]
        out: dict[str, list[float | None]] = {"t": [self.rows[at] for at in rows]}
        for k, name in enumerate(FIELDS, start=1):
            out[name] = [None if math.isnan(v := self.rows[at + k]) else round(v, 9) for at in rows]
        return out


class SeriesRecorder:
    """Samples every version of `routes` every `step` seconds (`run` is the loop)."""

    def __init__(self, routes: Mapping[str, LiveRoute], step: float) -> None:
        self.routes = routes
        self.step = step
        self.size = max(12, math.ceil(HOUR / step))
        self.readings: dict[tuple[str, str], tuple[VersionStats, Reading]] = {}
        self.rings: dict[tuple[str, str], Ring] = {}

    async def run(self) -> None:
        # On the step's boundaries (unix time), so that every version's points share their
        # times, and a point's time is its boundary even when the loop woke a little late.
        boundary = (time.time() // self.step + 1) * self.step
        while True:
            # The loop's clock may wake it a millisecond early: a little over, then.
            await asyncio.sleep(max(0.0, boundary - time.time()) + 0.002)
            await self.sample(boundary)
            boundary = (time.time() // self.step + 1) * self.step  # never a step twice

    async def sample(self, unix: float | None = None) -> None:
        """One reading of every version; a point for each version that had one before.
        `unix`: the point's time (now by default)."""
        pacer = Pacer()
        unix, seen = time.time() if unix is None else unix, set()
        for name, route in list(self.routes.items()):
            for version, target in list(route.targets.items()):
                key = (name, version)
                seen.add(key)
                self._read(key, target.stats, unix)
            await pacer.pause()
        for key in [k for k in self.readings if k not in seen]:  # gone with a reload
            del self.readings[key]
            self.rings.pop(key, None)
        for key, ring in list(self.rings.items()):  # idle for an hour: its points are gone
            if unix - ring.last_served > HOUR:
                del self.rings[key]

    def _read(self, key: tuple[str, str], stats: VersionStats, unix: float) -> None:
        now = Reading.of(stats, time.monotonic())
        before = self.readings.get(key)
        self.readings[key] = (stats, now)
        if before is None or before[0] is not stats or now.went_down_from(before[1]):
            return  # a first reading, or counters that started afresh: a baseline
        earlier = before[1]
        ring = self.rings.get(key)
        if ring is None:
            if now.requests == earlier.requests:
                return  # nothing served yet: no ring
            ring = self.rings[key] = Ring(self.size)
        ring.add(unix, point(now, earlier))

    def series(self, route: str) -> dict[str, dict[str, list[float | None]]]:
        """Every version of `route` now served, with its points of the last hour."""
        live = self.routes.get(route)
        since = time.time() - HOUR
        out: dict[str, dict[str, list[float | None]]] = {}
        for version in list(live.targets) if live is not None else []:
            ring = self.rings.get((route, version))
            out[version] = ring.columns(since) if ring else {"t": [], **{f: [] for f in FIELDS}}
        return out

    def describe_step(self) -> Any:
        """The step as JSON: a whole number of seconds."""
        return int(self.step) if self.step == int(self.step) else self.step
