"""Anthropic Messages (`POST /v1/messages`), JSON and SSE.

Honours `tools` with `tool_choice` (auto, any, tool, none, `disable_parallel_tool_use`) and
`thinking` (enabled or adaptive): a `thinking` block with its `signature` comes before the
text or the tool_use blocks, and the thinking is billed as output. Refuses, with the real
API's messages, a tool_choice naming an unknown tool and thinking together with a
temperature other than 1, with top_k, with a forced tool or with too small a budget.
`message_delta.usage` carries the cumulative input, cache and output counts, as the current
API sends them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from typing import Any

import orjson
from aiohttp import web

from router.dev.fake_provider.plan import (
    Answer,
    Ask,
    Invalid,
    Plan,
    Tool,
    ToolMode,
    as_list,
    pieces,
)
from router.dev.fake_provider.profile import Behaviour

DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
CONSIDERATIONS = "important-considerations-when-using-extended-thinking"
CONSULT = f"Please consult our documentation at {DOCS}#{CONSIDERATIONS}"
MIN_BUDGET = 1024
KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    500: "api_error",
    529: "overloaded_error",
    429: "rate_limit_error",
}
MESSAGES = {
    400: "messages: the fake provider refused this request",
    401: "invalid x-api-key",
    500: "Internal server error",
    529: "Overloaded",
    429: "Number of requests has exceeded your rate limit",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": KINDS.get(status, "invalid_request_error"), "message": message},
        "request_id": "req_" + uuid.uuid4().hex[:24],
    }


class Messages:
    not_json = "There was an error parsing the body of your request: it is not valid JSON."

    def refused(self, problem: Invalid) -> dict[str, Any]:
        return error_body(problem.status, problem.message)

    def injected(self, status: int, request: web.Request) -> dict[str, Any]:
        return error_body(status, MESSAGES[status])

    # ---- the request -----------------------------------------------------------------------
    def read(self, body: dict[str, Any]) -> Ask:
        tools = [
            Tool(t["name"], t["input_schema"] if isinstance(t.get("input_schema"), dict) else {})
            for t in as_list(body.get("tools"))
            if isinstance(t, dict) and isinstance(t.get("name"), str)
        ]
        mode, named, parallel = tool_choice(body.get("tool_choice"), tools)
        messages = body.get("messages")
        ask = Ask(
            tools=tools,
            mode=mode,
            named=named,
            parallel=parallel,
            input_size=len(orjson.dumps(messages if messages is not None else [])),
            after_tool_results=ends_with_tool_results(messages),
        )
        thinking = body.get("thinking")
        kind = thinking.get("type") if isinstance(thinking, dict) else None
        if kind in ("enabled", "adaptive"):
            assert isinstance(thinking, dict)
            check_thinking(body, thinking, forced=mode in ("required", "named"))
            ask.thinking = True
        return ask

    # ---- the answer ------------------------------------------------------------------------
    def answer(self, body: dict[str, Any], ask: Ask, plan: Plan) -> dict[str, Any]:
        answer = plan.first
        content: list[dict[str, Any]] = []
        if answer.thinking is not None:
            content.append(
                {"type": "thinking", "thinking": answer.thinking, "signature": signature(answer)}
            )
        for call in answer.calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_" + call.key,
                    "name": call.name,
                    "input": call.arguments or {},  # JSON input is always an object
                }
            )
        if not answer.calls:
            content.append({"type": "text", "text": answer.text})
        return {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": content,
            "stop_reason": stop_reason(answer),
            "stop_sequence": None,
            "usage": usage(plan, plan.output_tokens),
        }

    def events(self, body: dict[str, Any], ask: Ask, plan: Plan, how: Behaviour) -> list[bytes]:
        answer = plan.first
        message: dict[str, Any] = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage(plan, 1),
        }
        events = [sse("message_start", {"type": "message_start", "message": message})]
        blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []  # (start, deltas)
        if answer.thinking is not None:
            deltas = [
                {"type": "thinking_delta", "thinking": piece}
                for piece in pieces(answer.thinking, how.stream_chunks)
            ]
            deltas.append({"type": "signature_delta", "signature": signature(answer)})
            blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, deltas))
        for call in answer.calls:
            step = max(1, -(-len(call.text) // how.stream_chunks))
            start = {"type": "tool_use", "id": "toolu_" + call.key, "name": call.name, "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": call.text[i : i + step]}
                for i in range(0, len(call.text), step)
            ]
            blocks.append((start, deltas))
        if not answer.calls:
            deltas = [
                {"type": "text_delta", "text": piece}
                for piece in pieces(answer.text, how.stream_chunks)
            ]
            blocks.append(({"type": "text", "text": ""}, deltas))
        for index, (start, deltas) in enumerate(blocks):
            events.append(
                sse(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            if index == 0:
                events.append(sse("ping", {"type": "ping"}))
            for delta in deltas:
                events.append(
                    sse(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        final = usage(plan, plan.output_tokens)
        events.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(answer), "stop_sequence": None},
                    # Cumulative counts, input side included, as the current API sends them.
                    "usage": {
                        k: final[k]
                        for k in (
                            "input_tokens",
                            "cache_creation_input_tokens",
                            "cache_read_input_tokens",
                            "output_tokens",
                        )
                    },
                },
            )
        )
        events.append(sse("message_stop", {"type": "message_stop"}))
        return events


def ends_with_tool_results(messages: Any) -> bool:
    """The last message is the user's turn that carries `tool_result` blocks."""
    last = messages[-1] if isinstance(messages, list) and messages else None
    content = last.get("content") if isinstance(last, dict) else None
    return any(isinstance(b, dict) and b.get("type") == "tool_result" for b in as_list(content))


