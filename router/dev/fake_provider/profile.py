"""The fake provider's behaviour per model snapshot, from a profile file or set at run time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from router.files import load_yaml

ErrorKind = Literal["400", "401", "500", "529", "429", "reset"]
BadToolCall = Literal["schema", "unknown_tool", "not_json"]
ToolPick = Literal["cycle", "first", "random"]


class Behaviour(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0.0, ge=0)  # before the answer (or first event)
    latency_jitter_ms: float = Field(default=0.0, ge=0)  # uniform +/- around latency_ms
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_kind: ErrorKind = "500"
    refusal_rate: float = Field(default=0.0, ge=0, le=1)
    tool_call_rate: float = Field(default=0.0, ge=0, le=1)  # with tool_choice auto
    tool_calls_per_turn: int = Field(default=1, ge=1, le=64)  # unless parallel calls are off
    # A conversation that ends with tool results gets a text answer, never another call the
    # model chose: how a real model ends an agent's tool loop.
    answer_tool_results: bool = False
    tool_pick: ToolPick = "cycle"  # which offered tools are called
    invalid_tool_call_rate: float = Field(default=0.0, ge=0, le=1)  # of the tool calls
    invalid_tool_call_kind: BadToolCall = "schema"  # how an invalid tool call is broken
    input_tokens: int | None = Field(default=None, ge=0)  # None: estimated from the request
    output_tokens: int | None = Field(default=None, ge=0)  # None: counted from the answer
    cache_read_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    stream_chunks: int = Field(default=4, ge=1)
    stream_interval_ms: float = Field(default=0.0, ge=0)  # between stream events
    stream_truncate_after: int | None = Field(default=None, ge=0)  # end cleanly after N events
    text: str = "Thanks for reaching out. I have looked into your request and it is handled."
    thinking_text: str = "The user needs an answer. I will check the request and reply briefly."


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int | None = None
    default: Behaviour = Behaviour()
    models: dict[str, Behaviour] = {}

    def behaviour(self, model: str) -> Behaviour:
        return self.models.get(model, self.default)


def load_profile(path: str | Path | None) -> Profile:
    if path is None:
        return Profile()
    raw = load_yaml(Path(path)) or {}  # bounded like router.yaml: size, aliases, depth
    return Profile.model_validate(raw)
