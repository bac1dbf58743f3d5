"""Prometheus exposition, written by the router from the telemetry at scrape time.

The hot path never touches prometheus-client (and so never takes its locks). A config of a
thousand routes with four versions each is over a million lines of exposition, so a scrape
neither builds them as objects nor writes them in one go. It copies each route's counters in
one step on the event loop, between two requests, so the series of one version agree with
each other (its requests, histograms and tokens are of one moment); it copies a slice of
routes at a time, then writes the text from the copy a slice at a time, streamed to the
scraper. Between slices the loop answers requests (`router.pacing`). Also serves the sliding
windows as JSON for people and tools.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from router import __version__, background
from router.control.moves import ROLLED_BACK
from router.control.plane import ControlPlane
from router.control.store import Store
from router.fleet.build import FleetPart
from router.fleet.controller import Controller
from router.pacing import Pacer
from router.proxy import access_log
from router.proxy.connection import ConnectionStats
from router.proxy.live import LiveRoute
from router.proxy.telemetry import (
    LATENCY_BOUNDS,
    OUTCOMES,
    OVERHEAD_BOUNDS,
    TOKEN_KINDS,
    TOOL_RESULTS,
    Histogram,
)

CHUNK_CHARS = 256 * 1024  # text handed to the connection at a time


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _les(bounds: Sequence[float]) -> tuple[str, ...]:
    """The `le="..."} ` part of each bucket line, +Inf last."""
    return (*(f'le="{bound!r}"}} ' for bound in bounds), 'le="+Inf"} ')


LATENCY_LES = _les(LATENCY_BOUNDS)
OVERHEAD_LES = _les(OVERHEAD_BOUNDS)


def _num(value: float) -> str:
    """A float as Prometheus reads it (ints are written as they are)."""
    if math.isfinite(value):
        return repr(float(value))
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


@dataclass(frozen=True, slots=True)
class _Counts:
    """One histogram at one moment."""

    counts: tuple[int, ...]
    total: float

    @classmethod
    def of(cls, histogram: Histogram) -> _Counts:
        return cls(tuple(histogram.counts), histogram.total)


@dataclass(frozen=True, slots=True)
class _Version:
    """One version's counters at one moment, and its labels."""

    labels: str  # 'route="...",version="..."'
    model: str
    short_digest: str
    provider: str
    weight: float
    outcomes: tuple[int, ...]
    latency: _Counts
    ttft: _Counts
    overhead: _Counts
    tokens: tuple[int, ...]
    cost_usd: float
    unpriced: int
    usage_incomplete: int
    tool_calls: tuple[int, ...]
    refusals: int
    eval_pass: int
    eval_fail: int
    eval_scores: int
    eval_score_sum: float


@dataclass(frozen=True, slots=True)
class _Route:
    label: str  # 'route="..."'
    client_system: str
    in_flight: int
    overloaded: int
    sessionless: int
    chained: int
    fingerprinted: int
    client_system_prompts: int
    versions: tuple[_Version, ...]
    blast_radius: tuple[tuple[str, float], ...]  # (version label, share of the last 60 s)


def _copy(route: LiveRoute) -> _Route:
    """The route's counters now: no await in here, so nothing changes them meanwhile."""
    name, table, counters = _label(route.name), route.table, route.counters
    versions = []
    for version, target in list(route.targets.items()):
        s, bundle = target.stats, target.bundle
        versions.append(
            _Version(
                labels=f'route="{name}",version="{_label(version)}"',
                model=_label(bundle.model),
                short_digest=bundle.short_digest,
                provider=_label(bundle.provider),
                weight=table.weights.get(version, 0) / 10_000,
                outcomes=tuple(s.outcomes),
                latency=_Counts.of(s.latency),
                ttft=_Counts.of(s.ttft),
                overhead=_Counts.of(s.overhead),
                tokens=tuple(s.tokens),
                cost_usd=s.cost_usd,
                unpriced=s.unpriced,
                usage_incomplete=s.usage_incomplete,
                tool_calls=tuple(s.tool_calls),
                refusals=s.refusals,
                eval_pass=s.eval_pass,
                eval_fail=s.eval_fail,
                eval_scores=s.eval_scores,
                eval_score_sum=s.eval_score_sum,
            )
        )
    return _Route(
        label=f'route="{name}"',
        client_system=_label(route.policy.client_system),
        in_flight=counters.in_flight,
        overloaded=counters.overloaded,
        sessionless=counters.sessionless_requests,
        chained=counters.chained_requests,
        fingerprinted=counters.fingerprinted_requests,
        client_system_prompts=counters.client_system_prompts,
        versions=tuple(versions),
        blast_radius=tuple((_label(v), share) for v, share in route.blast_radius().items()),
    )


