"""Pooled guardrails: one judge on the whole fleet's evidence, against every sidecar judging
its own slice (issue 17).

    python -m benchmarks.pooled [--runs 30] [--canaries 1000] [--hours 1] [--look 10]
    python -m benchmarks.pooled --quick      # small numbers, to check that it runs

N sidecars (1, 10 and 100), each at 20 rps with a 5 % canary (about one candidate answer a
second each), the simulated versions of benchmarks/guardrails.py. Three ways to judge:

- local:  every sidecar judges its own counts with `local_floor` (the route's alpha / split,
  split 1000 = fleet.local_floor_split); the fleet stops when its first sidecar trips.
- pooled: the controller judges the sum of every sidecar's counts at the route's alpha, once
  a second, one second late (a sidecar flushes its counters once a second).
- both:   the first of the two, which is what a fleet runs.

1. Detection delay: the candidate is bad from its first answer; every judge looks once a
   simulated second. Seconds p50 / p90 over `--runs`; a run gives up after two hours.
2. False trips: `--canaries` healthy canaries of `--hours` for every fleet size, local floors
   and the pooled judge together, every judge looking once every `--look` seconds.

Seconds here are simulated: the simulation counts answers, and only its own running time
depends on the machine.

How it stays fast. Counts are drawn per (second, sidecar) with numpy, and a cheap necessary
condition for each rule (`may_trip`) picks the few moments where the real `Guard` must look:
a confidence sequence can only exclude a rate p after n answers with n * KL(k/n || p) at
least log(1/alpha), because its mixture is never above the likelihood ratio at k/n. Latency
is drawn per cell: one cell per 2.2 % bucket around the control's p95 (what the rule and
its filter read) and a wide cell each side; the buckets inside a wide cell are drawn only
when a judge looks. A multinomial count split by a multinomial is a multinomial, so the
guard sees the same distribution as if every bucket had been drawn every second.
"""

from __future__ import annotations

import argparse
import math
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, fields
from multiprocessing import Pool
from multiprocessing.pool import Pool as Workers

import numpy as np

from benchmarks.guardrails import CONTROL, SCENARIOS, Behaviour, _latency_shares
from router.config import Guardrails
from router.control.guardrails import Guard, local_floor
from router.proxy.telemetry import GUARD_LATENCY_BOUNDS, Totals

RPS = 20  # per sidecar
CANARY_SHARE = 0.05
FLEETS = (1, 10, 100)
SPLIT = 1000  # fleet.local_floor_split's default
LAG = 1  # seconds: the pooled judge reads counts flushed about once a second
MAX_SECONDS = 7200  # a detection run gives up here
WINDOW = 8  # fine buckets each side of the control's p95 (and of p95 + margin) kept apart
CHUNK = 20_000  # (second, sidecar) rows drawn at once
BUCKETS = len(GUARD_LATENCY_BOUNDS) + 1


@dataclass
class Counts:
    """Cumulative counts of one version: arrays over (second[, sidecar]); `cells` has one
    more axis, the latency cells."""

    requests: np.ndarray
    errors: np.ndarray
    tool_calls: np.ndarray
    tool_failures: np.ndarray
    refusals: np.ndarray
    cost: np.ndarray
    cells: np.ndarray

    @staticmethod
    def zero(sidecars: int, cells: int) -> Counts:
        z = np.zeros((1, sidecars), np.int64)
        return Counts(
            z, z, z, z, z, np.zeros((1, sidecars)), np.zeros((1, sidecars, cells), np.int64)
        )

    def _map(self, f: object) -> Counts:
        return Counts(*(f(getattr(self, x.name)) for x in fields(self)))  # type: ignore[operator]

    def then(self, added: Counts) -> Counts:
        """These counts (one row) plus the running sum of `added`, row by row."""
        return Counts(
            *(
                getattr(self, x.name)[-1] + np.cumsum(getattr(added, x.name), axis=0)
                for x in fields(self)
            )
        )

    def last(self) -> Counts:
        return self._map(lambda a: a[-1:])

    def fleet(self) -> Counts:
        """Summed over the sidecars: what the pooled judge sees."""
        return self._map(lambda a: a.sum(axis=1))

    def totals(self, at: tuple[np.integer, ...], latency: np.ndarray) -> Totals:
        requests = int(self.requests[at])
        return Totals(
            requests=requests,
            errors=int(self.errors[at]),
            latency=tuple(latency.tolist()),
            priced=requests,
            cost_usd=float(self.cost[at]),
            tool_calls=int(self.tool_calls[at]),
            tool_failures=int(self.tool_failures[at]),
            refusals=int(self.refusals[at]),
        )


