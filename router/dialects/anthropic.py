"""Anthropic Messages: `POST /v1/messages`.

Injection: `model` becomes the pinned snapshot; the bundle prompt is the top-level `system`
(a text block with `cache_control: ephemeral` when the bundle sets `prompt_caching: true`);
`tools` are the bundle's tools in Anthropic format (a bundle without tools sends none, and
`tool_choice` goes with them); params per `PINNED_PARAMS`.
"""

from __future__ import annotations

from typing import Any, Literal

from router.bundles import Bundle
from router.dialects.base import ClientSystemPolicy, Injection, apply_params, split_params
from router.errors import BadRequest

API_VERSION = "2023-06-01"


class AnthropicDialect:
    name: Literal["anthropic"] = "anthropic"
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

    def rewrite(
        self, body: dict[str, Any], injection: Injection, policy: ClientSystemPolicy
    ) -> bool:
        if not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' must be a list of messages", code="invalid_messages")
        client = body.get("system")
        client_system = bool(client)
        if client_system and policy == "reject":
            raise BadRequest(
                "this route injects its own system prompt and refuses one from the client; "
                "remove the 'system' field",
                code="client_system_rejected",
            )
        if client_system and policy == "append":
            body["system"] = [*_blocks(injection.system), *_blocks(client)]
        else:
            body["system"] = injection.system
        body["model"] = injection.model
        if injection.tools:
            body["tools"] = injection.tools
        else:
            body.pop("tools", None)
            body.pop("tool_choice", None)
        apply_params(body, injection)
        return client_system

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key}

    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": API_VERSION}


def _blocks(system: Any) -> list[Any]:
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    if isinstance(system, list):
        return system
    raise BadRequest("'system' must be a string or a list of text blocks", code="invalid_system")


ANTHROPIC = AnthropicDialect()
