"""Prometheus exposition: a custom collector that reads the telemetry at scrape time.

The hot path never touches prometheus-client (and so never takes its locks); a scrape reads
the plain per-version counters on the event loop, between two requests, and so sees one
consistent moment. Also serves the sliding windows as JSON for people and tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from router import __version__, tasks
from router.connection import ConnectionStats
from router.proxy import LiveRoute
from router.rollout import Rollouts
from router.stack import ROLLED_BACK
from router.telemetry import OUTCOMES, TOKEN_KINDS, TOOL_RESULTS, Histogram

RV = ["route", "version"]


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        cumulative += count
        buckets.append((repr(bound), cumulative))
    buckets.append(("+Inf", cumulative + histogram.counts[-1]))
    return buckets


class RouterCollector(Collector):
    def __init__(self, routes: Mapping[str, LiveRoute], rollouts: Rollouts) -> None:
        self.routes = routes
        self.rollouts = rollouts

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "router_requests", "Requests served, by outcome.", labels=[*RV, "outcome"]
        )
        duration = HistogramMetricFamily(
            "router_request_duration_seconds",
            "Time from the request's arrival to the end of its answer.",
            labels=RV,
        )
        ttft = HistogramMetricFamily(
            "router_time_to_first_token_seconds",
            "Streams only: time from the request's arrival to its first token.",
            labels=RV,
        )
        overhead = HistogramMetricFamily(
            "router_overhead_seconds",
            "Time spent in the router itself, not waiting on the provider or the client.",
            labels=RV,
        )
        tokens = CounterMetricFamily("router_tokens", "Tokens by kind.", labels=[*RV, "kind"])
        cost = CounterMetricFamily(
            "router_cost_usd", "Cost in USD from the prices table.", labels=RV
        )
        unpriced = CounterMetricFamily(
            "router_unpriced_answers",
            "Answers whose model has no price: their cost is unknown, not zero.",
            labels=[*RV, "model"],
        )
        incomplete = CounterMetricFamily(
            "router_usage_incomplete",
            "Answers whose usage never arrived (e.g. a cut stream): tokens and cost unknown.",
            labels=RV,
        )
        tools = CounterMetricFamily(
            "router_tool_calls",
            "Tool calls checked against the bundle's schemas.",
            labels=[*RV, "result"],
        )
        refusals = CounterMetricFamily("router_refusals", "Answers that refused.", labels=RV)
        feedback = CounterMetricFamily(
            "router_eval_feedback", "Online-eval verdicts.", labels=[*RV, "result"]
        )
        score = SummaryMetricFamily("router_eval_score", "Online-eval scores.", labels=RV)
        weight = GaugeMetricFamily("router_weight_ratio", "Live weight, 0..1.", labels=RV)
        build = GaugeMetricFamily(
            "router_build_info",
            "Loaded bundle versions; always 1.",
            labels=[*RV, "digest", "model", "provider", "router_version"],
        )
        sessionless = CounterMetricFamily(
            "router_sessionless_requests",
            "Requests without a session key, assigned at random.",
            labels=["route"],
        )
        session_keys = CounterMetricFamily(
            "router_session_keys",
            "Requests keyed by a fallback when they brought no session key: `previous_response` "
            "(sent where their chain was answered) or `fingerprint` (the first user message).",
            labels=["route", "source"],
        )
        client_system = CounterMetricFamily(
            "router_client_system_prompts",
            "Requests that carried their own system prompt, by the route's policy.",
            labels=["route", "policy"],
        )
        in_flight = GaugeMetricFamily(
            "router_in_flight_requests",
            "Requests being answered now, streams included.",
            labels=["route"],
        )
        overloaded = CounterMetricFamily(
            "router_overload_rejections",
            "Requests turned away with 503 because the route was at "
            "limits.max_concurrent_per_route.",
            labels=["route"],
        )
        for route in self.routes.values():
            name = route.name
            in_flight.add_metric([name], route.counters.in_flight)
            overloaded.add_metric([name], route.counters.overloaded)
            sessionless.add_metric([name], route.counters.sessionless_requests)
            counters = route.counters
            session_keys.add_metric([name, "previous_response"], counters.chained_requests)
            session_keys.add_metric([name, "fingerprint"], counters.fingerprinted_requests)
            client_system.add_metric(
                [name, route.client_system], route.counters.client_system_prompts
            )
            table = route.table
            for version, target in route.targets.items():
                s, labels = target.stats, [name, version]
                for outcome, count in zip(OUTCOMES, s.outcomes, strict=True):
                    requests.add_metric([*labels, outcome], count)
                duration.add_metric(labels, _buckets(s.latency), s.latency.total)
                ttft.add_metric(labels, _buckets(s.ttft), s.ttft.total)
                overhead.add_metric(labels, _buckets(s.overhead), s.overhead.total)
                for kind, count in zip(TOKEN_KINDS, s.tokens, strict=True):
                    tokens.add_metric([*labels, kind], count)
                cost.add_metric(labels, s.cost_usd)
                unpriced.add_metric([*labels, target.bundle.model], s.unpriced)
                incomplete.add_metric(labels, s.usage_incomplete)
                for result, count in zip(TOOL_RESULTS, s.tool_calls, strict=True):
                    tools.add_metric([*labels, result], count)
                refusals.add_metric(labels, s.refusals)
                feedback.add_metric([*labels, "pass"], s.eval_pass)
                feedback.add_metric([*labels, "fail"], s.eval_fail)
                score.add_metric(labels, s.eval_scores, s.eval_score_sum)
                weight.add_metric(labels, table.weights.get(version, 0) / 10_000)
                bundle = target.bundle
                build.add_metric(
                    [*labels, bundle.short_digest, bundle.model, bundle.provider, __version__], 1
                )
        trips = CounterMetricFamily(
            "router_guardrail_trips",
            "Canaries rolled back by a guardrail, by rule.",
            labels=[*RV, "rule"],
        )
        for (route_name, version, rule), count in self.rollouts.trips.items():
            trips.add_metric([route_name, version, rule], count)
        rolled_back = GaugeMetricFamily(
            "router_candidate_rolled_back",
            "1 while the route's candidate is rolled back and held at 0 until a person acts.",
            labels=RV,
        )
        for route_name, state in self.rollouts.states.items():
            if state.candidate:
                rolled_back.add_metric(
                    [route_name, state.candidate], float(state.candidate_state == ROLLED_BACK)
                )
        notifier = self.rollouts.notifier
        notifications = CounterMetricFamily(
            "router_notifications",
            "Change announcements to the webhook, by result.",
            labels=["result"],
        )
        notifications.add_metric(["sent"], notifier.sent)
        notifications.add_metric(["failed"], notifier.failed)
        notifications.add_metric(["dropped"], notifier.dropped)
        drills = HistogramMetricFamily(
            "router_rollback_duration_seconds",
            "Rollback drills: from the command to the first request served by the previous "
            "version.",
            labels=["route"],
        )
        for route_name, histogram in self.rollouts.drill_durations.items():
            drills.add_metric([route_name], _buckets(histogram), histogram.total)
        yield from (
            trips,
            drills,
            rolled_back,
            notifications,
            requests,
            duration,
            ttft,
            overhead,
            tokens,
            cost,
            unpriced,
            incomplete,
            tools,
            refusals,
            feedback,
            score,
            weight,
            build,
            sessionless,
            session_keys,
            client_system,
            in_flight,
            overloaded,
        )


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

    def __init__(self, rollouts: Rollouts) -> None:
        self.rollouts = rollouts

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "router_state_degraded",
            "1 while a change is in force in memory but not yet durable (the audit log or "
            "the state file could not be written); alert on it, and do not restart the router.",
            value=float(self.rollouts.store.degraded),
        )
        failed = CounterMetricFamily(
            "router_background_failures",
            "Background work that failed (logged with its traceback) and was retried, by task.",
            labels=["task"],
        )
        for task in sorted({*LOOPS, *tasks.failures}):
            failed.add_metric([task], tasks.failures[task])
        yield failed


class MetricsEndpoints:
    """GET /metrics (Prometheus text) and GET /windows (sliding windows as JSON)."""

    def __init__(self, routes: Mapping[str, LiveRoute], rollouts: Rollouts) -> None:
        self.routes = routes
        self.rollouts = rollouts
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RouterCollector(routes, rollouts))
        self.registry.register(RuntimeCollector())
        self.registry.register(ReliabilityCollector(rollouts))
        ProcessCollector(registry=self.registry)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def windows(self, request: web.Request) -> web.Response:
        seconds = request.query.get("seconds")
        span = int(seconds) if seconds and seconds.isdigit() else None
        view = {
            route.name: {
                version: {
                    "weight_percent": route.table.percent(version),
                    **target.stats.window(span).as_dict(),
                }
                for version, target in route.targets.items()
            }
            for route in self.routes.values()
        }
        return web.json_response(view)

    async def rollout_state(self, request: web.Request) -> web.Response:
        """GET /rollouts: live deploy state and the guardrail verdicts, read-only."""
        return web.json_response(self.rollouts.describe())

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
