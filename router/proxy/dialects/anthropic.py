"""Anthropic Messages: `POST /v1/messages`.

Injection: `model` becomes the pinned snapshot; the bundle prompt is the top-level `system`
(a text block with `cache_control: ephemeral` when the bundle sets `prompt_caching: true`);
`tools` are the bundle's tools in Anthropic format (a bundle without tools sends none, and
`tool_choice` goes with them); params per `PINNED_PARAMS`.
"""

from __future__ import annotations

from typing import Any, Literal

from router.bundles import Bundle, thinking_clash
from router.errors import BadRequest
from router.proxy.dialects.base import (
    Injection,
    Policy,
    Reading,
    Rewritten,
    ToolCall,
    apply_params,
    count,
    first_user_message,
    obj,
    objs,
    parse_object,
    split_params,
    string,
)
from router.proxy.dialects.tools import ToolSpelling, merge_tools
from router.proxy.sse import event_fields
from router.proxy.telemetry import Usage

API_VERSION = "2023-06-01"


class AnthropicDialect:
    name: Literal["anthropic"] = "anthropic"
    family = "anthropic"
    path = "/v1/messages"
    upstream_path = "/v1/messages"
    forward_headers = frozenset({"anthropic-version", "anthropic-beta"})

    def prepare(self, bundle: Bundle) -> Injection:
        pinned, defaults = split_params(bundle.params)
        system: Any = bundle.prompt
        if bundle.prompt_caching:
            system = [
                {"type": "text", "text": bundle.prompt, "cache_control": {"type": "ephemeral"}}
            ]
        tools = [
            {"name": t.name, "description": t.description, "input_schema": dict(t.input_schema)}
            for t in bundle.tools
        ]
        return Injection(
            model=bundle.model, system=system, tools=tools, pinned=pinned, defaults=defaults
        )

    def rewrite(self, body: dict[str, Any], injection: Injection, policy: Policy) -> Rewritten:
        if not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' must be a list of messages", code="invalid_messages")
        client = body.get("system")
        client_system = bool(client)
        if client_system and policy.client_system == "reject":
            raise BadRequest(
                "this route injects its own system prompt and refuses one from the client; "
                "remove the 'system' field",
                code="client_system_rejected",
            )
        if client_system and policy.client_system == "append":
            body["system"] = [*_blocks(injection.system), *_blocks(client)]
        else:
            body["system"] = injection.system
        body["model"] = injection.model
        client_tools = merge_tools(body, injection.tools, policy.client_tools, TOOLS, policy.route)
        apply_params(body, injection)
        _check_thinking(body, injection, policy.route)
        return Rewritten(client_system, client_tools)

    def opening(self, body: dict[str, Any]) -> str | None:
        return first_user_message(body.get("messages"))

    def read_json(self, data: bytes, collect_text: bool) -> Reading:
        reading = Reading(finished=True)
        body = parse_object(data)
        if body is None:
            return reading
        usage = body.get("usage")
        if isinstance(usage, dict):
            reading.usage = update_usage(Usage(), usage)
        reading.refusal = body.get("stop_reason") == "refusal"
        for block in objs(body.get("content")):
            kind = block.get("type")
            if kind == "tool_use":
                reading.tool_calls.append(
                    ToolCall(string(block.get("name")), block.get("input", {}), raw=False)
                )
            elif kind == "text" and collect_text:
                reading.text.append(string(block.get("text")))
        return reading

    def stream_reader(self, collect_text: bool) -> AnthropicStreamReader:
        return AnthropicStreamReader(collect_text)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": API_VERSION}


def _named(value: Any, key: str = "name") -> str | None:
    name = value.get(key) if isinstance(value, dict) else None
    return name if isinstance(name, str) else None


TOOLS = ToolSpelling(
    name_of=_named,
    forced=lambda choice: _named(choice) if _named(choice, "type") == "tool" else None,
    needs_a_tool=lambda choice: _named(choice, "type") in ("any", "tool"),
    goes_with_tools=(),
)


