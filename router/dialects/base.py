"""What every API dialect provides. One module per dialect implements it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from router.bundles import Bundle
from router.errors import DialectName

ClientSystemPolicy = Literal["replace", "append", "reject"]

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

    def rewrite(
        self, body: dict[str, Any], injection: Injection, policy: ClientSystemPolicy
    ) -> bool:
        """Inject the bundle into a parsed request body, in place.

        Returns True when the client sent a system prompt of its own."""
        ...

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def default_headers(self) -> dict[str, str]: ...
