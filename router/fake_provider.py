"""A scripted local provider that speaks OpenAI and Anthropic, JSON and SSE.

Behaviour is set per model snapshot by a profile (YAML or JSON):

    seed: 7
    default: {latency_ms: 20, stream_chunks: 5}
    models:
      claude-opus-4-7-20260108: {error_rate: 0.02, error_kind: "529"}

and can be changed while it runs, which is how tests and the demo inject regressions:

    POST /_fake/profile  {"model": "claude-opus-4-7-20260108", "behaviour": {"error_rate": 0.5}}
    POST /_fake/profile  {"reset": true}
    GET  /_fake/profile
    GET  /_fake/requests?n=20     the last requests received (path, headers, body, outcome)

Answers use the exact shapes of the real APIs: usage in the final stream chunk (OpenAI,
with `stream_options.include_usage`) or in `message_start` / `message_delta` (Anthropic),
tool calls, refusals and stop reasons.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.files import load_yaml

ErrorKind = Literal["400", "401", "500", "529", "429", "reset"]
BadToolCall = Literal["schema", "unknown_tool", "not_json"]
RECENT_REQUESTS = 1000


class Behaviour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)  # before the answer (or first event)
    latency_jitter_ms: float = Field(default=0.0, ge=0)  # uniform +/- around latency_ms
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_kind: ErrorKind = "500"
    refusal_rate: float = Field(default=0.0, ge=0, le=1)
    tool_call_rate: float = Field(default=0.0, ge=0, le=1)
    invalid_tool_call_rate: float = Field(default=0.0, ge=0, le=1)  # of the tool calls
    invalid_tool_call_kind: BadToolCall = "schema"  # how an invalid tool call is broken
    input_tokens: int | None = Field(default=None, ge=0)  # None: estimated from the request
    output_tokens: int | None = Field(default=None, ge=0)  # None: one per word of text
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    stream_chunks: int = Field(default=4, ge=1)
    stream_interval_ms: float = Field(default=0.0, ge=0)  # between stream events
    stream_truncate_after: int | None = Field(default=None, ge=0)  # end cleanly after N events
    text: str = "Thanks for reaching out. I have looked into your request and it is handled."


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    default: Behaviour = Behaviour()
    models: dict[str, Behaviour] = {}

    def behaviour(self, model: str) -> Behaviour:
        return self.models.get(model, self.default)


def load_profile(path: str | Path | None) -> Profile:
    if path is None:
        return Profile()
    raw = load_yaml(Path(path)) or {}  # bounded like router.yaml: size, aliases, depth
    return Profile.model_validate(raw)


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a simple object schema: every property, a plain value each."""
    values: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        values[name] = _example_value(prop if isinstance(prop, dict) else {})
    return values


def _example_value(schema: dict[str, Any]) -> Any:
    if schema.get("examples"):
        return schema["examples"][0]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "integer":
        return max(int(schema.get("minimum", 1)), 1)
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return example_arguments(schema)
    return "example-" + "x" * int(schema.get("minLength", 0))