class Cells:
    """Latency cells: each of the 2.2 % buckets near the control's p95 and p95 + margin
    alone, and one wide cell below and above them."""

    def __init__(self, rules: Guardrails, window: int | None = WINDOW) -> None:
        margin = rules.p95_latency.max_over_control if rules.p95_latency else 0.0
        if window is None:  # every bucket its own cell (the tests' exact reference)
            self.cuts = np.arange(BUCKETS)
        else:
            p95 = CONTROL.latency_median * math.exp(1.6449 * CONTROL.latency_sigma)
            low = bisect_left(GUARD_LATENCY_BOUNDS, p95) - window
            high = bisect_left(
                GUARD_LATENCY_BOUNDS, GUARD_LATENCY_BOUNDS[low + 2 * window] + margin
            )
            self.cuts = np.array([*range(low, high + 1), BUCKETS - 1])
        # cuts[j] is the last bucket of cell j; cell j holds buckets starts[j] .. cuts[j].
        self.starts = np.concatenate(([0], self.cuts[:-1] + 1))
        # For the latency filter: when m cuts lie below the control's p95 rank, its p95 is
        # at least the bound of the last of them, and the candidate's answers at or below
        # p95 + margin are at least those in cells up to `faster_cell[m]` (-1: none known).
        self.faster_cell = np.array(
            [
                self._faster_cell(0.0 if m == 0 else GUARD_LATENCY_BOUNDS[self.cuts[m - 1]], margin)
                for m in range(len(self.cuts))
            ]
        )

    def _faster_cell(self, p95_at_least: float, margin: float) -> int:
        # 1e-9: the guard's interpolated p95 may sit a rounding error below its bucket's bound.
        first_slow = bisect_left(GUARD_LATENCY_BOUNDS, p95_at_least * (1 - 1e-9) + margin)
        return int(np.searchsorted(self.cuts, first_slow, side="right")) - 1

    def shares(self, behaviour: Behaviour) -> tuple[np.ndarray, list[np.ndarray]]:
        """P(cell), and P(bucket | cell) for each cell."""
        buckets = _latency_shares(behaviour)
        cell = np.array(
            [buckets[a : b + 1].sum() for a, b in zip(self.starts, self.cuts, strict=True)]
        )
        inside = [
            buckets[a : b + 1] / s if s > 0 else np.full(b + 1 - a, 1 / (b + 1 - a))
            for a, b, s in zip(self.starts, self.cuts, cell, strict=True)
        ]
        return cell / cell.sum(), inside


class Buckets:
    """Each sidecar's latency in the guard's buckets, drawn up to the latest look."""

    def __init__(self, sidecars: int, cells: Cells, inside: list[np.ndarray]) -> None:
        self.cells, self.inside = cells, inside
        self.counts = np.zeros((sidecars, BUCKETS), np.int64)
        self.drawn = np.zeros((sidecars, len(cells.cuts)), np.int64)

    def at(self, rng: np.random.Generator, sidecars: np.ndarray, cells: np.ndarray) -> np.ndarray:
        """The bucket counts of `sidecars` whose cell counts are now `cells`."""
        more = cells - self.drawn[sidecars]
        narrow = self.cells.starts == self.cells.cuts
        self.counts[sidecars[:, None], self.cells.cuts[narrow]] += more[:, narrow]
        for j in np.flatnonzero(~narrow & more.any(axis=0)):
            a, b = self.cells.starts[j], self.cells.cuts[j]
            self.counts[sidecars, a : b + 1] += rng.multinomial(more[:, j], self.inside[j])
        self.drawn[sidecars] = cells
        counts: np.ndarray = self.counts[sidecars]
        return counts