def _header(name: str, kind: str, doc: str) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _histogram(name: str, labels: str, histogram: _Counts, les: tuple[str, ...]) -> str:
    bucket = f"{name}_bucket{{{labels},"
    cumulative = list(accumulate(histogram.counts))
    lines = [f"{bucket}{le}{count}\n" for le, count in zip(les, cumulative, strict=True)]
    lines.append(f"{name}_count{{{labels}}} {cumulative[-1]}\n")
    lines.append(f"{name}_sum{{{labels}}} {_num(histogram.total)}\n")
    return "".join(lines)


def _by(name: str, labels: str, key: str, names: Iterable[str], values: Iterable[int]) -> str:
    """One counter split by a label, such as outcome or token kind."""
    return "".join(
        f'{name}{{{labels},{key}="{k}"}} {v}\n' for k, v in zip(names, values, strict=True)
    )


# Per-version families, in the order they are written: (name, type, help, lines of one version).
VersionLines = Callable[[str, _Version], str]
PER_VERSION: tuple[tuple[str, str, str, VersionLines], ...] = (
    (
        "router_requests_total",
        "counter",
        "Requests served, by outcome.",
        lambda n, v: _by(n, v.labels, "outcome", OUTCOMES, v.outcomes),
    ),
    (
        "router_request_duration_seconds",
        "histogram",
        "Time from the request's arrival to the end of its answer.",
        lambda n, v: _histogram(n, v.labels, v.latency, LATENCY_LES),
    ),
    (
        "router_time_to_first_token_seconds",
        "histogram",
        "Streams only: time from the request's arrival to its first token.",
        lambda n, v: _histogram(n, v.labels, v.ttft, LATENCY_LES),
    ),
    (
        "router_overhead_seconds",
        "histogram",
        "Time spent in the router itself, not waiting on the provider or the client.",
        lambda n, v: _histogram(n, v.labels, v.overhead, OVERHEAD_LES),
    ),
    (
        "router_tokens_total",
        "counter",
        "Tokens by kind.",
        lambda n, v: _by(n, v.labels, "kind", TOKEN_KINDS, v.tokens),
    ),
    (
        "router_cost_usd_total",
        "counter",
        "Cost in USD from the prices table.",
        lambda n, v: f"{n}{{{v.labels}}} {_num(v.cost_usd)}\n",
    ),
    (
        "router_unpriced_answers_total",
        "counter",
        "Answers whose model has no price: their cost is unknown, not zero.",
        lambda n, v: f'{n}{{{v.labels},model="{v.model}"}} {v.unpriced}\n',
    ),
    (
        "router_usage_incomplete_total",
        "counter",
        "Answers whose usage never arrived (e.g. a cut stream): tokens and cost unknown.",
        lambda n, v: f"{n}{{{v.labels}}} {v.usage_incomplete}\n",
    ),
    (
        "router_tool_calls_total",
        "counter",
        "Tool calls checked against the bundle's schemas (client_tool: a tool the client "
        "sent, not judged).",
        lambda n, v: _by(n, v.labels, "result", TOOL_RESULTS, v.tool_calls),
    ),
    (
        "router_refusals_total",
        "counter",
        "Answers that refused.",
        lambda n, v: f"{n}{{{v.labels}}} {v.refusals}\n",
    ),
    (
        "router_eval_feedback_total",
        "counter",
        "Online-eval verdicts.",
        lambda n, v: _by(n, v.labels, "result", ("pass", "fail"), (v.eval_pass, v.eval_fail)),
    ),
    (
        "router_eval_score",
        "summary",
        "Online-eval scores.",
        lambda n, v: (
            f"{n}_count{{{v.labels}}} {v.eval_scores}\n"
            f"{n}_sum{{{v.labels}}} {_num(v.eval_score_sum)}\n"
        ),
    ),
    (
        "router_weight_ratio",
        "gauge",
        "Live weight, 0..1.",
        lambda n, v: f"{n}{{{v.labels}}} {_num(v.weight)}\n",
    ),
    (
        "router_build_info",
        "gauge",
        "Loaded bundle versions; always 1.",
        lambda n, v: (
            f'{n}{{{v.labels},digest="{v.short_digest}",model="{v.model}",'
            f'provider="{v.provider}",router_version="{__version__}"}} 1\n'
        ),
    ),
)
RouteLines = Callable[[str, _Route], str]
PER_ROUTE: tuple[tuple[str, str, str, RouteLines], ...] = (
    (
        "router_sessionless_requests_total",
        "counter",
        "Requests without a session key or a fallback, assigned at random.",
        lambda n, r: f"{n}{{{r.label}}} {r.sessionless}\n",
    ),
    (
        "router_session_keys_total",
        "counter",
        "Requests keyed by a fallback when they brought no session key: previous_response "
        "(sent where their chain was answered) or fingerprint (the first user message).",
        lambda n, r: (
            f'{n}{{{r.label},source="previous_response"}} {r.chained}\n'
            f'{n}{{{r.label},source="fingerprint"}} {r.fingerprinted}\n'
        ),
    ),
    (
        "router_client_system_prompts_total",
        "counter",
        "Requests that carried their own system prompt, by the route's policy.",
        lambda n, r: f'{n}{{{r.label},policy="{r.client_system}"}} {r.client_system_prompts}\n',
    ),
    (
        "router_in_flight_requests",
        "gauge",
        "Requests being answered now, streams included.",
        lambda n, r: f"{n}{{{r.label}}} {r.in_flight}\n",
    ),
    (
        "router_overload_rejections_total",
        "counter",
        "Requests turned away with 503 because the route was at limits.max_concurrent_per_route.",
        lambda n, r: f"{n}{{{r.label}}} {r.overloaded}\n",
    ),
    (
        "router_blast_radius_ratio",
        "gauge",
        "Each version's share of the route's requests over the last 60 s, 0..1 (on a fleet's "
        "controller: of the whole fleet's requests, from the pooled evidence).",
        lambda n, r: "".join(
            f'{n}{{{r.label},version="{v}"}} {_num(share)}\n' for v, share in r.blast_radius
        ),
    ),
)


