"""The request handler: the one place that knows the order of the data path.

    read -> route -> choose -> rewrite -> forward -> relay -> record

Each stage lives in its own module (routing, dialects, forward, sse, telemetry); this module
only composes them. Each request is one `Exchange` (router/proxy/exchange.py), handed down the
stages and recorded once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web

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
    UpstreamUnavailable,
)
from router.proxy.access_log import AccessLog
from router.proxy.dialects import DIALECTS, RESPONSES, Dialect, dialect_for_path
from router.proxy.exchange import Exchange
from router.proxy.feedback import RecentRequests
from router.proxy.forward import Answer
from router.proxy.live import LiveRoute, Target
from router.proxy.routing import bucket_of, random_bucket
from router.proxy.sse import EventSplitter
from router.proxy.telemetry import Outcome, RouteCounters

log = logging.getLogger("router.proxy")
# Provider response headers worth relaying to the client; everything else stays behind.
RELAYED_HEADERS = frozenset({"content-type", "retry-after", "request-id", "openai-processing-ms"})
RELAYED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
SDK_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}
# A client's X-Request-Id is kept when it is this short and plain; any other gets a fresh id
# (an 8 KB id on every request would fill the feedback memory with 8 KB keys).
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
ENDPOINTS = (
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/{response_id}"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/feedback"),
    ("GET", "/v1/models"),
)
SERVED_PATHS = frozenset(path for _, path in ENDPOINTS)
SERVED_METHODS = frozenset(method for method, _ in ENDPOINTS)


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
        access: AccessLog | None = None,
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
        self.retry_after = max(1, round(retry_after))  # Retry-After takes whole seconds
        self.access = access or AccessLog("off")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_get("/v1/responses/{response_id}", self.stored_response)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/feedback", self.feedback)
        app.router.add_get("/v1/models", self.models)
        # Anything else gets a JSON error a client can act on, not aiohttp's plain text.
        for _, path in ENDPOINTS:
            app.router.add_route("*", path, self.wrong_method)
        app.router.add_route("*", "/{anything:.*}", self.unknown_endpoint)

    async def wrong_method(self, request: web.Request) -> web.Response:
        template = request.match_info.route.resource
        where = template.canonical if template is not None else request.path
        allowed = next(method for method, path in ENDPOINTS if path == where)
        error = MethodNotAllowed(
            f"{request.path} takes {allowed}, not {request.method}",
            code="method_not_allowed",
        )
        answer = self.refuse(request, dialect_for_path(request.path), error)
        answer.headers["Allow"] = allowed
        return answer

    async def unknown_endpoint(self, request: web.Request) -> web.Response:
        served = ", ".join(f"{method} {path}" for method, path in ENDPOINTS)
        error = NotFound(
            f"no endpoint {request.method} {request.path}; this proxy serves {served} "
            "(point the SDK's base_url at the router: http://HOST:PORT for Anthropic, "
            "http://HOST:PORT/v1 for OpenAI)",
            code="unknown_endpoint",
        )
        return self.refuse(request, dialect_for_path(request.path), error)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["openai"])

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["anthropic"])

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, RESPONSES)

    async def stored_response(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/responses/{id}: from the version, and so the provider, that made it.
        Logged, but not counted in the version's telemetry: it is a read, not an answer."""
        x = self.exchange(request, RESPONSES)
        return await self.logged(x, self.fetch_stored(x, request))

    async def fetch_stored(self, x: Exchange, request: web.Request) -> web.Response:
        response_id = request.match_info["response_id"]
        served = self.answered.lookup(response_id)
        route = self.routes.get(served.stats.route) if served else None
        target = route.targets.get(served.stats.version) if route and served else None
        if route is None or target is None:
            raise NotFound(
                f"no response {response_id!r} was answered through this router in the last "
                f"{self.answered.ttl:g} s; stored responses are fetched from the version that "
                "made them, so fetch it from the provider directly",
                code="unknown_response",
            )
        x.route, x.target = route, target
        x.headers.update(target.headers)
        upstream = target.upstream
        path = f"{RESPONSES.upstream_path}/{response_id}"
        if request.query_string:  # include[], and the like
            path = f"{path}?{request.query_string}"
        sent = perf_counter()
        try:
            answer = await upstream.fetch(path, upstream.headers_for(request.headers))
        finally:
            x.waited += perf_counter() - sent
        x.outcome = Outcome.of_status(answer.status)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def logged(self, x: Exchange, work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        """The answer `work` makes for an exchange that is logged but not counted in a
        version's telemetry (feedback, a stored response): the router's errors answered in
        the client's dialect, and the exchange recorded once however it ends."""
        try:
            answer = await work
            x.status = answer.status
            answer.headers.update(x.headers)
            return answer
        except RouterError as exc:
            return x.fail(exc)
        except asyncio.CancelledError:
            x.left(before_the_answer=False)  # nothing was asked of a provider on its behalf
            raise
        except Exception:
            x.crashed()
            raise
        finally:
            x.finish()

    async def models(self, request: web.Request) -> web.Response:
        x = self.exchange(request, DIALECTS["openai"])
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "bundle-router"}
            for name in self.routes
        ]
        x.status = 200
        x.finish()
        return web.json_response({"object": "list", "data": data}, dumps=_dumps, headers=x.headers)

    def exchange(self, request: web.Request, dialect: Dialect) -> Exchange:
        request_id = request.headers.get("X-Request-Id", "")
        if not CLIENT_REQUEST_ID.fullmatch(request_id):
            request_id = uuid.uuid4().hex
        # The access log names the endpoint by its template (/v1/responses/{response_id}),
        # and only one this proxy serves: never the client's own path or method.
        resource = request.match_info.route.resource
        path = resource.canonical if resource is not None else None
        if path not in SERVED_PATHS:
            path = None
        method = request.method if request.method in SERVED_METHODS else None
        return Exchange(dialect, request_id, self.access, method, path)

    def refuse(self, request: web.Request, dialect: Dialect, error: RouterError) -> web.Response:
        """Answer a request that reached no route with `error`, and log it."""
        x = self.exchange(request, dialect)
        answer = x.fail(error)
        x.finish()
        return answer

    async def handle(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        x = self.exchange(request, dialect)
        admitted: RouteCounters | None = None  # the route whose in-flight count we hold
        answer: Answer | None = None
        try:
            body = await self.read_body(request)
            route = self.route_for(request, body, dialect)
            admitted = self.admit(route)
            target = self.choose(x, route, request, body)
            # An id already naming another answer is replaced: feedback judges one answer.
            x.serve(route, target, self.recent.remember(x.request_id, target.stats))
            if self.debug:
                log.debug(
                    "request %s: %s %s -> %s %s (%s)",
                    x.request_id,
                    request.method,
                    request.path,
                    route.name,
                    target.bundle.version,
                    target.bundle.model,
                )
            rewritten = dialect.rewrite(body, target.injections[dialect.name], route.policy)
            if rewritten.client_system:
                route.counters.client_system_prompts += 1
            x.client_tools = rewritten.client_tools
            stream = body.get("stream") is True
            upstream = target.upstream
            payload = orjson.dumps(body)
            sent = perf_counter()
            try:
                answer = await upstream.send(
                    payload,
                    upstream.headers_for(request.headers),
                    stream=stream,
                    path=dialect.upstream_path,
                )
            finally:
                x.waited += perf_counter() - sent
            if stream and answer.status == 200 and answer.is_event_stream:
                return await self.relay_stream(request, answer, x, rewritten.relay_event)
            return await self.relay_json(answer, x)
        except RouterError as exc:
            if self.debug:
                log.debug("request %s: %s %s", x.request_id, exc.status, exc.message)
            return x.fail(exc)
        except asyncio.CancelledError:
            x.left(before_the_answer=answer is None)
            raise
        except Exception:
            x.crashed()
            raise
        finally:
            if answer is not None:
                answer.close()  # a client that left ends the upstream request at once
            if admitted is not None:
                admitted.in_flight -= 1
            x.finish()

    def admit(self, route: LiveRoute) -> RouteCounters:
        """Count the request in flight on its route, or turn it away when the route is full.
        Overload protection: past the limit a quick 503 beats a slow queue for everyone."""
        counters = route.counters
        if counters.in_flight >= self.max_in_flight:
            counters.overloaded += 1
            raise Overloaded(
                f"route {route.name} already has {counters.in_flight} requests in flight, its "
                f"limit (limits.max_concurrent_per_route); retry after {self.retry_after} s",
                retry_after=self.retry_after,
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
        self, x: Exchange, route: LiveRoute, request: web.Request, body: dict[str, Any]
    ) -> Target:
        """The version to serve; `x.session` says where its session key came from."""
        override = request.headers.get("X-Bundle-Version")
        if override is not None:
            x.session = "override"
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
        if key is not None:
            x.session = route.session_source
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
                        x.session = "previous_response"
                        return route.targets[version]
        if key is None and route.fingerprint_sessions:
            # Every turn of an agent run sends the conversation from its first user message
            # on, so that message keys the whole run; identical openings share a version.
            opening = x.dialect.opening(body)
            if opening is not None:
                route.counters.fingerprinted_requests += 1
                x.session = "fingerprint"
                key = f"\x00opening\x00{opening}"
        if key is None:
            if route.reject_sessionless:
                raise BadRequest(
                    f"route {route.name} needs a session key; send it in "
                    f"{route.describe_session_source()}",
                    code="missing_session_key",
                )
            route.counters.sessionless_requests += 1
            x.session = "random"
            return route.targets[route.table.choose(random_bucket())]
        table = route.table  # one table for the whole choice
        if table.tracks_sessions:  # a rolling release's flip: its sessions stay where they were
            held = route.held_target(table, key)
            if held is not None:
                return held
        return route.targets[table.choose(bucket_of(route.name, key))]

    async def relay_json(self, answer: Answer, x: Exchange) -> web.StreamResponse:
        target = x.target
        assert target is not None and x.route is not None
        started = perf_counter()
        try:
            data = await answer.read()
        finally:
            x.waited += perf_counter() - started
        status = answer.status
        x.outcome = Outcome.of_status(status)
        if x.outcome is Outcome.OK and target.stats.enabled:
            x.reading = reading = x.dialect.read_json(data, bool(x.route.refusal_patterns))
            if reading.response_id is not None:  # a later turn may chain from it
                self.answered.put(reading.response_id, target.stats)
            x.record_reading()  # before the overhead is read: checking tool calls is ours
        headers = x.headers
        headers["X-Router-Overhead-Ms"] = f"{x.overhead() * 1000:.3f}"
        x.status = status  # set last: a crash before here is answered with a 500
        return web.Response(status=status, body=data, headers={**relayed(answer), **headers})

    async def relay_stream(
        self,
        request: web.Request,
        answer: Answer,
        x: Exchange,
        relay: Callable[[bytes], bytes] | None,
    ) -> web.StreamResponse:
        """Relay an SSE stream event by event, reading each event for the telemetry.

        `relay`, when the dialect has one, hides what the router added to the request. A
        client that goes away ends the upstream request at once (the caller closes the
        answer). A stream that breaks, goes quiet or ends before its final event ends with
        an error event in the client's dialect and is never counted as complete."""
        target = x.target
        assert target is not None and x.route is not None
        enabled = target.stats.enabled
        dialect = x.dialect
        reader = dialect.stream_reader(bool(x.route.refusal_patterns))
        x.headers["X-Router-Overhead-Ms"] = f"{x.overhead() * 1000:.3f}"
        out = web.StreamResponse(
            status=200,
            headers={
                **relayed(answer),
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **x.headers,
            },
        )
        splitter = EventSplitter()
        failure: RouterError | None = None
        # The loop below runs once per chunk: it keeps the time spent waiting on the
        # provider and on the client in locals rather than calling out.
        waited = 0.0
        try:
            x.status = 200
            await out.prepare(request)
            while True:
                started = perf_counter()
                try:
                    chunk = await answer.readany()
                except RouterError as exc:
                    failure = exc
                    break
                finally:
                    waited += perf_counter() - started
                if not chunk:
                    break
                events = splitter.feed(chunk)
                if not events:
                    continue
                if enabled:
                    for event in events:
                        reader.feed(event)
                if x.ttft is None and reader.reading.started:
                    x.ttft = x.elapsed()
                if relay is not None:  # the dialect hides what the router added
                    events = [kept for kept in map(relay, events) if kept]
                    if not events:
                        continue
                started = perf_counter()
                written = await _write_quietly(
                    out, events[0] if len(events) == 1 else b"".join(events)
                )
                waited += perf_counter() - started
                if not written:
                    x.outcome = Outcome.CLIENT_DISCONNECT
                    break
            if x.outcome is Outcome.OK:
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
                if failure is None and enabled and not reader.reading.finished:
                    failure = UpstreamUnavailable(
                        f"provider {target.upstream.name} ended the stream before its final "
                        "event; the answer is incomplete",
                        code="upstream_stream_truncated",
                    )
                if failure is not None:
                    x.failed(failure)
                    x.status = 200  # already sent; the error goes as the stream's last event
                    await _write_quietly(out, failure.sse_event(dialect.name))
                with contextlib.suppress(ConnectionResetError):
                    await out.write_eof()
        finally:
            x.waited += waited
            x.reading = reading = reader.finish()
            if reading.error and x.outcome is Outcome.OK:
                x.outcome = Outcome.PROVIDER_5XX  # the provider reported an error in the stream
            if reading.response_id is not None:  # a later turn may chain from it
                self.answered.put(reading.response_id, target.stats)
        return out

    async def feedback(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/feedback {"request_id": ..., "passed": bool, "score": number?}."""
        x = self.exchange(request, DIALECTS["openai"])
        return await self.logged(x, self.record_feedback(request))

    async def record_feedback(self, request: web.Request) -> web.Response:
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
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise BadRequest("'score' must be a number when given", code="invalid_feedback")
        served = self.recent.lookup(request_id)
        if served is None:
            raise NotFound(
                f"request {request_id!r} is unknown or expired; feedback is kept for the "
                f"last {self.recent.capacity} requests, {self.recent.ttl:g} s each "
                "(telemetry.feedback_capacity and feedback_ttl in the config)",
                code="unknown_request_id",
            )
        stats = served.stats
        verdict = (passed, None if score is None else float(score))
        answer = {"request_id": request_id, "route": stats.route, "version": stats.version}
        if served.verdict is None:
            served.verdict = verdict
            stats.record_feedback(*verdict)
            return web.json_response({**answer, "recorded": True}, dumps=_dumps)
        if served.verdict == verdict:
            return web.json_response({**answer, "recorded": False, "duplicate": True}, dumps=_dumps)
        raise Conflict(
            f"request {request_id!r} already has a different verdict; the first one counts",
            code="conflicting_feedback",
        )


async def _write_quietly(out: web.StreamResponse, data: bytes) -> bool:
    """Write to a client that may have gone away. False when it has."""
    try:
        await out.write(data)
    except ConnectionResetError:
        return False
    return True


def relayed(answer: Answer) -> dict[str, str]:
    """The provider's headers worth passing on to the client."""
    kept = {}
    for name, value in answer.headers.items():
        lower = name.lower()
        if lower in RELAYED_HEADERS or lower.startswith(RELAYED_PREFIXES):
            kept[name] = value
        elif lower == "x-request-id":
            kept["X-Provider-Request-Id"] = value
    return kept


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
