"""OpenAI Chat Completions: `POST /v1/chat/completions`.

Injection: `model` becomes the pinned snapshot; the bundle prompt is the leading `system`
message; `tools` are the bundle's tools in function format (a bundle without tools sends
none, and `tool_choice` goes with them); params per `PINNED_PARAMS`; and a streamed request
gets `stream_options.include_usage: true` so the stream reports its token usage.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from router.bundles import Bundle
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
    has,
    obj,
    objs,
    parse_object,
    split_params,
    string,
)
from router.proxy.dialects.tools import ToolSpelling, merge_tools
from router.proxy.sse import event_fields
from router.proxy.telemetry import Usage

SYSTEM_ROLES = frozenset({"system", "developer"})
TOKEN_LIMITS = frozenset({"max_tokens", "max_completion_tokens"})


def _tool_name(tool: Any) -> str | None:
    """`{"type": "function", "function": {"name": ...}}`, or a custom tool's name."""
    if not isinstance(tool, dict):
        return None
    inner = tool.get(tool.get("type") or "function")
    name = inner.get("name") if isinstance(inner, dict) else None
    return name if isinstance(name, str) else None


TOOLS = ToolSpelling(
    name_of=_tool_name,
    forced=_tool_name,  # a named tool_choice is spelled like a tool; "auto" etc. are strings
    needs_a_tool=lambda choice: choice == "required" or _tool_name(choice) is not None,
    goes_with_tools=("parallel_tool_calls",),
)


class OpenAIDialect:
    name: Literal["openai"] = "openai"
    family = "openai"
    path = "/v1/chat/completions"
    upstream_path = "/chat/completions"
    forward_headers = frozenset({"openai-organization", "openai-project", "openai-beta"})

    def prepare(self, bundle: Bundle) -> Injection:
        pinned, defaults = split_params(bundle.params)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.input_schema),
                },
            }
            for t in bundle.tools
        ]
        return Injection(
            model=bundle.model,
            system={"role": "system", "content": bundle.prompt},
            tools=tools,
            pinned=pinned,
            defaults=defaults,
        )

    def rewrite(self, body: dict[str, Any], injection: Injection, policy: Policy) -> Rewritten:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest(
                "'messages' must be a list of chat messages",
                code="invalid_messages",
            )
        client_system = any(isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in messages)
        if client_system:
            if policy.client_system == "reject":
                raise BadRequest(
                    "this route injects its own system prompt and refuses one from the "
                    "client; remove the system/developer message",
                    code="client_system_rejected",
                )
            if policy.client_system == "replace":
                messages = [
                    m
                    for m in messages
                    if not (isinstance(m, dict) and m.get("role") in SYSTEM_ROLES)
                ]
        body["model"] = injection.model
        body["messages"] = [injection.system, *messages]
        client_tools = merge_tools(body, injection.tools, policy.client_tools, TOOLS, policy.route)
        if "max_tokens" in body or "max_completion_tokens" in body:
            # One param under two names: the client's limit replaces the bundle's default,
            # whichever name either uses, and only one goes upstream.
            defaults = {k: v for k, v in injection.defaults.items() if k not in TOKEN_LIMITS}
            apply_params(body, replace(injection, defaults=defaults))
        else:
            apply_params(body, injection)
        relay_event = None
        if body.get("stream"):
            # Cost needs the usage, so the router always asks for it; a client that did not
            # ask gets the stream it asked for, without the usage chunk.
            options = body.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            body["stream_options"] = (
                {**options, "include_usage": True}
                if isinstance(options, dict)
                else {"include_usage": True}
            )
            relay_event = None if asked else hide_usage
        return Rewritten(client_system, client_tools, relay_event)

    def opening(self, body: dict[str, Any]) -> str | None:
        return first_user_message(body.get("messages"))

    def read_json(self, data: bytes, collect_text: bool) -> Reading:
        reading = Reading(finished=True)
        body = parse_object(data)
        if body is None:
            return reading
        reading.usage = read_usage(body.get("usage"))
        for choice in objs(body.get("choices")):
            message = obj(choice.get("message"))
            if message.get("refusal") or choice.get("finish_reason") == "content_filter":
                reading.refusal = True
            for call in objs(message.get("tool_calls")):
                function = obj(call.get("function"))
                reading.tool_calls.append(
                    ToolCall(
                        string(function.get("name")), string(function.get("arguments")), raw=True
                    )
                )
            if collect_text and isinstance(message.get("content"), str):
                reading.text.append(message["content"])
        return reading

    def stream_reader(self, collect_text: bool) -> OpenAIStreamReader:
        return OpenAIStreamReader(collect_text)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def default_headers(self) -> dict[str, str]:
        return {}


def hide_usage(event: bytes) -> bytes:
    """An event as the client would have had it without `include_usage`: the usage-only
    last chunk (`"choices": []`, which breaks the usual `chunk.choices[0]` loop) is dropped,
    and the `"usage": null` the other chunks carry is taken out."""
    if b'"usage"' not in event:
        return event
    if has(event, b"choices", b"[]"):
        return b""
    return event.replace(b',"usage":null', b"").replace(b', "usage": null', b"")


def read_usage(usage: Any) -> Usage | None:
    """OpenAI counts cached prompt tokens inside prompt_tokens; split them out."""
    if not isinstance(usage, dict):
        return None
    prompt = count(usage.get("prompt_tokens"))
    cached = min(count(obj(usage.get("prompt_tokens_details")).get("cached_tokens")), prompt)
    return Usage(
        input=prompt - cached, output=count(usage.get("completion_tokens")), cache_read=cached
    )


class OpenAIStreamReader:
    """Reads `chat.completion.chunk` events. Once the first token has been seen, a chunk is
    parsed only if it can carry a tool call, a refusal, a finish reason or the usage."""

    def __init__(self, collect_text: bool) -> None:
        self.reading = Reading()
        self.collect_text = collect_text
        self._calls: dict[tuple[int, int], tuple[list[str], list[str]]] = {}

    def feed(self, event: bytes) -> None:
        _, data = event_fields(event)
        if data is None:
            return
        reading = self.reading
        if data == b"[DONE]":
            reading.finished = True
            return
        if (
            reading.started
            and not self.collect_text
            and b'"tool_calls"' not in data
            and not has(data, b"refusal", b'"')
            and not has(data, b"finish_reason", b'"')
            and not has(data, b"usage", b"{")
            and b'"error"' not in data
        ):
            return
        chunk = parse_object(data)
        if chunk is None:
            return
        if "error" in chunk:  # the provider failed and ended the stream
            reading.error = reading.finished = True
            return
        usage = read_usage(chunk.get("usage"))
        if usage is not None:
            reading.usage = usage
        for choice in objs(chunk.get("choices")):
            delta = obj(choice.get("delta"))
            content = string(delta.get("content"))
            calls = objs(delta.get("tool_calls"))
            if content or calls or delta.get("refusal"):
                reading.started = True
            if delta.get("refusal") or choice.get("finish_reason") == "content_filter":
                reading.refusal = True
            if content and self.collect_text:
                reading.text.append(content)
            for call in calls:
                key = (count(choice.get("index")), count(call.get("index")))
                name, arguments = self._calls.setdefault(key, ([], []))
                function = obj(call.get("function"))
                name.append(string(function.get("name")))
                arguments.append(string(function.get("arguments")))

    def finish(self) -> Reading:
        for name, arguments in self._calls.values():
            self.reading.tool_calls.append(ToolCall("".join(name), "".join(arguments), raw=True))
        self._calls.clear()
        return self.reading


OPENAI = OpenAIDialect()