def _rollout_families(control: ControlPlane) -> str:
    """The few series that are not per version: trips, drills, roll-backs, notifications."""
    out = [
        _header(
            "router_guardrail_trips_total",
            "counter",
            "Canaries rolled back by a guardrail, by rule.",
        )
    ]
    for (route, version, rule), count in list(control.watcher.trips.items()):
        labels = f'route="{_label(route)}",version="{_label(version)}",rule="{_label(rule)}"'
        out.append(f"router_guardrail_trips_total{{{labels}}} {count}\n")
    name = "router_rollback_duration_seconds"
    out.append(
        _header(
            name,
            "histogram",
            "Rollback drills: from the command to the first request served by the previous "
            "version.",
        )
    )
    for route, histogram in list(control.drills.durations.items()):
        out.append(_histogram(name, f'route="{_label(route)}"', _Counts.of(histogram), LATENCY_LES))
    name = "router_candidate_rolled_back"
    out.append(
        _header(
            name,
            "gauge",
            "1 while the route's candidate is rolled back and held at 0 until a person acts.",
        )
    )
    for route, state in list(control.core.states.items()):
        if state.candidate:
            labels = f'route="{_label(route)}",version="{_label(state.candidate)}"'
            out.append(f"{name}{{{labels}}} {int(state.candidate_state == ROLLED_BACK)}\n")
    name, notifier = "router_notifications_total", control.notifier
    out.append(_header(name, "counter", "Change announcements to the webhook, by result."))
    for result, count in (
        ("sent", notifier.sent),
        ("failed", notifier.failed),
        ("dropped", notifier.dropped),
    ):
        out.append(f'{name}{{result="{result}"}} {count}\n')
    return "".join(out)


