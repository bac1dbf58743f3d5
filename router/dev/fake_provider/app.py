"""The fake provider's HTTP side: the three dialects' endpoints, the control endpoints, the
request log, latency, injected errors and streaming."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from pydantic import ValidationError

from router.dev.fake_provider.chat import Chat
from router.dev.fake_provider.messages import Messages
from router.dev.fake_provider.plan import Ask, Invalid, Plan, Planner
from router.dev.fake_provider.profile import Behaviour, ErrorKind, Profile
from router.dev.fake_provider.responses import Responses

RECENT_REQUESTS = 1000


class Dialect(Protocol):
    not_json: str

    def read(self, body: dict[str, Any]) -> Ask: ...

    def answer(self, body: dict[str, Any], ask: Ask, plan: Plan) -> dict[str, Any]: ...

    def events(self, body: dict[str, Any], ask: Ask, plan: Plan, how: Behaviour) -> list[bytes]: ...

    def refused(self, problem: Invalid) -> dict[str, Any]: ...

    def injected(self, status: int, request: web.Request) -> dict[str, Any]: ...


class FakeProvider:
    def __init__(self, profile: Profile) -> None:
        self.initial = profile
        self.profile = profile.model_copy(deep=True)
        self.random = random.Random(profile.seed)
        self.planner = Planner(self.random)
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)
        self.chat = Chat()
        self.messages = Messages()
        self.responses = Responses()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(f"{prefix}/chat/completions", self.on(self.chat))
            app.router.add_post(f"{prefix}/responses", self.on(self.responses))
            app.router.add_get(f"{prefix}/responses/{{id}}", self.responses.retrieve)
            app.router.add_delete(f"{prefix}/responses/{{id}}", self.responses.delete)
        app.router.add_post("/v1/messages", self.on(self.messages))
        app.router.add_get("/_fake/profile", self.get_profile)
        app.router.add_post("/_fake/profile", self.set_profile)
        app.router.add_get("/_fake/requests", self.recent)
        return app

    # ---- control -------------------------------------------------------------------
    async def get_profile(self, request: web.Request) -> web.Response:
        return web.json_response(self.profile.model_dump())

    async def set_profile(self, request: web.Request) -> web.Response:
        change = await request.json()
        if change.get("reset"):
            self.profile = self.initial.model_copy(deep=True)
            self.requests.clear()
        if "behaviour" in change:
            model = change.get("model")
            base = self.profile.behaviour(str(model)) if model else self.profile.default
            try:
                merged = Behaviour.model_validate({**base.model_dump(), **change["behaviour"]})
            except ValidationError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            if model:
                self.profile.models[model] = merged
            else:
                self.profile.default = merged
        return web.json_response(self.profile.model_dump())

    async def recent(self, request: web.Request) -> web.Response:
        n = int(request.query.get("n", "50"))
        items = list(self.requests)[-n:] if n > 0 else []
        return web.Response(body=orjson.dumps(items), content_type="application/json")

    # ---- the APIs --------------------------------------------------------------------
    def on(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.answer(request, dialect)

        return handle

    async def answer(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        raw = await request.read()
        record: dict[str, Any] = {
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "query": request.query_string,
            "body": None,
            "received_at": time.time(),
            "outcome": "pending",
        }
        self.requests.append(record)
        try:
            body = orjson.loads(raw)
            record["body"] = body
            if not isinstance(body, dict):
                raise Invalid(dialect.not_json)
        except orjson.JSONDecodeError:
            record["body"] = raw.decode(errors="replace")
            return self.refuse(record, dialect, Invalid(dialect.not_json))
        except Invalid as problem:
            return self.refuse(record, dialect, problem)
        how = self.profile.behaviour(str(body.get("model", "")))
        try:
            ask = dialect.read(body)
        except Invalid as problem:  # refused at once, as the real APIs validate first
            return self.refuse(record, dialect, problem)
        delay = how.latency_ms + self.random.uniform(-1, 1) * how.latency_jitter_ms
        try:
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            if self.random.random() < how.error_rate:
                record["outcome"] = f"error_{how.error_kind}"
                return self.error(request, dialect, how.error_kind)
            plan = self.planner.plan(ask, how)
            if body.get("stream") is True:
                record["outcome"] = "streaming"
                response = await self.stream(request, dialect.events(body, ask, plan, how), how)
            else:
                payload = dialect.answer(body, ask, plan)
                response = web.Response(body=orjson.dumps(payload), content_type="application/json")
            record["outcome"] = "completed"
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            if record["outcome"] in ("pending", "streaming"):
                record["outcome"] = "client_closed"
            raise

    def refuse(self, record: dict[str, Any], dialect: Dialect, problem: Invalid) -> web.Response:
        record["outcome"] = "invalid_request"
        return web.Response(
            status=problem.status,
            body=orjson.dumps(dialect.refused(problem)),
            content_type="application/json",
        )

    def error(self, request: web.Request, dialect: Dialect, kind: ErrorKind) -> web.Response:
        if kind == "reset":
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport else None
            if sock is not None:
                # SO_LINGER 0: close() sends a RST, like a crashed upstream.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        status = int(kind)
        return web.Response(
            status=status,
            body=orjson.dumps(dialect.injected(status, request)),
            content_type="application/json",
            headers={"retry-after": "1"} if status == 429 else {},
        )

    async def stream(
        self, request: web.Request, events: list[bytes], how: Behaviour
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await out.prepare(request)
        if how.stream_truncate_after is not None:
            events = events[: how.stream_truncate_after]
        for index, event in enumerate(events):
            if index and how.stream_interval_ms:
                await asyncio.sleep(how.stream_interval_ms / 1000)
            await out.write(event)
        await out.write_eof()
        return out
