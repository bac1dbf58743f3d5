"""OpenAI Chat Completions (`POST /v1/chat/completions`), JSON and SSE.

Honours `tools` with `tool_choice` (auto, none, required, a named function, allowed_tools)
and `parallel_tool_calls`, `response_format` (json_schema, json_object), `n`, `logprobs` with
`top_logprobs`, `reasoning_effort` (reasoning tokens in the usage) and
`stream_options.include_usage`. A named tool choice ends with `finish_reason: "stop"`, as
OpenAI's does; a call the model chose ends with `"tool_calls"`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from router.dev.fake_provider import openai_errors
from router.dev.fake_provider.plan import (
    Answer,
    Ask,
    Invalid,
    Plan,
    Tool,
    ToolMode,
    as_list,
    logprobs,
    pieces,
)
from router.dev.fake_provider.profile import Behaviour

MAX_N = 128
MAX_TOP_LOGPROBS = 20


class Chat:
    not_json = openai_errors.NOT_JSON

    def refused(self, problem: Invalid) -> dict[str, Any]:
        return openai_errors.refused(problem)

    def injected(self, status: int, request: web.Request) -> dict[str, Any]:
        return openai_errors.injected(status, request)

    # ---- the request -----------------------------------------------------------------------
    def read(self, body: dict[str, Any]) -> Ask:
        tools = read_tools(body.get("tools"))
        mode, named, offered = tool_choice(body.get("tool_choice"), tools)
        messages = body.get("messages")
        ask = Ask(
            tools=offered,
            mode=mode,
            named=named,
            parallel=body.get("parallel_tool_calls") is not False,
            choices=choices(body.get("n")),
            input_size=len(orjson.dumps(messages if messages is not None else [])),
            after_tool_results=_last_role(messages) == "tool",
        )
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise Invalid(
                    "Missing required parameter: 'response_format.json_schema.name'.",
                    param="response_format.json_schema.name",
                    code="missing_required_parameter",
                )
            schema = spec.get("schema")
            ask.json_schema = schema if isinstance(schema, dict) else {"type": "object"}
        elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
            if b"json" not in orjson.dumps(messages).lower():
                raise Invalid(
                    "'messages' must contain the word 'json' in some form, to use "
                    "'response_format' of type 'json_object'.",
                    param="messages",
                )
            ask.json_object = True
        if body.get("logprobs") is True:
            top = body.get("top_logprobs")
            ask.logprobs = top if isinstance(top, int) and 0 <= top <= MAX_TOP_LOGPROBS else 0
        effort = body.get("reasoning_effort")
        ask.thinking = isinstance(effort, str) and effort != "none"
        return ask

    # ---- the answer ------------------------------------------------------------------------
    def answer(self, body: dict[str, Any], ask: Ask, plan: Plan) -> dict[str, Any]:
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [self.choice(i, a, ask) for i, a in enumerate(plan.answers)],
            "usage": usage(plan),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def choice(self, index: int, answer: Answer, ask: Ask) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "annotations": [],
        }
        if answer.refusal:
            message["refusal"] = answer.text
        elif answer.calls:
            message["tool_calls"] = [
                {
                    "id": "call_" + c.key,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.text},
                }
                for c in answer.calls
            ]
        else:
            message["content"] = answer.text
        return {
            "index": index,
            "message": message,
            "logprobs": choice_logprobs(answer.text, answer, ask),
            "finish_reason": finish(answer, ask),
        }

    def events(self, body: dict[str, Any], ask: Ask, plan: Plan, how: Behaviour) -> list[bytes]:
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
        per_choice = [self.deltas(a, ask, how) for a in plan.answers]
        events = []
        # The choices' chunks interleave, as the real API's do; each names its choice.
        for step in range(max(len(d) for d in per_choice)):
            for index, deltas in enumerate(per_choice):
                if step < len(deltas):
                    delta, logs, reason = deltas[step]
                    choice = {"index": index, "delta": delta, "logprobs": logs}
                    data = {**base, "choices": [{**choice, "finish_reason": reason}]}
                    events.append(b"data: " + orjson.dumps(data) + b"\n\n")
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            data = {**base, "choices": [], "usage": usage(plan)}
            events.append(b"data: " + orjson.dumps(data) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return events

    def deltas(
        self, answer: Answer, ask: Ask, how: Behaviour
    ) -> list[tuple[dict[str, Any], Any, str | None]]:
        """One choice's chunks: (delta, logprobs, finish_reason)."""
        out: list[tuple[dict[str, Any], Any, str | None]] = [
            ({"role": "assistant", "content": "", "refusal": None}, None, None)
        ]
        for index, call in enumerate(answer.calls):
            head = {
                "index": index,
                "id": "call_" + call.key,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out.append(({"tool_calls": [head]}, None, None))
            step = max(1, -(-len(call.text) // how.stream_chunks))
            for i in range(0, len(call.text), step):
                part = {"index": index, "function": {"arguments": call.text[i : i + step]}}
                out.append(({"tool_calls": [part]}, None, None))
        if not answer.calls:
            field = "refusal" if answer.refusal else "content"
            for piece in pieces(answer.text, how.stream_chunks, answer.json):
                out.append(({field: piece}, choice_logprobs(piece, answer, ask), None))
        out.append(({}, None, finish(answer, ask)))
        return out


def read_tools(raw: Any) -> list[Tool]:
    """The function tools offered, `{"type": "function", "function": {...}}` (or flat)."""
    tools = []
    for item in raw if isinstance(raw, list) else []:
        spec = item.get("function", item) if isinstance(item, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("name"), str):
            schema = spec.get("parameters")
            tools.append(Tool(spec["name"], schema if isinstance(schema, dict) else {}))
    return tools


def tool_choice(choice: Any, tools: list[Tool]) -> tuple[ToolMode, str | None, list[Tool]]:
    """(mode, the named tool, the tools it may call) for Chat Completions' `tool_choice`."""
    if choice is None:
        return "auto", None, tools
    if not tools:
        raise Invalid(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice in ("auto", "none", "required"):
        return choice, None, tools
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function":
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise Invalid(
                "Missing required parameter: 'tool_choice.function.name'.",
                param="tool_choice.function.name",
                code="missing_required_parameter",
            )
        if name not in {t.name for t in tools}:
            raise Invalid(
                f"Invalid value for 'tool_choice': function '{name}' not found in 'tools'.",
                param="tool_choice",
            )
        return "named", name, tools
    if kind == "allowed_tools" and isinstance(choice.get("allowed_tools"), dict):
        allowed = choice["allowed_tools"]
        named = {
            str((t.get("function") or {}).get("name"))
            for t in as_list(allowed.get("tools"))
            if isinstance(t, dict) and isinstance(t.get("function"), dict)
        }
        subset = [t for t in tools if t.name in named]
        if allowed.get("mode") in ("auto", "required") and subset:
            return allowed["mode"], None, subset
    raise Invalid(
        f"Invalid value: {orjson.dumps(choice).decode()}. Supported values are: 'none', "
        "'auto', 'required', a named function or allowed_tools.",
        param="tool_choice",
        code="invalid_value",
    )


def _last_role(messages: Any) -> Any:
    last = messages[-1] if isinstance(messages, list) and messages else None
    return last.get("role") if isinstance(last, dict) else None


def choices(n: Any) -> int:
    if n is None:
        return 1
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise Invalid(f"Invalid value for 'n': expected an integer from 1 to {MAX_N}.", param="n")
    if n > MAX_N:
        raise Invalid(
            f"Invalid 'n': integer above maximum value. Expected a value <= {MAX_N}, but got "
            f"{n} instead.",
            param="n",
            code="integer_above_max_value",
        )
    return n


def finish(answer: Answer, ask: Ask) -> str:
    if answer.calls:
        return "stop" if ask.mode == "named" else "tool_calls"
    return "stop"


def choice_logprobs(text: str, answer: Answer, ask: Ask) -> dict[str, Any] | None:
    if ask.logprobs is None:
        return None
    tokens = logprobs(text, ask.logprobs) if text else None
    if answer.refusal:
        return {"content": None, "refusal": tokens}
    return {"content": tokens, "refusal": None}


def usage(plan: Plan) -> dict[str, Any]:
    prompt = plan.input_tokens + plan.cache_read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": plan.output_tokens,
        "total_tokens": prompt + plan.output_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
