"""OpenAI Responses: `POST /v1/responses` (what the OpenAI Agents SDK and pydantic-ai's
`OpenAIResponsesModel` call by default). A route on an OpenAI provider serves it beside
Chat Completions, from the same bundles.

Injection:
- `model` becomes the pinned snapshot; the bundle prompt becomes `instructions`, under the
  route's `client_system` policy (the client's own `instructions`, and system or developer
  messages in `input`, are dropped, appended after the bundle's, or refused);
- `tools` are the bundle's in Responses format (`{"type": "function", "name", ...}`), then
  the client's under the `client_tools` policy;
- params: the bundle's params are written for Chat Completions, so they are translated:
  `max_completion_tokens` / `max_tokens` become the default `max_output_tokens`;
  `reasoning_effort` becomes the pinned `reasoning.effort`; `temperature` and `top_p` are
  pinned as they are; a `reasoning` or `text` object in the bundle is pinned whole. Params the
  Responses API does not take (`seed`, `stop`, the penalties, `logit_bias`) are not sent.

Reading: usage from `response.completed` (or the JSON answer): `input_tokens` with
`input_tokens_details.cached_tokens` split out, `output_tokens`; tool calls from the
`function_call` output items; a refusal from a `refusal` content part. The response id is
read too, so that a later turn chained with `previous_response_id` goes to the same version.
"""

from __future__ import annotations

from typing import Any, Literal

from router.bundles import Bundle
from router.errors import BadRequest
from router.proxy.dialects.base import (
    Injection,
    Policy,
    Reading,
    Rewritten,
    ToolCall,
    first_user_message,
    objs,
    parse_object,
    split_params,
    string,
)
from router.proxy.dialects.openai import OPENAI, read_usage
from router.proxy.dialects.tools import ToolSpelling, merge_tools
from router.proxy.sse import event_fields
from router.proxy.telemetry import Usage

SYSTEM_ROLES = frozenset({"system", "developer"})
TOKEN_LIMITS = ("max_completion_tokens", "max_tokens")
NOT_TAKEN = frozenset({"seed", "stop", "frequency_penalty", "presence_penalty", "logit_bias", "n"})


def _tool_name(tool: Any) -> str | None:
    """A function tool's name, or a built-in tool's type (`web_search`, ...)."""
    if not isinstance(tool, dict):
        return None
    name = tool.get("name") if tool.get("type") == "function" else tool.get("type")
    return name if isinstance(name, str) else None


def _forced(choice: Any) -> str | None:
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = choice.get("name")
        return name if isinstance(name, str) else None
    return None


TOOLS = ToolSpelling(
    name_of=_tool_name,
    forced=_forced,
    needs_a_tool=lambda choice: choice == "required" or _forced(choice) is not None,
    goes_with_tools=("parallel_tool_calls",),
)


def translate_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A bundle's Chat Completions params as Responses params: (pinned, defaults)."""
    pinned, defaults = split_params(params)
    out_pinned = {k: v for k, v in pinned.items() if k in ("temperature", "top_p")}
    if "reasoning_effort" in pinned:
        out_pinned["reasoning"] = {"effort": pinned["reasoning_effort"]}
    for key in ("reasoning", "text"):
        if isinstance(defaults.get(key), dict):
            out_pinned[key] = defaults[key]
    out_defaults = {
        k: v
        for k, v in defaults.items()
        if k not in NOT_TAKEN and k not in TOKEN_LIMITS and k not in ("reasoning", "text")
    }
    for key in TOKEN_LIMITS:
        if key in defaults:
            out_defaults["max_output_tokens"] = defaults[key]
            break
    return out_pinned, out_defaults


