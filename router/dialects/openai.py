"""OpenAI Chat Completions: `POST /v1/chat/completions`.

Injection: `model` becomes the pinned snapshot; the bundle prompt is the leading `system`
message; `tools` are the bundle's tools in function format (a bundle without tools sends
none, and `tool_choice` goes with them); params per `PINNED_PARAMS`; and a streamed request
gets `stream_options.include_usage: true` so the stream reports its token usage.
"""

from __future__ import annotations

from typing import Any, Literal

from router.bundles import Bundle
from router.dialects.base import ClientSystemPolicy, Injection, apply_params, split_params
from router.errors import BadRequest

SYSTEM_ROLES = frozenset({"system", "developer"})


class OpenAIDialect:
    name: Literal["openai"] = "openai"
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

    def rewrite(
        self, body: dict[str, Any], injection: Injection, policy: ClientSystemPolicy
    ) -> bool:
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest(
                "'messages' must be a list of chat messages",
                code="invalid_messages",
            )
        client_system = any(isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in messages)
        if client_system:
            if policy == "reject":
                raise BadRequest(
                    "this route injects its own system prompt and refuses one from the "
                    "client; remove the system/developer message",
                    code="client_system_rejected",
                )
            if policy == "replace":
                messages = [
                    m
                    for m in messages
                    if not (isinstance(m, dict) and m.get("role") in SYSTEM_ROLES)
                ]
        body["model"] = injection.model
        body["messages"] = [injection.system, *messages]
        if injection.tools:
            body["tools"] = injection.tools
        else:
            for key in ("tools", "tool_choice", "parallel_tool_calls"):
                body.pop(key, None)
        apply_params(body, injection)
        if body.get("stream"):
            options = body.get("stream_options")
            body["stream_options"] = (
                {**options, "include_usage": True}
                if isinstance(options, dict)
                else {"include_usage": True}
            )
        return client_system

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def default_headers(self) -> dict[str, str]:
        return {}


OPENAI = OpenAIDialect()