def _check_thinking(body: dict[str, Any], injection: Injection, route: str) -> None:
    """When a request's `thinking` meets a temperature other than 1 or a top_k (one side
    pinned by the bundle, say), answer the 400 here rather than let the provider refuse."""
    clash = thinking_clash(body)
    if clash is None:
        return
    pinned = [k for k in ("thinking", "temperature", "top_k") if k in injection.pinned]
    source = (
        f"the bundle ({injection.model}) pins {', '.join(pinned)}"
        if pinned
        else "the request sets them"
    )
    raise BadRequest(
        f"extended thinking cannot run with {clash}, and {source}; route {route}: drop "
        "thinking from the request, or use a bundle version without a pinned temperature/top_k",
        code="incompatible_params",
    )


def _blocks(system: Any) -> list[Any]:
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    if isinstance(system, list):
        return system
    raise BadRequest("'system' must be a string or a list of text blocks", code="invalid_system")


def update_usage(usage: Usage, report: dict[str, Any]) -> Usage:
    """Apply a usage report. Anthropic's counts are cumulative: `message_start` has the input
    side, `message_delta` the final output (and, lately, the input side again)."""
    if "input_tokens" in report:
        usage.input = count(report["input_tokens"])
    if "output_tokens" in report:
        usage.output = count(report["output_tokens"])
    if "cache_read_input_tokens" in report:
        usage.cache_read = count(report["cache_read_input_tokens"])
    if "cache_creation_input_tokens" in report:
        usage.cache_write = count(report["cache_creation_input_tokens"])
    return usage


class AnthropicStreamReader:
    """Reads Messages stream events. Text deltas are skipped unparsed unless the route's
    refusal patterns need the text. Usage is complete once `message_delta` brings the final
    output tokens; a stream cut before that reports what `message_start` told (the input,
    which the provider bills anyway) as incomplete usage."""

    def __init__(self, collect_text: bool) -> None:
        self.reading = Reading()
        self.collect_text = collect_text
        self._usage = Usage()
        self._usage_started = False  # message_start told the input tokens
        self._usage_final = False
        self._tools: dict[int, tuple[str, list[str]]] = {}

    def feed(self, event: bytes) -> None:
        name, data = event_fields(event)
        if data is None or name == b"ping":
            return
        reading = self.reading
        if name == b"content_block_delta" and b'"text_delta"' in data:
            reading.started = True
            if not self.collect_text:
                return
        payload = parse_object(data)
        if payload is None:
            return
        kind = payload.get("type")
        if kind == "content_block_delta":
            reading.started = True
            delta = obj(payload.get("delta"))
            if delta.get("type") == "input_json_delta":
                tool = self._tools.get(count(payload.get("index")))
                if tool is not None:
                    tool[1].append(string(delta.get("partial_json")))
            elif delta.get("type") == "text_delta" and self.collect_text:
                reading.text.append(string(delta.get("text")))
        elif kind == "content_block_start":
            block = obj(payload.get("content_block"))
            if block.get("type") == "tool_use":
                reading.started = True
                self._tools[count(payload.get("index"))] = (string(block.get("name")), [])
        elif kind == "message_start":
            usage = obj(payload.get("message")).get("usage")
            if isinstance(usage, dict):
                update_usage(self._usage, usage)
                self._usage_started = True
        elif kind == "message_delta":
            if obj(payload.get("delta")).get("stop_reason") == "refusal":
                reading.refusal = True
            usage = payload.get("usage")
            if isinstance(usage, dict):
                update_usage(self._usage, usage)
                self._usage_started = self._usage_final = True
        elif kind == "message_stop":
            reading.finished = True
        elif kind == "error":  # the provider failed and ended the stream
            reading.error = reading.finished = True

    def finish(self) -> Reading:
        reading = self.reading
        for name, parts in self._tools.values():
            reading.tool_calls.append(ToolCall(name, "".join(parts) or "{}", raw=True))
        self._tools.clear()
        if self._usage_started:
            reading.usage = self._usage
            reading.usage_complete = self._usage_final
        return reading


ANTHROPIC = AnthropicDialect()