def tool_choice(choice: Any, tools: list[Tool]) -> tuple[ToolMode, str | None, bool]:
    """(mode, the named tool, parallel calls allowed) for Anthropic's `tool_choice`."""
    if choice is None:
        return "auto", None, True
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind not in ("auto", "any", "tool", "none"):
        raise Invalid(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    assert isinstance(choice, dict)
    parallel = choice.get("disable_parallel_tool_use") is not True
    if kind != "none" and not tools:
        raise Invalid("tool_choice may only be specified while providing tools.")
    if kind == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            raise Invalid("tool_choice.tool.name: Field required")
        if name not in {t.name for t in tools}:
            raise Invalid(f"Tool '{name}' not found in provided tools")
        return "named", name, parallel
    modes: dict[str, ToolMode] = {"auto": "auto", "any": "required", "none": "none"}
    return modes[kind], None, parallel


def check_thinking(body: dict[str, Any], thinking: dict[str, Any], forced: bool) -> None:
    """The real API's refusals of settings that thinking cannot work with."""
    adaptive = thinking.get("type") == "adaptive"
    if not adaptive:
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool):
            raise Invalid("thinking.enabled.budget_tokens: Field required")
        if budget < MIN_BUDGET:
            raise Invalid(
                "thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_BUDGET}"
            )
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, int) and max_tokens <= budget:
            raise Invalid(
                "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                f"documentation at {DOCS}#max-tokens-and-context-window-size"
            )
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        mode = (
            "when thinking is enabled or in adaptive mode"
            if adaptive
            else ("when thinking is enabled")
        )
        raise Invalid(f"`temperature` may only be set to 1 {mode}. {CONSULT}")
    if body.get("top_k") is not None:
        raise Invalid(f"`top_k` must be unset when thinking is enabled. {CONSULT}")
    if forced:
        raise Invalid("Thinking may not be enabled when tool_choice forces tool use.")


def signature(answer: Answer) -> str:
    """An opaque signature over the thinking, as long as a real one."""
    digest = hashlib.sha256((answer.thinking or "").encode()).digest()
    return base64.b64encode(digest + os.urandom(200)).decode()


def stop_reason(answer: Answer) -> str:
    if answer.refusal:
        return "refusal"
    return "tool_use" if answer.calls else "end_turn"


def usage(plan: Plan, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": plan.input_tokens,
        "cache_creation_input_tokens": plan.cache_write,
        "cache_read_input_tokens": plan.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": plan.cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
    }


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
