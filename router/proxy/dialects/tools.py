"""How a request's own tools meet its bundle's tools: the route's `client_tools` policy.

Agent frameworks send tools of their own: the agent's functions, and structured output done
as a forced call to a made-up tool (instructor, pydantic-ai's `output_type`, LangChain's
`with_structured_output`). Dropping them while keeping the client's `tool_choice` breaks
those flows in silence, so the policy is explicit:

- `merge` (the default): the bundle's tools, then the client's whose names the bundle lacks.
  The bundle wins a name clash, so a bundle's schema is never replaced by the client's.
- `replace`: the bundle's tools only.
- `reject`: a request that brings a tool the bundle lacks gets a 400.

Whatever the policy, a `tool_choice` that forces a tool which does not go upstream is a 400
that names the tool and the policy, never forwarded as a mismatch. Calls the model makes to
a client's tool are the client's business: counted as `client_tool`, never as failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from router.errors import BadRequest

ClientToolsPolicy = Literal["merge", "replace", "reject"]


@dataclass(frozen=True, slots=True)
class ToolSpelling:
    """How a dialect writes tools and `tool_choice`."""

    name_of: Callable[[Any], str | None]  # a tool's name
    forced: Callable[[Any], str | None]  # the one tool a tool_choice forces, if it does
    needs_a_tool: Callable[[Any], bool]  # a tool_choice that forces some tool
    goes_with_tools: tuple[str, ...]  # keys that go (or stay) with the tools


def merge_tools(
    body: dict[str, Any],
    bundle_tools: list[dict[str, Any]],
    policy: ClientToolsPolicy,
    spelling: ToolSpelling,
    route: str,
) -> frozenset[str]:
    """Set the request's tools per the policy, in place. Returns the names of the client's
    tools that go upstream."""
    sent = body.get("tools")
    client = sent if isinstance(sent, list) else []
    bundle_names = {spelling.name_of(t) for t in bundle_tools}
    own = [t for t in client if spelling.name_of(t) not in bundle_names]
    if own and policy == "reject":
        names = ", ".join(str(spelling.name_of(t)) for t in own)
        raise BadRequest(
            f"route {route} refuses tools the bundle does not define ({names}); remove them, "
            f"or set routes.{route}.client_tools: merge",
            code="client_tools_rejected",
        )
    kept = own if policy == "merge" else []
    tools = [*bundle_tools, *kept]
    offered = bundle_names | {spelling.name_of(t) for t in kept}
    choice = body.get("tool_choice")
    if choice is not None:
        forced = spelling.forced(choice)
        if forced is not None and forced not in offered:
            raise BadRequest(
                _unknown_choice(forced, offered, policy, route), code="tool_not_offered"
            )
        if not tools and spelling.needs_a_tool(choice):
            raise BadRequest(
                f"tool_choice asks for a tool call, but no tool goes upstream: route {route}'s "
                f"bundle has none and client_tools is {policy}. Send no tool_choice, or set "
                f"routes.{route}.client_tools: merge and send the tool",
                code="tool_not_offered",
            )
    if tools:
        body["tools"] = tools
    else:
        for key in ("tools", "tool_choice", *spelling.goes_with_tools):
            body.pop(key, None)
    return frozenset(name for name in (spelling.name_of(t) for t in kept) if name)


def _unknown_choice(
    forced: str, offered: set[str | None], policy: ClientToolsPolicy, route: str
) -> str:
    names = ", ".join(sorted(str(n) for n in offered if n)) or "none"
    if policy == "replace":
        return (
            f"tool_choice forces the tool {forced!r}, but route {route} sends only its "
            f"bundle's tools upstream (client_tools: replace; they are: {names}). Set "
            f"routes.{route}.client_tools: merge to send the client's tools too, or force "
            "one of the bundle's"
        )
    return (
        f"tool_choice forces the tool {forced!r}, which neither the bundle nor the request "
        f"defines (the tools going upstream: {names}); send that tool, or force one of these"
    )