class ResponsesDialect:
    name: Literal["responses"] = "responses"
    family = "openai"  # served by a route on an OpenAI provider
    path = "/v1/responses"
    upstream_path = "/responses"
    forward_headers = OPENAI.forward_headers

    def prepare(self, bundle: Bundle) -> Injection:
        pinned, defaults = translate_params(dict(bundle.params))
        tools = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.input_schema),
                # As Chat Completions reads them: the Responses API makes a function strict
                # when `strict` is missing, which would require every optional argument.
                "strict": False,
            }
            for t in bundle.tools
        ]
        return Injection(
            model=bundle.model, system=bundle.prompt, tools=tools, pinned=pinned, defaults=defaults
        )

    def rewrite(self, body: dict[str, Any], injection: Injection, policy: Policy) -> Rewritten:
        items = body.get("input")
        if not isinstance(items, str | list):
            raise BadRequest(
                "'input' must be a string or a list of input items", code="invalid_input"
            )
        own = body.get("instructions")
        in_input = isinstance(items, list) and any(_is_system(item) for item in items)
        client_system = bool(own) or in_input
        if client_system and policy.client_system == "reject":
            raise BadRequest(
                "this route injects its own instructions and refuses the client's; remove "
                "'instructions' and any system or developer message from 'input'",
                code="client_system_rejected",
            )
        if client_system and policy.client_system == "replace" and isinstance(items, list):
            body["input"] = [item for item in items if not _is_system(item)]
        appended = own if policy.client_system == "append" and isinstance(own, str) else None
        body["instructions"] = f"{injection.system}\n\n{appended}" if appended else injection.system
        body["model"] = injection.model
        client_tools = merge_tools(body, injection.tools, policy.client_tools, TOOLS, policy.route)
        for key, value in injection.pinned.items():
            sent = body.get(key)
            # `reasoning` and `text` are objects: the bundle's keys win, the client's others
            # stay (text.format carries structured output, reasoning.summary a summary).
            body[key] = (
                {**sent, **value} if isinstance(sent, dict) and isinstance(value, dict) else value
            )
        for key, value in injection.defaults.items():
            body.setdefault(key, value)
        return Rewritten(client_system, client_tools)

    def opening(self, body: dict[str, Any]) -> str | None:
        items = body.get("input")
        return items if isinstance(items, str) else first_user_message(items)

    def read_json(self, data: bytes, collect_text: bool) -> Reading:
        reading = Reading(finished=True)
        body = parse_object(data)
        if body is not None:
            read_response(body, reading, collect_text)
        return reading

    def stream_reader(self, collect_text: bool) -> ResponsesStreamReader:
        return ResponsesStreamReader(collect_text)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return OPENAI.auth_headers(api_key)

    def default_headers(self) -> dict[str, str]:
        return {}


def _is_system(item: Any) -> bool:
    return isinstance(item, dict) and item.get("role") in SYSTEM_ROLES


def read_usage_of(usage: Any) -> Usage | None:
    """Responses counts cached input inside input_tokens, as Chat Completions does."""
    if not isinstance(usage, dict):
        return None
    return read_usage(
        {
            "prompt_tokens": usage.get("input_tokens"),
            "completion_tokens": usage.get("output_tokens"),
            "prompt_tokens_details": usage.get("input_tokens_details"),
        }
    )


def read_response(response: dict[str, Any], reading: Reading, collect_text: bool) -> None:
    """A whole `response` object: its id, usage, tool calls, refusal and text."""
    if isinstance(response.get("id"), str):
        reading.response_id = response["id"]
    reading.usage = read_usage_of(response.get("usage"))
    for item in objs(response.get("output")):
        if item.get("type") == "function_call":
            name, arguments = item.get("name"), item.get("arguments")
            reading.tool_calls.append(ToolCall(string(name), string(arguments), raw=True))
        elif item.get("type") == "message":
            for part in objs(item.get("content")):
                if part.get("type") == "refusal":
                    reading.refusal = True
                elif part.get("type") == "output_text" and collect_text:
                    reading.text.append(string(part.get("text")))


class ResponsesStreamReader:
    """Reads Responses stream events. The deltas only mark the first token; the final
    `response.completed` (or `response.incomplete`) carries the whole response, which is
    read once for usage, tool calls and refusals. A stream that ends before it has
    incomplete usage."""

    def __init__(self, collect_text: bool) -> None:
        self.reading = Reading()
        self.collect_text = collect_text

    def feed(self, event: bytes) -> None:
        name, data = event_fields(event)
        if data is None:
            return
        reading = self.reading
        if name in (b"response.output_text.delta", b"response.function_call_arguments.delta"):
            reading.started = True
            return
        if name == b"response.refusal.delta":
            reading.started = reading.refusal = True
            return
        if name not in (
            b"response.created",
            b"response.completed",
            b"response.incomplete",
            b"response.failed",
            b"error",
        ):
            return
        payload = parse_object(data)
        if payload is None:
            return
        response = payload.get("response")
        if name == b"response.created" and isinstance(response, dict):
            if isinstance(response.get("id"), str):
                reading.response_id = response["id"]
        elif name in (b"response.completed", b"response.incomplete") and isinstance(response, dict):
            read_response(response, reading, self.collect_text)
            reading.finished = True
        else:  # response.failed, error: the provider failed and ended the stream
            reading.error = reading.finished = True
            if isinstance(response, dict):
                reading.usage = read_usage_of(response.get("usage")) or reading.usage

    def finish(self) -> Reading:
        return self.reading


RESPONSES = ResponsesDialect()