async def exposition(
    routes: Mapping[str, LiveRoute], control: ControlPlane, extra: CollectorRegistry
) -> AsyncIterator[bytes]:
    """The text exposition in chunks, with the event loop free between slices of work."""
    pacer = Pacer()
    copies: list[_Route] = []
    for route in list(routes.values()):
        copies.append(_copy(route))
        await pacer.pause()
    head = _rollout_families(control)  # read now, beside the copy
    parts, size = [head], len(head)
    for name, kind, doc, lines in PER_VERSION:
        parts.append(_header(name, kind, doc))
        for copy in copies:
            for version in copy.versions:
                text = lines(name, version)
                parts.append(text)
                size += len(text)
            if size >= CHUNK_CHARS:
                yield "".join(parts).encode()
                parts, size = [], 0
            await pacer.pause()
    for name, kind, doc, route_lines in PER_ROUTE:
        parts.append(_header(name, kind, doc))
        parts.extend(route_lines(name, copy) for copy in copies)
    parts.append(generate_latest(extra).decode())
    yield "".join(parts).encode()


class RuntimeCollector(Collector):
    """The event loop's live task count: with `process_open_fds` and
    `process_resident_memory_bytes` (prometheus-client's process collector), what shows a
    leak. Read at scrape time, on the loop."""

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "router_event_loop_tasks",
            "asyncio tasks alive: background loops plus one or two per request in flight.",
            value=len(asyncio.all_tasks()),
        )


LOOPS = ("guardrails", "warm-window", "durability", "ramp", "notifier")  # exported from 0


class ReliabilityCollector(Collector):
    """Whether every change in force is durable, and background work that failed."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "router_state_degraded",
            "1 while a change is in force in memory but not yet durable (the audit log or "
            "the state file could not be written); alert on it, and do not restart the router.",
            value=float(self.store.degraded),
        )
        failed = CounterMetricFamily(
            "router_background_failures",
            "Background work that failed (logged with its traceback) and was retried, by task.",
            labels=["task"],
        )
        for task in sorted({*LOOPS, *background.failures}):
            failed.add_metric([task], background.failures[task])
        yield failed
        yield CounterMetricFamily(
            "router_access_log_dropped",
            "Access log lines dropped because stderr took them slower than they came.",
            value=access_log.dropped(),
        )


class FleetCollector(Collector):
    """Fleet mode: the epoch this process applied (a sidecar) or published (the controller),
    how far behind the fleet it is, and whether it reaches Redis."""

    def __init__(self, fleet: FleetPart) -> None:
        self.fleet = fleet

    def collect(self) -> Iterator[Metric]:
        seen = self.fleet.describe()
        yield GaugeMetricFamily(
            "router_fleet_epoch",
            "The fleet epoch this process serves (sidecar) or last published (controller).",
            value=float(seen["epoch"]),
        )
        yield GaugeMetricFamily(
            "router_fleet_lag_seconds",
            "Seconds behind the fleet: since a newer epoch was seen and not applied, or since "
            "Redis last answered. 0 when current.",
            value=float(seen.get("lag_seconds") or 0.0),
        )
        yield GaugeMetricFamily(
            "router_fleet_connected", "1 while Redis answers.", value=float(seen["connected"])
        )
        if isinstance(self.fleet, Controller):
            yield GaugeMetricFamily(
                "router_fleet_leader",
                "1 while this controller holds the lease and publishes the fleet's changes.",
                value=float(seen["leading"]),
            )
            yield from self._waves(self.fleet)
        else:
            yield GaugeMetricFamily(
                "router_fleet_refused",
                "1 while this sidecar refuses the fleet's newest snapshot (see status).",
                value=float(seen["refused"] is not None),
            )

    @staticmethod
    def _waves(controller: Controller) -> Iterator[Metric]:
        """Rolling releases: the wave, and each group's progress and health."""
        wave = GaugeMetricFamily(
            "router_rollout_wave",
            "The rolling release's wave: flipped waves so far (walking back: still flipped).",
            labels=["route"],
        )
        waves = GaugeMetricFamily(
            "router_rollout_waves", "The rolling release's planned waves.", labels=["route"]
        )
        flipped = GaugeMetricFamily(
            "router_rollout_group_flipped_ratio",
            "Share of a group's planned instances on the new version now.",
            labels=["route", "group"],
        )
        healthy = GaugeMetricFamily(
            "router_rollout_group_healthy",
            "1 while a group's gauge (flipped against unflipped) passes every guardrail; 0 "
            "once it breached.",
            labels=["route", "group"],
        )
        for name in list(controller.core.states):
            seen = controller.rolling.describe(name)
            if seen is None or seen["status"] not in ("running", "paused", "halted", "holding"):
                continue
            wave.add_metric([name], float(seen["wave"]))
            waves.add_metric([name], float(seen["waves"]))
            for group, g in seen["groups"].items():
                flipped.add_metric(
                    [name, group], g["flipped"] / g["planned"] if g["planned"] else 0
                )
                healthy.add_metric([name, group], float(g["healthy"]))
        yield from (wave, waves, flipped, healthy)