def _split(rng: np.random.Generator, n: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """A multinomial(n, shares) for every n, one cell at a time (faster than numpy's own
    for many small n)."""
    out = np.empty((*n.shape, len(shares)), np.int64)
    left, mass = n.copy(), 1.0
    for j, share in enumerate(shares[:-1]):
        out[..., j] = rng.binomial(left, min(1.0, share / mass) if mass > 0 else 0.0)
        left -= out[..., j]
        mass -= share
    out[..., -1] = left
    return out


def _draw(
    rng: np.random.Generator, n: np.ndarray, behaviour: Behaviour, cells: np.ndarray
) -> Counts:
    """One version's new answers for every (second, sidecar) that got `n` of them. Cost per
    answer is gamma with the log-normal's mean and spread, so a second's sum is one draw."""
    spread = math.exp(behaviour.cost_sigma**2) - 1  # squared coefficient of variation
    calls = rng.binomial(n, behaviour.tool_call_share)
    return Counts(
        requests=n,
        errors=rng.binomial(n, behaviour.error_rate),
        tool_calls=calls,
        tool_failures=rng.binomial(calls, behaviour.tool_failure_rate),
        refusals=rng.binomial(n, behaviour.refusal_rate),
        cost=rng.gamma(n / spread, behaviour.cost_mean * spread)
        if spread
        else n * behaviour.cost_mean,
        cells=_split(rng, n, cells),
    )


def _could_exceed(
    k: np.ndarray, n: np.ndarray, p: np.ndarray | float, alpha: float, below: bool = False
) -> np.ndarray:
    """Necessary for confidence.surely_above(k, n, p, alpha) (`below`: surely_below): the
    mixture martingale is at most the likelihood ratio at k/n, exp(n KL(k/n || p))."""
    rate = k / np.maximum(n, 1)
    p = np.clip(p, 1e-12, 1 - 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(rate > 0, rate * np.log(rate / p), 0.0) + np.where(
            rate < 1, (1 - rate) * np.log((1 - rate) / (1 - p)), 0.0
        )
    side = rate < p if below else rate > p
    could: np.ndarray = (n > 0) & side & (n * kl >= -math.log(alpha) - 1e-9)
    return could


def may_trip(guard: Guard, candidate: Counts, control: Counts, cells: Cells) -> np.ndarray:
    """Where `guard` could trip (wherever it does, this is True): one rule at a time, as
    router/control/guardrails.py judges it, with bounds that never undercount."""
    rules, alpha = guard.rules, guard.alpha
    n, n_control = candidate.requests, control.requests
    out = np.zeros(n.shape, bool)
    rates = [
        (rules.error_rate, candidate.errors, n, control.errors, n_control),
        (rules.tool_call_failure_rate, candidate.tool_failures, candidate.tool_calls,
         control.tool_failures, control.tool_calls),
        (rules.refusal_rate, candidate.refusals, n, control.refusals, n_control),
    ]  # fmt: skip
    for rule, k, trials, k_control, trials_control in rates:
        if rule is None:
            continue
        each = alpha / ((rule.max is not None) + 2 * (rule.max_over_control is not None))
        hit = np.zeros(n.shape, bool)
        if rule.max is not None:
            hit |= _could_exceed(k, trials, rule.max, each)
        if rule.max_over_control is not None:
            control_rate = np.where(
                trials_control > 0, k_control / np.maximum(trials_control, 1), 1.0
            )
            hit |= _could_exceed(k, trials, control_rate + rule.max_over_control, each)
        out |= hit & (trials >= rule.min_samples)
    if rules.p95_latency is not None:
        # The rule's ceiling (the control p95's upper bound) is at least the p95 estimate,
        # above every cut where fewer than 95 % of the control's answers are at or below,
        # and above every cut where the share above it cannot yet be surely under 5 %. The
        # more cuts below it, the fewer candidate answers can count as slower.
        running_control = control.cells.cumsum(axis=-1)
        below_rank = (running_control < 0.95 * n_control[..., None]).sum(axis=-1)
        above = n_control[..., None] - running_control
        unsure = ~_could_exceed(above, n_control[..., None], 0.05, alpha / 2, below=True)
        below = np.maximum(below_rank, unsure.sum(axis=-1))
        never = below >= len(cells.cuts)  # not even an empty tail is surely under 5 %
        cell = cells.faster_cell[np.minimum(below, len(cells.cuts) - 1)]
        running = candidate.cells.cumsum(axis=-1)
        faster = np.where(
            cell >= 0, np.take_along_axis(running, np.maximum(cell, 0)[..., None], -1)[..., 0], 0
        )
        enough = (n >= rules.p95_latency.min_samples) & (n_control >= rules.p95_latency.min_samples)
        out |= enough & ~never & _could_exceed(n - faster, n, 0.05, alpha / 2)
    if rules.cost_per_request is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = (candidate.cost / n) / (control.cost / n_control)
        enough = (n >= rules.cost_per_request.min_samples) & (
            n_control >= rules.cost_per_request.min_samples
        )
        out |= enough & (ratio > rules.cost_per_request.max_ratio * (1 - 1e-6))
    # eval_pass_rate: no feedback is simulated, so it never has its samples.
    return out


@dataclass(frozen=True)
class Outcome:
    """Simulated seconds until the first local floor, and the pooled judge, tripped."""

    local: int | None = None
    local_rule: str | None = None
    pooled: int | None = None
    pooled_rule: str | None = None

    @property
    def first(self) -> int | None:
        times = [t for t in (self.local, self.pooled) if t is not None]
        return min(times) if times else None


def _trip(guard: Guard, candidate: Totals, control: Totals) -> str | None:
    return next((v.rule for v in guard.judge(candidate, control) if v.tripped), None)


def simulate(
    candidate: Behaviour,
    sidecars: int,
    seconds: int,
    seed: int | tuple[int, ...],
    look: int = 1,
    rules: Guardrails | None = None,
    split: int = SPLIT,
    window: int | None = WINDOW,
    prefilter: bool = True,
) -> Outcome:
    """One canary over a fleet, every judge looking every `look` seconds, until both kinds
    of judge have tripped or `seconds` have passed. `prefilter=False` asks the real guard at
    every look (the tests check that it changes nothing)."""
    rules = rules or Guardrails()
    rng = np.random.default_rng(seed)
    local, pooled = local_floor(rules, split), Guard(rules)
    cells = Cells(rules, window)
    candidate_cells, candidate_inside = cells.shares(candidate)
    control_cells, control_inside = cells.shares(CONTROL)
    candidate_buckets = Buckets(sidecars, cells, candidate_inside)
    control_buckets = Buckets(sidecars, cells, control_inside)
    everyone = np.arange(sidecars)
    was = [Counts.zero(sidecars, len(cells.cuts)), Counts.zero(sidecars, len(cells.cuts))]
    result: dict[str, object] = {}
    per_look = RPS * look
    for start, rows in _chunks(seconds // look, max(1, CHUNK // sidecars)):
        n = rng.binomial(per_look, CANARY_SHARE, size=(rows, sidecars))
        cand = was[0].then(_draw(rng, n, candidate, candidate_cells))
        ctrl = was[1].then(_draw(rng, per_look - n, CONTROL, control_cells))
        was = [cand.last(), ctrl.last()]
        fleet_cand, fleet_ctrl = cand.fleet(), ctrl.fleet()
        if prefilter:
            local_looks = (
                may_trip(local, cand, ctrl, cells)
                if "local" not in result
                else np.zeros(n.shape, bool)
            )
            pooled_looks = (
                may_trip(pooled, fleet_cand, fleet_ctrl, cells)
                if "pooled" not in result
                else np.zeros(rows, bool)
            )
        else:
            local_looks, pooled_looks = np.ones(n.shape, bool), np.ones(rows, bool)
        for t in np.flatnonzero(local_looks.any(axis=1) | pooled_looks):
            now = int(start + t + 1) * look
            for i in np.flatnonzero(local_looks[t]) if "local" not in result else ():
                one = np.array([i])
                rule = _trip(
                    local,
                    cand.totals((t, i), candidate_buckets.at(rng, one, cand.cells[t, one])[0]),
                    ctrl.totals((t, i), control_buckets.at(rng, one, ctrl.cells[t, one])[0]),
                )
                if rule:
                    result.update(local=now, local_rule=rule)
                    break
            if pooled_looks[t] and "pooled" not in result:
                rule = _trip(
                    pooled,
                    fleet_cand.totals(
                        (t,), candidate_buckets.at(rng, everyone, cand.cells[t]).sum(0)
                    ),
                    fleet_ctrl.totals(
                        (t,), control_buckets.at(rng, everyone, ctrl.cells[t]).sum(0)
                    ),
                )
                if rule:
                    result.update(pooled=now + LAG, pooled_rule=rule)
        if "local" in result and "pooled" in result:
            break
    return Outcome(**result)  # type: ignore[arg-type]


def _chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def _detect(args: tuple[int, int, int]) -> Outcome:
    scenario, sidecars, run = args
    return simulate(SCENARIOS[scenario][1], sidecars, MAX_SECONDS, (scenario, sidecars, run))


def _healthy(args: tuple[int, int, int, int]) -> Outcome:
    sidecars, seconds, look, run = args
    return simulate(CONTROL, sidecars, seconds, (1000 + sidecars, run), look=look)


def _row(*cells: object) -> None:
    print("| " + " | ".join(str(c) for c in cells) + " |")


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def _seconds(values: list[float]) -> str:
    def one(v: float) -> str:
        return f"> {MAX_SECONDS}" if math.isinf(v) else f"{v:g}"

    return f"{one(_pct(values, 0.5))} / {one(_pct(values, 0.9))}"


def print_detection(pool: Workers, runs: int, fleets: tuple[int, ...]) -> list[str]:
    """The table; returns the target lines."""
    started = time.perf_counter()
    jobs = [(s, n, r) for s in range(len(SCENARIOS)) for n in fleets for r in range(runs)]
    outcomes = dict(zip(jobs, pool.map(_detect, jobs, chunksize=1), strict=True))
    print(
        f"\nDetection delay, simulated seconds p50 / p90 over {runs} runs: {RPS} rps per "
        f"sidecar, {CANARY_SHARE:.0%} canary, local floors at alpha / {SPLIT}, the pooled "
        f"judge at the route's alpha one second late, gives up at {MAX_SECONDS} s "
        f"({time.perf_counter() - started:.0f} s to simulate)"
    )
    print(
        "| sidecars | regression | local floors only | pooled only | both | local / pooled (p50) |"
    )
    print("|---|---|---|---|---|---|")
    targets = []
    for s, (name, _, _) in enumerate(SCENARIOS):
        for n in fleets:
            got = [outcomes[(s, n, r)] for r in range(runs)]
            local = [math.inf if o.local is None else o.local for o in got]
            pooled = [math.inf if o.pooled is None else o.pooled for o in got]
            both = [min(a, b) for a, b in zip(local, pooled, strict=True)]
            factor = _pct(local, 0.5) / _pct(pooled, 0.5)
            shown = (
                "-"
                if math.isnan(factor)
                else (
                    f">= {MAX_SECONDS / _pct(pooled, 0.5):.1f}x"
                    if math.isinf(factor)
                    else f"{factor:.1f}x"
                )
            )
            _row(n, name, _seconds(local), _seconds(pooled), _seconds(both), shown)
            if n == 10:
                met = factor >= 5
                verdict = "met" if met else "NOT met"
                targets.append(
                    f"pooled at N=10 >= 5x sooner than local-only, {name}: {shown}, {verdict}"
                )
    return targets


def print_false_trips(
    pool: Workers, canaries: int, hours: float, look: int, fleets: tuple[int, ...]
) -> list[str]:
    seconds = int(hours * 3600)
    started = time.perf_counter()
    jobs = [(n, seconds, look, r) for n in fleets for r in range(canaries)]
    outcomes = dict(zip(jobs, pool.map(_healthy, jobs, chunksize=4), strict=True))
    print(
        f"\nFalse trips: {canaries} healthy canaries of {hours:g} h per fleet size, {RPS} rps "
        f"per sidecar, {CANARY_SHARE:.0%} canary, every judge looking every {look} s "
        f"({time.perf_counter() - started:.0f} s to simulate)"
    )
    _row(
        "sidecars",
        "canaries",
        "local floors tripped",
        "pooled tripped",
        "either (the fleet)",
        "by rule",
        "target",
    )
    print("|---|---|---|---|---|---|---|")
    targets = []
    for n in fleets:
        got = [outcomes[(n, seconds, look, r)] for r in range(canaries)]
        local = sum(o.local is not None for o in got)
        pooled = sum(o.pooled is not None for o in got)
        either = sum(o.first is not None for o in got)
        rules = Counter(r for o in got for r in (o.local_rule, o.pooled_rule) if r)
        met = either / canaries <= 0.001
        verdict = f"<= 1 in 1000: {'met' if met else 'NOT met'}"
        _row(n, canaries, local, pooled, either, dict(rules) or "-", verdict)
        targets.append(
            f"false trips at N={n}: {either} in {canaries}, {'met' if met else 'NOT met'}"
        )
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, default=30, help="detection runs per regression and fleet"
    )
    parser.add_argument(
        "--canaries", type=int, default=1000, help="healthy canaries per fleet size"
    )
    parser.add_argument("--hours", type=float, default=1.0, help="length of a healthy canary")
    parser.add_argument(
        "--look", type=int, default=10, help="seconds between looks, healthy canaries"
    )
    parser.add_argument("--quick", action="store_true", help="small numbers: does it run?")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.canaries, args.hours = 3, 20, 0.1
    started = time.perf_counter()
    with Pool(2) as pool:
        targets = print_detection(pool, args.runs, FLEETS)
        targets += print_false_trips(pool, args.canaries, args.hours, args.look, FLEETS)
    print("\nTargets:")
    for line in targets:
        print(f"- {line}")
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