def broken_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that break the schema: each property gets a value of the wrong type, and
    an object without properties gets one it does not expect."""
    props = schema.get("properties") or {}
    if not props:
        return {"unexpected": [1, 2, 3]}
    wrong: dict[Any, Any] = {
        "string": 12345,
        "integer": "twelve",
        "number": "many",
        "boolean": "yes",
    }
    return {
        name: wrong.get(prop.get("type") if isinstance(prop, dict) else "")
        for name, prop in props.items()
    }


class FakeProvider:
    def __init__(self, profile: Profile) -> None:
        self.initial = profile
        self.profile = profile.model_copy(deep=True)
        self.random = random.Random(profile.seed)
        self.requests: deque[dict[str, Any]] = deque(maxlen=RECENT_REQUESTS)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/chat/completions", self.openai)
        app.router.add_post("/v1/messages", self.anthropic)
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

    # ---- the two APIs ----------------------------------------------------------------
    async def openai(self, request: web.Request) -> web.StreamResponse:
        return await self.answer(request, "openai")

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self.answer(request, "anthropic")

    async def answer(
        self, request: web.Request, dialect: Literal["openai", "anthropic"]
    ) -> web.StreamResponse:
        raw = await request.read()
        body = orjson.loads(raw)
        record: dict[str, Any] = {
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "query": request.query_string,
            "body": body,
            "received_at": time.time(),
            "outcome": "pending",
        }
        self.requests.append(record)
        model = str(body.get("model", ""))
        how = self.profile.behaviour(model)
        delay = how.latency_ms + self.random.uniform(-1, 1) * how.latency_jitter_ms
        try:
            if delay > 0:
                await asyncio.sleep(delay / 1000)
            if self.random.random() < how.error_rate:
                record["outcome"] = f"error_{how.error_kind}"
                return self.error(request, dialect, how.error_kind)
            plan = self.plan(body, how)
            if body.get("stream") is True:
                record["outcome"] = "streaming"
                response = await self.stream(request, dialect, body, how, plan)
            else:
                payload = (openai_json if dialect == "openai" else anthropic_json)(body, plan)
                response = web.Response(body=orjson.dumps(payload), content_type="application/json")
            record["outcome"] = "completed"
            return response
        except (asyncio.CancelledError, ConnectionResetError):
            if record["outcome"] in ("pending", "streaming"):
                record["outcome"] = "client_closed"
            raise

    def plan(self, body: dict[str, Any], how: Behaviour) -> dict[str, Any]:
        """Decide what this answer is: text, refusal or tool call, and its token counts."""
        tools = body.get("tools") or []
        plan: dict[str, Any] = {"text": how.text, "refusal": False, "tool": None}
        if self.random.random() < how.refusal_rate:
            plan["refusal"] = True
            plan["text"] = "I can't help with that request."
        elif tools and self.random.random() < how.tool_call_rate:
            tool = tools[0].get("function", tools[0])
            schema = tool.get("parameters") or tool.get("input_schema") or {}
            name = tool.get("name", "tool")
            args: Any = example_arguments(schema)
            text = orjson.dumps(args).decode()
            if self.random.random() < how.invalid_tool_call_rate:
                if how.invalid_tool_call_kind == "schema":
                    args = broken_arguments(schema)
                    text = orjson.dumps(args).decode()
                elif how.invalid_tool_call_kind == "unknown_tool":
                    name = "no_such_tool"
                else:  # not_json: a JSON object broken off half way
                    text = text[: max(1, len(text) // 2)]
            plan["tool"] = {"name": name, "arguments": args, "text": text}
        words = len(plan["text"].split())
        plan["input_tokens"] = (
            how.input_tokens
            if how.input_tokens is not None
            else max(1, len(orjson.dumps(body.get("messages", []))) // 4)
        )
        plan["output_tokens"] = how.output_tokens if how.output_tokens is not None else words
        plan["cache_read"] = how.cache_read_tokens
        plan["cache_write"] = how.cache_write_tokens
        return plan

    def error(self, request: web.Request, dialect: str, kind: ErrorKind) -> web.StreamResponse:
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
        headers = {"retry-after": "1"} if status == 429 else {}
        if dialect == "anthropic":
            kinds = {
                400: "invalid_request_error",
                401: "authentication_error",
                500: "api_error",
                529: "overloaded_error",
                429: "rate_limit_error",
            }
            messages = {
                400: "messages: the fake provider refused this request",
                401: "invalid x-api-key",
                500: "Internal server error",
                529: "Overloaded",
                429: "Number of requests has exceeded your rate limit",
            }
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": kinds[status], "message": messages[status]},
            }
        else:
            kinds = {
                400: "invalid_request_error",
                401: "invalid_request_error",
                500: "server_error",
                529: "server_error",
                429: "rate_limit_exceeded",
            }
            # Like OpenAI's, a 401 names the key it refused by its last four characters only.
            key = request.headers.get("Authorization", "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: sk-...{key[-4:]}" if status == 401 else ""
            payload = {
                "error": {
                    "message": message or f"fake provider error {status}",
                    "type": kinds[status],
                    "param": None,
                    "code": None,
                }
            }
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=headers,
        )

    async def stream(
        self,
        request: web.Request,
        dialect: str,
        body: dict[str, Any],
        how: Behaviour,
        plan: dict[str, Any],
    ) -> web.StreamResponse:
        out = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await out.prepare(request)
        events = (openai_events if dialect == "openai" else anthropic_events)(body, plan, how)
        if how.stream_truncate_after is not None:
            events = events[: how.stream_truncate_after]
        for index, event in enumerate(events):
            if index and how.stream_interval_ms:
                await asyncio.sleep(how.stream_interval_ms / 1000)
            await out.write(event)
        await out.write_eof()
        return out


# ---- OpenAI shapes ---------------------------------------------------------------------
def _openai_usage(plan: dict[str, Any]) -> dict[str, Any]:
    prompt = plan["input_tokens"] + plan["cache_read"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": plan["output_tokens"],
        "total_tokens": prompt + plan["output_tokens"],
        "prompt_tokens_details": {"cached_tokens": plan["cache_read"], "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_tool_call(plan: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": plan["tool"]["name"], "arguments": plan["tool"]["text"]},
    }


def _openai_finish(plan: dict[str, Any]) -> str:
    if plan["refusal"]:
        return "stop"
    return "tool_calls" if plan["tool"] else "stop"


def openai_json(body: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "annotations": [],
    }
    if plan["refusal"]:
        message["refusal"] = plan["text"]
    elif plan["tool"]:
        message["tool_calls"] = [_openai_tool_call(plan)]
    else:
        message["content"] = plan["text"]
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _openai_finish(plan),
            }
        ],
        "usage": _openai_usage(plan),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def _split(text: str, parts: int) -> list[str]:
    words = text.split(" ")
    size = max(1, -(-len(words) // parts))
    pieces = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [p if i == 0 else " " + p for i, p in enumerate(pieces)]


def openai_events(body: dict[str, Any], plan: dict[str, Any], how: Behaviour) -> list[bytes]:
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        data = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(data) + b"\n\n"

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    if plan["tool"]:
        call = _openai_tool_call(plan)
        args = call["function"]["arguments"]
        events.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        step = max(1, -(-len(args) // how.stream_chunks))
        for i in range(0, len(args), step):
            events.append(
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[i : i + step]}}]})
            )
    else:
        field = "refusal" if plan["refusal"] else "content"
        for piece in _split(plan["text"], how.stream_chunks):
            events.append(chunk({field: piece}))
    events.append(chunk({}, _openai_finish(plan)))
    options = body.get("stream_options") or {}
    if options.get("include_usage"):
        data: dict[str, Any] = {**base, "choices": [], "usage": _openai_usage(plan)}
        events.append(b"data: " + orjson.dumps(data) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


# ---- Anthropic shapes ------------------------------------------------------------------
def _anthropic_stop(plan: dict[str, Any]) -> str:
    if plan["refusal"]:
        return "refusal"
    return "tool_use" if plan["tool"] else "end_turn"


def _anthropic_usage(plan: dict[str, Any], output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan["input_tokens"],
        "cache_creation_input_tokens": plan["cache_write"],
        "cache_read_input_tokens": plan["cache_read"],
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def anthropic_json(body: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if plan["tool"]:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_" + uuid.uuid4().hex[:24],
                "name": plan["tool"]["name"],
                "input": plan["tool"]["arguments"] or {},
            }
        )
    else:
        content.append({"type": "text", "text": plan["text"]})
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": _anthropic_stop(plan),
        "stop_sequence": None,
        "usage": _anthropic_usage(plan, plan["output_tokens"]),
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def anthropic_events(body: dict[str, Any], plan: dict[str, Any], how: Behaviour) -> list[bytes]:
    message: dict[str, Any] = {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(plan, 1),
    }
    events = [_sse("message_start", {"type": "message_start", "message": message})]
    if plan["tool"]:
        block = {
            "type": "tool_use",
            "id": "toolu_" + uuid.uuid4().hex[:24],
            "name": plan["tool"]["name"],
            "input": {},
        }
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
        )
        args = plan["tool"]["text"]
        step = max(1, -(-len(args) // how.stream_chunks))
        for i in range(0, len(args), step):
            events.append(
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": args[i : i + step]},
                    },
                )
            )
    else:
        events.append(
            _sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            )
        )
        events.append(_sse("ping", {"type": "ping"}))
        for piece in _split(plan["text"], how.stream_chunks):
            events.append(
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": piece},
                    },
                )
            )
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": _anthropic_stop(plan), "stop_sequence": None},
                "usage": {"output_tokens": plan["output_tokens"]},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events
