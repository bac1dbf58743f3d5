"""What every API dialect provides. One module per dialect implements it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from router.bundles import Bundle
from router.errors import DialectName
from router.proxy.dialects.tools import ClientToolsPolicy
from router.proxy.telemetry import Usage

ClientSystemPolicy = Literal["replace", "append", "reject"]


@dataclass(frozen=True, slots=True)
class Policy:
    """A route's rules for what a client brings of its own: a system prompt, tools."""

    route: str
    client_system: ClientSystemPolicy = "replace"
    client_tools: ClientToolsPolicy = "merge"


@dataclass(frozen=True, slots=True)
class Rewritten:
    """What a rewrite found in the client's request."""

    client_system: bool = False  # it carried a system prompt of its own
    client_tools: frozenset[str] = frozenset()  # its own tools that went upstream
    # For a stream: each whole SSE event passes through this on its way to the client, to
    # hide what the router asked for and the client did not (b"" drops the event).
    relay_event: Callable[[bytes], bytes] | None = None


# Params that define the agent's behaviour: when a bundle sets one, it wins over the
# client's value, so every request of a version samples the same way. Every other bundle
# param (max_tokens, stop, tool_choice, ...) is a default the client may override.
PINNED_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "reasoning_effort",
        "thinking",
    }
)


@dataclass(frozen=True, slots=True)
class Injection:
    """What a bundle puts into every request, precomputed once per bundle."""

    model: str
    system: Any  # the dialect's shape: a message dict, a string or a list of blocks
    tools: list[dict[str, Any]]
    pinned: Mapping[str, Any]
    defaults: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: Any  # JSON text when `raw`, else the parsed object
    raw: bool


@dataclass(slots=True)
class Reading:
    """What the telemetry needs from one answer, JSON or streamed."""

    usage: Usage | None = None  # None until (unless) the provider reports it
    usage_complete: bool = True  # False: `usage` is what was known when the stream broke
    tool_calls: list[ToolCall] = field(default_factory=list)
    refusal: bool = False
    text: list[str] = field(default_factory=list)  # only collected for refusal patterns
    started: bool = False  # a stream has produced its first token
    finished: bool = False  # the stream's terminal event arrived
    error: bool = False  # the provider sent an error event inside the stream
    response_id: str | None = None  # Responses API: the id a later turn may chain from


class StreamReader(Protocol):
    reading: Reading

    def feed(self, event: bytes) -> None:
        """Read one whole SSE event."""
        ...

    def finish(self) -> Reading:
        """Settle what was accumulated (streamed tool-call arguments, usage)."""
        ...


def parse_object(data: bytes) -> dict[str, Any] | None:
    """A JSON object from the provider, or None when the bytes are not one."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


# A provider's answer read for the telemetry may come in a shape its API never documents
# (null where an object belongs, a number for a name). The readers take every value through
# these, so such an answer is read as empty and relayed as it came, never raised on.


def obj(value: Any) -> dict[str, Any]:
    """`value` when it is an object, else an empty one."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    """The objects in `value` when it is a list; nothing else."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def string(value: Any) -> str:
    """`value` when it is a string, else empty."""
    return value if isinstance(value, str) else ""


def count(value: Any) -> int:
    """A token count or an index: a non-negative int, else 0."""
    return value if type(value) is int and value >= 0 else 0


def has(data: bytes, key: bytes, value_start: bytes) -> bool:
    """Does compact or spaced JSON text contain `"key":<value_start>`? A cheap filter that
    lets the stream readers skip parsing events that cannot matter."""
    return b'"' + key + b'":' + value_start in data or b'"' + key + b'": ' + value_start in data


def first_user_message(items: Any) -> str | None:
    """The content of the first `role: user` item of a message list, as text: a string as
    it is, blocks as their JSON. None when there is none."""
    if not isinstance(items, list):
        return None
    for item in items:
        if isinstance(item, dict) and item.get("role") == "user":
            return _words(item.get("content"))
    return None


def _words(content: Any) -> str | None:
    """A message's text, without what a client may add or move between turns (Anthropic's
    `cache_control` marks move to the newest message): a string as it is, text blocks
    joined, other blocks by their type and data."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        text = block.get("text")
        if isinstance(text, str):
            parts.append(text)
        else:
            kept = {k: v for k, v in block.items() if k not in ("cache_control", "citations")}
            parts.append(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode())
    return "\n".join(parts) if parts else None


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pinned = {k: v for k, v in params.items() if k in PINNED_PARAMS}
    defaults = {k: v for k, v in params.items() if k not in PINNED_PARAMS}
    return pinned, defaults


def apply_params(body: dict[str, Any], injection: Injection) -> None:
    for key, value in injection.pinned.items():
        body[key] = value
    for key, value in injection.defaults.items():
        body.setdefault(key, value)


class Dialect(Protocol):
    @property
    def name(self) -> DialectName: ...

    @property
    def family(self) -> str:
        """The provider dialect whose routes serve this endpoint (`openai`, `anthropic`)."""
        ...

    @property
    def path(self) -> str:
        """The endpoint clients call on the router."""
        ...

    @property
    def upstream_path(self) -> str:
        """Appended to the provider's base_url."""
        ...

    @property
    def forward_headers(self) -> frozenset[str]:
        """Lower-case client headers that may go upstream."""
        ...

    def prepare(self, bundle: Bundle) -> Injection: ...

    def rewrite(self, body: dict[str, Any], injection: Injection, policy: Policy) -> Rewritten:
        """Inject the bundle into a parsed request body, in place, under the route's policy
        for the client's own system prompt and tools."""
        ...

    def opening(self, body: dict[str, Any]) -> str | None:
        """The conversation's first user message, as text (for session fingerprints)."""
        ...

    def read_json(self, data: bytes, collect_text: bool) -> Reading:
        """Read a JSON answer. A body that is not the expected JSON gives an empty Reading."""
        ...

    def stream_reader(self, collect_text: bool) -> StreamReader: ...

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def default_headers(self) -> dict[str, str]: ...