class MetricsEndpoints:
    """GET /metrics (Prometheus text) and GET /windows (sliding windows as JSON)."""

    def __init__(self, routes: Mapping[str, LiveRoute], control: ControlPlane) -> None:
        self.routes = routes
        self.control = control
        self.registry = CollectorRegistry(auto_describe=False)  # the process, the loop
        self.registry.register(RuntimeCollector())
        self.registry.register(ReliabilityCollector(control.store))
        ProcessCollector(registry=self.registry)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await response.prepare(request)
        async for chunk in exposition(self.routes, self.control, self.registry):
            await response.write(chunk)
        await response.write_eof()
        return response

    async def windows(self, request: web.Request) -> web.Response:
        seconds = request.query.get("seconds")
        span = int(seconds) if seconds and seconds.isdigit() else None
        view = {}
        pacer = Pacer()
        for route in list(self.routes.values()):
            view[route.name] = {
                version: {
                    "weight_percent": route.table.percent(version),
                    **target.stats.window(span).as_dict(),
                }
                for version, target in route.targets.items()
            }
            await pacer.pause()
        return web.json_response(view)

    async def rollout_state(self, request: web.Request) -> web.Response:
        """GET /rollouts: live deploy state and the guardrail verdicts, read-only."""
        return web.json_response(self.control.describe())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/windows", self.windows)
        app.router.add_get("/rollouts", self.rollout_state)


class ConnectionCollector(Collector):
    """Client connections per listener (`proxy`, `metrics`), read at scrape time."""

    def __init__(self, listeners: list[ConnectionStats]) -> None:
        self.listeners = listeners

    def collect(self) -> Iterator[Metric]:
        labels = ["listener"]
        open_now = GaugeMetricFamily(
            "router_open_connections", "Client connections open now.", labels=labels
        )
        refused = CounterMetricFamily(
            "router_connections_refused",
            "Connections answered 503 too_many_connections at limits.max_connections.",
            labels=labels,
        )
        send_timeouts = CounterMetricFamily(
            "router_send_timeouts",
            "Connections aborted because the client took nothing of an answer for "
            "limits.send_timeout.",
            labels=labels,
        )
        accept_errors = CounterMetricFamily(
            "router_accept_errors",
            "Failed accepts, by errno (EMFILE, ENFILE: out of file descriptors).",
            labels=[*labels, "error"],
        )
        for stats in self.listeners:
            open_now.add_metric([stats.listener], stats.open)
            refused.add_metric([stats.listener], stats.refused)
            send_timeouts.add_metric([stats.listener], stats.send_timeouts)
            for error, count in stats.accept_errors.items():
                accept_errors.add_metric([stats.listener, error], count)
        yield from (open_now, refused, send_timeouts, accept_errors)
