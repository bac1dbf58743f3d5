"""The request handler: the one place that knows the order of the data path.

    read -> route -> choose -> rewrite -> forward -> relay -> record

Each stage lives in its own module (routing, dialects, forward, sse, telemetry); this module
only composes them. A `LiveRoute` is a route as it is being served: its weight table is
replaced by one assignment, never changed in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.bundles import Bundle
from router.catalog import RouteSpec
from router.dialects import DIALECTS, FAMILIES, RESPONSES, Dialect, Injection
from router.dialects.base import Policy, Reading, Rewritten
from router.errors import (
    BadRequest,
    Conflict,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    RequestTimeout,
    RouterError,
    UnsupportedMediaType,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from router.feedback import RecentRequests
from router.forward import Upstream
from router.patterns import compile_pattern
from router.routing import WeightTable, bucket_of, random_bucket
from router.sse import EventSplitter
from router.telemetry import RouteCounters, VersionStats

log = logging.getLogger("router.proxy")
# Provider response headers worth relaying to the client; everything else stays behind.
RELAYED_HEADERS = frozenset({"content-type", "retry-after", "request-id", "openai-processing-ms"})
RELAYED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
SDK_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}
# Outcomes that count against a version in its error rate. A provider 4xx is usually the
# caller's doing and is counted apart; a 429 may be the new snapshot's tighter limit.
ERROR_OUTCOMES = frozenset({"provider_5xx", "provider_429", "timeout", "connect_error"})
# A client's X-Request-Id is kept when it is this short and plain; any other gets a fresh id
# (an 8 KB id on every request would fill the feedback memory with 8 KB keys).
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


@dataclass(frozen=True, slots=True)
class Target:
    """One bundle version, ready to serve: what to inject, where to send it, what to count."""

    bundle: Bundle
    injections: Mapping[str, Injection]  # per endpoint dialect the route serves
    upstream: Upstream
    headers: Mapping[str, str]  # X-Bundle-Version and X-Bundle-Digest
    stats: VersionStats


class LiveRoute:
    """A route being served. `table` is swapped whole; counters are plain ints."""

    def __init__(
        self,
        spec: RouteSpec,
        upstreams: Mapping[str, Upstream],
        stats: Mapping[str, VersionStats],
        counters: RouteCounters | None = None,
    ) -> None:
        config = spec.config
        self.name = spec.name
        self.dialect: Dialect = DIALECTS[spec.dialect]
        self.dialects = FAMILIES[spec.dialect]  # the endpoints this route serves
        self.targets: dict[str, Target] = {}
        for bundle in spec.bundles.values():
            self.add_target(bundle, upstreams[bundle.provider], stats[bundle.version])
        self.table = WeightTable.build(config.basis_points(), config.active, config.candidate)
        self.session_header = config.session_key.header
        self.session_field = (
            tuple(config.session_key.body_field.split("."))
            if config.session_key.body_field
            else None
        )
        self.reject_sessionless = config.session_key.missing == "reject"
        # `missing: reject` asks every client for a key of its own: no fallback stands in.
        fallback = () if self.reject_sessionless else config.session_key.fallback
        self.chain_sessions = "previous_response" in fallback
        self.fingerprint_sessions = "fingerprint" in fallback
        self.policy = Policy(spec.name, config.client_system, config.client_tools)
        self.allow_override = config.allow_version_override
        self.refusal_patterns = [compile_pattern(p) for p in config.refusal_patterns]  # RE2
        self.counters = counters or RouteCounters()

    def add_target(self, bundle: Bundle, upstream: Upstream, stats: VersionStats) -> None:
        """Make a version servable (one dict assignment; weights decide if it gets traffic)."""
        self.targets[bundle.version] = Target(
            bundle,
            {dialect.name: dialect.prepare(bundle) for dialect in self.dialects},
            upstream,
            {"X-Bundle-Version": bundle.version, "X-Bundle-Digest": bundle.short_digest},
            stats,
        )

    def session_key(self, request: web.Request, body: dict[str, Any]) -> str | None:
        if self.session_header:
            return request.headers.get(self.session_header) or None
        value: Any = body
        for part in self.session_field or ():
            value = value.get(part) if isinstance(value, dict) else None
        return str(value) if isinstance(value, str | int) and value != "" else None

    def describe_session_source(self) -> str:
        if self.session_header:
            return f"the {self.session_header} header"
        return f"the body field {'.'.join(self.session_field or ())}"


class Clock:
    """Splits a request's time into the router's own and the time spent waiting on others
    (the provider, or a slow client draining a stream)."""

    __slots__ = ("started", "waited")

    def __init__(self) -> None:
        self.started = perf_counter()
        self.waited = 0.0

    def elapsed(self) -> float:
        return perf_counter() - self.started

    def overhead(self) -> float:
        return perf_counter() - self.started - self.waited


class Proxy:
    def __init__(
        self,
        routes: Mapping[str, LiveRoute],
        max_body_bytes: int,
        recent: RecentRequests,
        *,
        max_in_flight: int = 1024,
        retry_after: float = 1.0,
        body_timeout: float = 60.0,
    ) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes
        self.recent = recent
        # Responses API response ids -> the version that answered, so that a chained turn
        # (previous_response_id) and GET /v1/responses/{id} reach the provider that has it.
        self.answered = RecentRequests(recent.capacity, recent.ttl)
        self.max_in_flight = max_in_flight
        self.body_timeout = body_timeout
        self.debug = log.isEnabledFor(logging.DEBUG)  # read once: the hot path skips the call
        self.retry_after = f"{max(1, round(retry_after))}"  # Retry-After takes whole seconds

    ENDPOINTS = (
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/{response_id}"),
        ("POST", "/v1/messages"),
        ("POST", "/v1/feedback"),
        ("GET", "/v1/models"),
    )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/responses/{response_id}", self.stored_response)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/v1/models", self.models)
        # Anything else gets a JSON error a client can act on, not aiohttp's plain text.
        for _, path in self.ENDPOINTS:
            app.router.add_route("*", path, self.wrong_method)
        app.router.add_route("*", "/{anything:.*}", self.unknown_endpoint)

    async def wrong_method(self, request: web.Request) -> web.Response:
        template = request.match_info.route.resource
        where = template.canonical if template is not None else request.path
        allowed = next(method for method, path in self.ENDPOINTS if path == where)
        error = MethodNotAllowed(
            f"{request.path} takes {allowed}, not {request.method}",
            code="method_not_allowed",
        )
        return error_response(error, _dialect_of(request.path), {"Allow": allowed})

    async def unknown_endpoint(self, request: web.Request) -> web.Response:
        served = ", ".join(f"{method} {path}" for method, path in self.ENDPOINTS)
        error = NotFound(
            f"no endpoint {request.method} {request.path}; this proxy serves {served} "
            "(point the SDK's base_url at the router: http://HOST:PORT for Anthropic, "
            "http://HOST:PORT/v1 for OpenAI)",
            code="unknown_endpoint",
        )
        return error_response(error, _dialect_of(request.path), {})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["openai"])

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["anthropic"])

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, RESPONSES)

    async def stored_response(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/responses/{id}: from the version, and so the provider, that made it."""
        response_id = request.match_info["response_id"]
        served = self.answered.lookup(response_id)
        route = self.routes.get(served.stats.route) if served else None
        target = route.targets.get(served.stats.version) if route and served else None
        if target is None:
            error = NotFound(
                f"no response {response_id!r} was answered through this router in the last "
                f"{self.answered.ttl:g} s; stored responses are fetched from the version that "
                "made them, so fetch it from the provider directly",
                code="unknown_response",
            )
            return error_response(error, RESPONSES, {})
        upstream = target.upstream
        headers = {**target.headers, "X-Request-Id": uuid.uuid4().hex}
        path = f"{RESPONSES.upstream_path}/{response_id}"
        if request.query_string:  # include[], and the like
            path = f"{path}?{request.query_string}"
        try:
            answer = await upstream.fetch(path, upstream.headers_for(request.headers))
        except RouterError as exc:
            return error_response(exc, RESPONSES, headers)
        return web.Response(
            status=answer.status, body=answer.body, headers={**answer.headers, **headers}
        )

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "bundle-router"}
            for name in self.routes
        ]
        return web.json_response({"object": "list", "data": data}, dumps=_dumps)

    async def handle(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        clock = Clock()
        request_id = request.headers.get("X-Request-Id", "")
        if not CLIENT_REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        headers = {"X-Request-Id": request_id}
        target: Target | None = None
        admitted: RouteCounters | None = None  # the route whose in-flight count we hold
        try:
            try:
                body = await self.read_body(request)
                route = self.route_for(request, body, dialect)
                admitted = self.admit(route)
                target = self.choose(route, request, body, dialect)
                # An id already naming another answer is replaced: feedback judges one answer.
                request_id = self.recent.remember(request_id, target.stats)
                headers["X-Request-Id"] = request_id
                headers.update(target.headers)
                if self.debug:
                    log.debug(
                        "request %s: %s %s -> %s %s (%s)",
                        request_id,
                        request.method,
                        request.path,
                        route.name,
                        target.bundle.version,
                        target.bundle.model,
                    )
                rewritten = dialect.rewrite(body, target.injections[dialect.name], route.policy)
                if rewritten.client_system:
                    route.counters.client_system_prompts += 1
                stream = body.get("stream") is True
                upstream = target.upstream
                payload = orjson.dumps(body)
                sent = perf_counter()
                try:
                    response = await upstream.send(
                        payload,
                        upstream.headers_for(request.headers),
                        stream=stream,
                        path=dialect.upstream_path,
                    )
                finally:
                    clock.waited += perf_counter() - sent
            except RouterError as exc:
                if target is not None:
                    outcome = outcome_of_error(exc)
                    target.stats.record_request(
                        outcome,
                        error=outcome in ERROR_OUTCOMES or exc.status >= 500,
                        seconds=clock.elapsed(),
                        overhead=clock.overhead(),
                    )
                if isinstance(exc, Overloaded):
                    headers["Retry-After"] = self.retry_after
                if self.debug:
                    log.debug("request %s: %s %s", request_id, exc.status, exc.message)
                answer = error_response(exc, dialect, headers)
                if isinstance(exc, RequestTimeout | PayloadTooLarge):
                    answer.force_close()  # close rather than read and discard the unread body
                return answer
            except asyncio.CancelledError:
                if target is not None:  # the client left while the provider was thinking
                    target.stats.record_usage(None)  # the provider may bill it; nobody knows
                    target.stats.record_request(
                        "client_disconnect",
                        error=False,
                        seconds=clock.elapsed(),
                        overhead=clock.overhead(),
                    )
                raise
            try:
                if (
                    stream
                    and response.status == 200
                    and response.content_type == "text/event-stream"
                ):
                    return await self.relay_stream(
                        request, response, route, target, headers, clock, dialect, rewritten
                    )
                return await self.relay_json(
                    response, route, target, headers, clock, dialect, rewritten
                )
            finally:
                response.close()
        finally:
            if admitted is not None:
                admitted.in_flight -= 1

    def admit(self, route: LiveRoute) -> RouteCounters:
        """Count the request in flight on its route, or turn it away when the route is full.
        Overload protection: past the limit a quick 503 beats a slow queue for everyone."""
        counters = route.counters
        if counters.in_flight >= self.max_in_flight:
            counters.overloaded += 1
            raise Overloaded(
                f"route {route.name} already has {counters.in_flight} requests in flight, its "
                f"limit (limits.max_concurrent_per_route); retry after {self.retry_after} s",
            )
        counters.in_flight += 1
        return counters

    async def read_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"Content-Type is {request.content_type or 'missing'}; "
                "send the body as application/json",
                code="unsupported_media_type",
            )
        if (request.content_length or 0) > self.max_body_bytes:
            raise self.too_large()  # said up front: no need to wait for the body
        try:
            if request.content.is_eof():  # the usual case: the body came with the head
                raw = await request.read()
            else:
                async with asyncio.timeout(self.body_timeout):
                    raw = await request.read()
        except TimeoutError:
            announced = request.content_length
            raise RequestTimeout(
                f"the request body did not arrive within {self.body_timeout:g} s "
                f"(limits.body_timeout), "
                + (f"{announced} bytes announced" if announced is not None else "chunked")
                + "; send the whole body at once",
            ) from None
        except web.HTTPRequestEntityTooLarge:
            raise self.too_large() from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(
                f"the request body is not valid JSON ({exc}); send a JSON object",
                code="invalid_json",
            ) from None
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object", code="invalid_json")
        return body

    def too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the request body is over the limit of {self.max_body_bytes} bytes; send a "
            "smaller request, or raise limits.max_body_bytes in the config",
        )

    def route_for(self, request: web.Request, body: dict[str, Any], dialect: Dialect) -> LiveRoute:
        name = request.headers.get("X-Route") or body.get("model")
        known = ", ".join(self.routes)
        if not name or not isinstance(name, str):
            raise BadRequest(
                f"the request has no 'model'; set it to a route name ({known})",
                code="missing_model",
            )
        route = self.routes.get(name)
        if route is None:
            raise NotFound(
                f"unknown route {name!r}; set 'model' to one of the routes: {known}",
                code="unknown_route",
            )
        if dialect not in route.dialects:
            expected = route.dialect
            raise BadRequest(
                f"route {name} speaks the {expected.name} dialect; call POST {expected.path} "
                f"(the {SDK_NAMES[expected.name]} SDK) instead of {dialect.path}",
                code="wrong_dialect",
            )
        return route

    def choose(
        self, route: LiveRoute, request: web.Request, body: dict[str, Any], dialect: Dialect
    ) -> Target:
        override = request.headers.get("X-Bundle-Version")
        if override is not None:
            if not route.allow_override:
                raise BadRequest(
                    f"version overrides are off for route {route.name}; remove the "
                    f"X-Bundle-Version header, or set routes.{route.name}."
                    "allow_version_override: true in the config",
                    code="override_not_allowed",
                )
            target = route.targets.get(override)
            if target is None:
                raise BadRequest(
                    f"route {route.name} has no version {override!r}; "
                    f"its versions are {', '.join(route.targets)}",
                    code="unknown_version",
                )
            live = route.table.live
            if override not in live:  # rolled back, warm, archived: never served by request
                raise BadRequest(
                    f"version {override} of route {route.name} is not live; an override may "
                    f"pick only {' or '.join(sorted(live))} (the active version and a live "
                    "candidate). Remove the X-Bundle-Version header",
                    code="version_not_live",
                )
            return target
        key = route.session_key(request, body)
        if key is None and route.chain_sessions:
            previous = body.get("previous_response_id")
            if isinstance(previous, str):  # a chained Responses turn: where its chain lives
                served = self.answered.lookup(previous)
                if served is not None and served.stats.route == route.name:
                    version, table = served.stats.version, route.table
                    # Still live, and still meant to get traffic: a canary aborted or set
                    # to 0 % takes no chained turns either.
                    if version in table.live and table.weights.get(version, 0) > 0:
                        route.counters.chained_requests += 1
                        return route.targets[version]
        if key is None and route.fingerprint_sessions:
            # Every turn of an agent run sends the conversation from its first user message
            # on, so that message keys the whole run; identical openings share a version.
            opening = dialect.opening(body)
            if opening is not None:
                route.counters.fingerprinted_requests += 1
                key = f"\x00opening\x00{opening}"
        if key is None:
            if route.reject_sessionless:
                raise BadRequest(
                    f"route {route.name} needs a session key; send it in "
                    f"{route.describe_session_source()}",
                    code="missing_session_key",
                )
            route.counters.sessionless_requests += 1
            bucket = random_bucket()
        else:
            bucket = bucket_of(route.name, key)
        return route.targets[route.table.choose(bucket)]

    async def relay_json(
        self,
        response: aiohttp.ClientResponse,
        route: LiveRoute,
        target: Target,
        headers: dict[str, str],
        clock: Clock,
        dialect: Dialect,
        rewritten: Rewritten,
    ) -> web.StreamResponse:
        stats = target.stats
        started = perf_counter()
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            clock.waited += perf_counter() - started
            error = target.upstream.translate(exc)
            stats.record_request(
                outcome_of_error(error),
                error=True,
                seconds=clock.elapsed(),
                overhead=clock.overhead(),
            )
            return error_response(error, dialect, headers)
        except asyncio.CancelledError:
            clock.waited += perf_counter() - started
            stats.record_request(
                "client_disconnect", error=False, seconds=clock.elapsed(), overhead=clock.overhead()
            )
            raise
        clock.waited += perf_counter() - started
        status = response.status
        outcome = outcome_of_status(status)
        if outcome == "ok" and stats.enabled:
            reading = dialect.read_json(data, bool(route.refusal_patterns))
            self.record_reading(route, target, reading, rewritten.client_tools)
        overhead = clock.overhead()
        stats.record_request(
            outcome, error=outcome in ERROR_OUTCOMES, seconds=clock.elapsed(), overhead=overhead
        )
        headers["X-Router-Overhead-Ms"] = f"{overhead * 1000:.3f}"
        return web.Response(
            status=status, body=data, headers={**relayed_headers(response), **headers}
        )

    async def relay_stream(
        self,
        request: web.Request,
        response: aiohttp.ClientResponse,
        route: LiveRoute,
        target: Target,
        headers: dict[str, str],
        clock: Clock,
        dialect: Dialect,
        rewritten: Rewritten,
    ) -> web.StreamResponse:
        """Relay an SSE stream event by event, reading each event for the telemetry.

        A client that goes away ends the upstream request at once (the caller closes the
        upstream response). A stream that breaks, goes quiet or ends before its final event
        ends with an error event in the client's dialect and is never counted as complete."""
        stats = target.stats
        reader = dialect.stream_reader(bool(route.refusal_patterns))
        relay = rewritten.relay_event
        headers["X-Router-Overhead-Ms"] = f"{clock.overhead() * 1000:.3f}"
        out = web.StreamResponse(
            status=200,
            headers={
                **relayed_headers(response),
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **headers,
            },
        )
        splitter = EventSplitter()
        content = response.content
        ttft: float | None = None
        failure: RouterError | None = None
        outcome = "ok"
        try:
            await out.prepare(request)
            while True:
                started = perf_counter()
                try:
                    chunk = await content.readany()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failure = target.upstream.translate(exc)
                    break
                finally:
                    clock.waited += perf_counter() - started
                if not chunk:
                    break
                events = splitter.feed(chunk)
                if not events:
                    continue
                if stats.enabled:
                    for event in events:
                        reader.feed(event)
                if ttft is None and reader.reading.started:
                    ttft = clock.elapsed()
                if relay is not None:  # the dialect hides what the router added
                    events = [kept for kept in map(relay, events) if kept]
                    if not events:
                        continue
                started = perf_counter()
                written = await _write_quietly(
                    out, events[0] if len(events) == 1 else b"".join(events)
                )
                clock.waited += perf_counter() - started
                if not written:
                    outcome = "client_disconnect"
                    break
            if outcome == "ok":
                rest = splitter.flush()
                if rest and failure is None:
                    # A last event the provider did not end with a blank line: complete it,
                    # so the client's parser keeps it (SSE drops an unterminated event).
                    reader.feed(rest)
                    rest = relay(rest) if relay is not None else rest
                    if rest:
                        await _write_quietly(out, rest.rstrip(b"\r\n") + b"\n\n")
                # After a failure the tail is half an event: it is dropped, never relayed,
                # so that the error event below starts on a line of its own.
                if failure is None and stats.enabled and not reader.reading.finished:
                    failure = UpstreamUnavailable(
                        f"provider {target.upstream.name} ended the stream before its final "
                        "event; the answer is incomplete",
                        code="upstream_stream_truncated",
                    )
                if failure is not None:
                    outcome = outcome_of_error(failure)
                    await _write_quietly(out, failure.sse_event(dialect.name))
                with contextlib.suppress(ConnectionResetError):
                    await out.write_eof()
        except asyncio.CancelledError:
            outcome = "client_disconnect"
            raise
        finally:
            reading = reader.finish()
            if reading.error and outcome == "ok":
                outcome = "provider_5xx"  # the provider reported an error inside the stream
            self.record_reading(route, target, reading, rewritten.client_tools)
            stats.record_request(
                outcome,
                error=outcome in ERROR_OUTCOMES,
                seconds=clock.elapsed(),
                overhead=clock.overhead(),
                ttft=ttft,
            )
        return out

    def record_reading(
        self, route: LiveRoute, target: Target, reading: Reading, client_tools: frozenset[str]
    ) -> None:
        stats, bundle = target.stats, target.bundle
        if reading.response_id is not None:  # a later turn may chain from it
            self.answered.put(reading.response_id, stats)
        stats.record_usage(reading.usage, reading.usage_complete)
        for call in reading.tool_calls:
            if call.name in client_tools:  # the client's own tool: not the bundle's to judge
                stats.record_tool_call("client_tool")
            else:
                result = bundle.check_tool_call(call.name, call.arguments, raw=call.raw)
                stats.record_tool_call(result)
        refused = reading.refusal
        if not refused and route.refusal_patterns and reading.text:
            text = "".join(reading.text)
            refused = any(p.search(text) for p in route.refusal_patterns)
        if refused:
            stats.record_refusal()

    async def feedback(self, request: web.Request) -> web.Response:
        """POST /v1/feedback {"request_id": ..., "passed": bool, "score": number?}."""
        openai = DIALECTS["openai"]
        try:
            body = await self.read_body(request)
            request_id = body.get("request_id") or request.headers.get("X-Request-Id")
            passed = body.get("passed")
            score = body.get("score")
            if not isinstance(request_id, str) or not request_id:
                raise BadRequest(
                    "feedback needs 'request_id': the X-Request-Id of the answer it judges",
                    code="missing_request_id",
                )
            if not CLIENT_REQUEST_ID.fullmatch(request_id):  # never an id the router kept
                raise NotFound(
                    "'request_id' is not an id the router answered with: ids are at most 128 "
                    "letters, digits and ._:/+=@-; send the X-Request-Id of the answer",
                    code="unknown_request_id",
                )
            if not isinstance(passed, bool):
                raise BadRequest("feedback needs 'passed': true or false", code="invalid_feedback")
            if score is not None and (
                isinstance(score, bool) or not isinstance(score, int | float)
            ):
                raise BadRequest("'score' must be a number when given", code="invalid_feedback")
            served = self.recent.lookup(request_id)
            if served is None:
                raise NotFound(
                    f"request {request_id!r} is unknown or expired; feedback is kept for the "
                    f"last {self.recent.capacity} requests, {self.recent.ttl:g} s each "
                    "(telemetry.feedback_capacity and feedback_ttl in the config)",
                    code="unknown_request_id",
                )
        except RouterError as exc:
            return error_response(exc, openai, {})
        stats = served.stats
        verdict = (passed, None if score is None else float(score))
        answer = {"request_id": request_id, "route": stats.route, "version": stats.version}
        if served.verdict is None:
            served.verdict = verdict
            stats.record_feedback(*verdict)
            return web.json_response({**answer, "recorded": True}, dumps=_dumps)
        if served.verdict == verdict:
            return web.json_response({**answer, "recorded": False, "duplicate": True}, dumps=_dumps)
        conflict = Conflict(
            f"request {request_id!r} already has a different verdict; the first one counts",
            code="conflicting_feedback",
        )
        return error_response(conflict, openai, {})


def _dialect_of(path: str) -> Dialect:
    """The dialect to answer an unroutable request in: Anthropic's for its paths."""
    return DIALECTS["anthropic" if path.startswith("/v1/messages") else "openai"]


def outcome_of_status(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "provider_429"
    return "provider_4xx" if status < 500 else "provider_5xx"


def outcome_of_error(exc: RouterError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "timeout"
    if isinstance(exc, UpstreamUnavailable):
        return "connect_error"
    return "router_error"


async def _write_quietly(out: web.StreamResponse, data: bytes) -> bool:
    """Write to a client that may have gone away. False when it has."""
    try:
        await out.write(data)
    except ConnectionResetError:
        return False
    return True


def relayed_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    relayed = {}
    for name, value in response.headers.items():
        lower = name.lower()
        if lower in RELAYED_HEADERS or lower.startswith(RELAYED_PREFIXES):
            relayed[name] = value
        elif lower == "x-request-id":
            relayed["X-Provider-Request-Id"] = value
    return relayed


def error_response(exc: RouterError, dialect: Dialect, headers: dict[str, str]) -> web.Response:
    return web.Response(
        status=exc.status,
        body=exc.body(dialect.name),
        content_type="application/json",
        headers={**headers, "X-Router-Error": exc.code},
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
