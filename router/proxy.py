"""The request handler: the one place that knows the order of the data path.

    read -> route -> choose -> rewrite -> forward -> relay

Each stage lives in its own module (routing, dialects, forward, sse); this module only
composes them. A `LiveRoute` is a route as it is being served: its weight table is replaced
by one assignment, never changed in place.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.bundles import Bundle
from router.catalog import RouteSpec
from router.dialects import DIALECTS, Dialect, Injection
from router.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    RouterError,
    UnsupportedMediaType,
)
from router.forward import Upstream
from router.routing import WeightTable, bucket_of, random_bucket
from router.sse import EventSplitter

# Provider response headers worth relaying to the client; everything else stays behind.
RELAYED_HEADERS = frozenset({"content-type", "retry-after", "request-id", "openai-processing-ms"})
RELAYED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
SDK_NAMES = {"openai": "OpenAI", "anthropic": "Anthropic"}


@dataclass(frozen=True, slots=True)
class Target:
    """One bundle version, ready to serve: what to inject and where to send it."""

    bundle: Bundle
    injection: Injection
    upstream: Upstream
    headers: Mapping[str, str]  # X-Bundle-Version and X-Bundle-Digest


class LiveRoute:
    """A route being served. `table` is swapped whole; the counters are plain ints."""

    def __init__(self, spec: RouteSpec, upstreams: Mapping[str, Upstream]) -> None:
        config = spec.config
        self.name = spec.name
        self.spec = spec
        self.dialect: Dialect = DIALECTS[spec.dialect]
        self.targets: dict[str, Target] = {
            version: Target(
                bundle,
                self.dialect.prepare(bundle),
                upstreams[bundle.provider],
                {"X-Bundle-Version": version, "X-Bundle-Digest": bundle.short_digest},
            )
            for version, bundle in spec.bundles.items()
        }
        self.table = WeightTable.build(config.basis_points(), config.active, config.candidate)
        self.session_header = config.session_key.header
        self.session_field = (
            tuple(config.session_key.body_field.split("."))
            if (config.session_key.body_field)
            else None
        )
        self.reject_sessionless = config.session_key.missing == "reject"
        self.client_system = config.client_system
        self.allow_override = config.allow_version_override
        self.sessionless_requests = 0
        self.client_system_prompts = 0

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


class Proxy:
    def __init__(self, routes: Mapping[str, LiveRoute], max_body_bytes: int) -> None:
        self.routes = routes
        self.max_body_bytes = max_body_bytes

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["openai"])

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self.handle(request, DIALECTS["anthropic"])

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "bundle-router"}
            for name in self.routes
        ]
        return web.json_response({"object": "list", "data": data}, dumps=_dumps)

    async def handle(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        headers = {"X-Request-Id": request.headers.get("X-Request-Id") or uuid.uuid4().hex}
        try:
            body = await self.read_body(request)
            route = self.route_for(request, body, dialect)
            target = self.choose(route, request, body)
            headers.update(target.headers)
            if dialect.rewrite(body, target.injection, route.client_system):
                route.client_system_prompts += 1
            stream = body.get("stream") is True
            upstream = target.upstream
            response = await upstream.send(
                orjson.dumps(body), upstream.headers_for(request.headers), stream=stream
            )
        except RouterError as exc:
            return error_response(exc, dialect, headers)
        try:
            if stream and response.status == 200 and response.content_type == "text/event-stream":
                return await self.relay_stream(request, response, target, dialect, headers)
            return await self.relay_json(response, target, dialect, headers)
        finally:
            response.close()

    async def read_body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise UnsupportedMediaType(
                f"Content-Type is {request.content_type or 'missing'}; "
                "send the body as application/json",
                code="unsupported_media_type",
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(
                f"the request body is over the limit of {self.max_body_bytes} bytes; send a "
                "smaller request, or raise limits.max_body_bytes in the config",
            ) from None
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
        if route.dialect is not dialect:
            expected = route.dialect
            raise BadRequest(
                f"route {name} speaks the {expected.name} dialect; call POST {expected.path} "
                f"(the {SDK_NAMES[expected.name]} SDK) instead of {dialect.path}",
                code="wrong_dialect",
            )
        return route

    def choose(self, route: LiveRoute, request: web.Request, body: dict[str, Any]) -> Target:
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
            return target
        key = route.session_key(request, body)
        if key is None:
            if route.reject_sessionless:
                raise BadRequest(
                    f"route {route.name} needs a session key; send it in "
                    f"{route.describe_session_source()}",
                    code="missing_session_key",
                )
            route.sessionless_requests += 1
            bucket = random_bucket()
        else:
            bucket = bucket_of(route.name, key)
        return route.targets[route.table.choose(bucket)]

    async def relay_json(
        self,
        response: aiohttp.ClientResponse,
        target: Target,
        dialect: Dialect,
        headers: dict[str, str],
    ) -> web.Response:
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error_response(target.upstream.translate(exc), dialect, headers)
        return web.Response(
            status=response.status, body=data, headers={**relayed_headers(response), **headers}
        )

    async def relay_stream(
        self,
        request: web.Request,
        response: aiohttp.ClientResponse,
        target: Target,
        dialect: Dialect,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        """Relay an SSE stream event by event. A client that goes away ends the upstream
        request at once (the caller closes the upstream response)."""
        out = web.StreamResponse(
            status=200,
            headers={
                **relayed_headers(response),
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                **headers,
            },
        )
        await out.prepare(request)
        splitter = EventSplitter()
        reader = response.content
        while True:
            try:
                chunk = await reader.readany()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = target.upstream.translate(exc)
                await _write_quietly(out, error.sse_event(dialect.name))
                return out
            if not chunk:
                break
            events = splitter.feed(chunk)
            if events and not await _write_quietly(
                out, events[0] if len(events) == 1 else b"".join(events)
            ):
                return out  # the client went away
        rest = splitter.flush()
        if rest:
            await _write_quietly(out, rest)
        with contextlib.suppress(ConnectionResetError):
            await out.write_eof()
        return out


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
