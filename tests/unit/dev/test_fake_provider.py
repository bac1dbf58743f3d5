"""The fake provider in process: the JSON instance generator, and each dialect's reader and
writers on any request (the answers through the official SDKs are tested end to end in
tests/e2e/dev/test_fake_provider.py)."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, cast

import fastjsonschema
import orjson
import pytest
from anthropic.types import MessageParam, ToolParam
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionToolParam
from openai.types.responses import FunctionToolParam
from pydantic import BaseModel, Field

from router.dev.fake_provider import Behaviour, example_instance, load_profile
from router.dev.fake_provider.chat import Chat
from router.dev.fake_provider.messages import Messages
from router.dev.fake_provider.plan import Invalid, Planner
from router.dev.fake_provider.responses import Responses
from router.errors import ConfigError
from testing.bundles import alias_bomb

GPT = "gpt-5.4-2026-03-05"
HI: list[MessageParam] = [{"role": "user", "content": "hi"}]
LOOKUP: dict[str, Any] = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "examples": ["A-1234"]}},
    "required": ["order_id"],
    "additionalProperties": False,
}
REFUND: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 4},
        "amount_cents": {"type": "integer", "minimum": 1},
        "reason": {"type": "string", "enum": ["unused", "damaged"]},
    },
    "required": ["order_id", "amount_cents", "reason"],
    "additionalProperties": False,
}
NOTIFY: dict[str, Any] = {
    "type": "object",
    "properties": {"channels": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "required": ["channels"],
}
SCHEMAS = {"lookup_order": LOOKUP, "issue_refund": REFUND, "notify": NOTIFY}
OPENAI_TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": n, "description": n, "parameters": s}}
    for n, s in SCHEMAS.items()
]
ANTHROPIC_TOOLS: list[ToolParam] = [
    {"name": n, "description": n, "input_schema": s} for n, s in SCHEMAS.items()
]
# Without `strict`, as frameworks send them: the SDK's type requires the key, the API does not.
RESPONSES_TOOLS = cast(
    list[FunctionToolParam],
    [
        {"type": "function", "name": n, "description": n, "parameters": s}
        for n, s in SCHEMAS.items()
    ],
)


class Line(BaseModel):
    sku: str = Field(pattern="^[A-Z]{3}$", examples=["ABC"])
    quantity: int = Field(ge=1, le=10)
    price: float = Field(gt=0)


class Order(BaseModel):
    """A nested model with $defs, enums, optionals, lists and formats, as frameworks send."""

    id: str
    status: Literal["open", "shipped"]
    placed_at: datetime
    lines: list[Line] = Field(min_length=2)
    note: str | None
    tags: list[str]


def valid(schema: dict[str, Any], value: Any) -> bool:
    fastjsonschema.compile(schema)(value)
    return True


# ---- the JSON instance generator ------------------------------------------------------------
@pytest.mark.parametrize(
    "schema",
    [
        Order.model_json_schema(),
        LOOKUP,
        REFUND,
        NOTIFY,
        {"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}}},
        {"type": "object", "minProperties": 2, "additionalProperties": {"type": "integer"}},
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 5, "maximum": 9, "multipleOf": 3},
                "x": {"type": "number", "exclusiveMinimum": 2, "maximum": 2.5},
                "flag": {"type": ["null", "boolean"]},
                "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"const": 7}]},
                "ids": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 3,
                    "uniqueItems": True,
                },
                "any": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
                "both": {
                    "allOf": [
                        {
                            "type": "object",
                            "properties": {"a": {"type": "string"}},
                            "required": ["a"],
                        },
                        {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
                    ]
                },
                "short": {"type": "string", "maxLength": 2},
                "fallback": {"default": "d"},
            },
            "required": ["n", "x", "flag", "pair", "ids", "any", "both", "short", "fallback"],
        },
    ],
    ids=["pydantic", "lookup", "refund", "notify", "format", "min_props", "constraints"],
)
def test_generated_instances_validate(schema: dict[str, Any]) -> None:
    assert valid(schema, example_instance(schema))


def test_generated_instance_prefers_examples_enum_default() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "examples": ["from-examples"]},
            "b": {"type": "string", "enum": ["first", "second"]},
            "c": {"type": "integer", "default": 42},
            "d": {"type": "object", "properties": {"e": {"type": "boolean"}}, "required": ["e"]},
            "f": {"type": "array", "items": {"type": "integer", "minimum": 3}},
        },
        "required": ["a", "b", "c", "d", "f"],
    }
    assert example_instance(schema) == {
        "a": "from-examples",
        "b": "first",
        "c": 42,
        "d": {"e": True},
        "f": [3],
    }


INTEGERS = st.integers(-(2**63), 2**64 - 1)  # what orjson reads a body's integers into
JSON = st.recursive(
    st.none() | st.booleans() | INTEGERS | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "type",
                    "properties",
                    "required",
                    "items",
                    "$ref",
                    "anyOf",
                    "allOf",
                    "enum",
                    "minItems",
                    "maxItems",
                    "minimum",
                    "maximum",
                    "multipleOf",
                    "minLength",
                    "maxLength",
                    "additionalProperties",
                    "prefixItems",
                ]
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(schema=JSON)
def test_any_schema_gets_an_instance_and_never_an_exception(schema: Any) -> None:
    """Schemas come from clients (response_format) and may be anything."""
    orjson.dumps(example_instance(schema))


FIELDS = [
    "model", "messages", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls",
    "response_format", "text", "n", "logprobs", "top_logprobs", "include", "thinking",
    "temperature", "top_k", "max_tokens", "reasoning", "reasoning_effort",
    "previous_response_id", "store", "stream_options",
]  # fmt: skip


TOOLS = {Chat: OPENAI_TOOLS, Messages: ANTHROPIC_TOOLS, Responses: RESPONSES_TOOLS}
CHOICES: dict[type, list[object]] = {
    Chat: ["auto", "none", "required", {"type": "function", "function": {"name": "notify"}}],
    Messages: [{"type": "auto"}, {"type": "any"}, {"type": "tool", "name": "notify"}],
    Responses: ["auto", "none", "required", {"type": "function", "name": "notify"}],
}
SHAPES = [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": LOOKUP}}},
    {"text": {"format": {"type": "json_schema", "name": "o", "schema": REFUND}}},
    {"thinking": {"type": "enabled", "budget_tokens": 1024}, "max_tokens": 2048},
    {"reasoning": {"effort": "low", "summary": "auto"}},
    {"n": 2, "logprobs": True, "top_logprobs": 2},
    {"include": ["message.output_text.logprobs"]},
]


def typed(kinds: list[str], *fields: str) -> st.SearchStrategy[dict[str, Any]]:
    """An object with a known `type` and random JSON in the fields beside it."""
    return st.fixed_dictionaries(
        {"type": st.sampled_from(kinds)}, optional={f: JSON | st.just("notify") for f in fields}
    )


# Near misses of the well-formed shapes, where a reader that trusts a field's type breaks.
NEAR = {
    "tool_choice": typed(
        ["function", "tool", "any", "allowed_tools"],
        "name",
        "function",
        "tools",
        "allowed_tools",
        "mode",
        "disable_parallel_tool_use",
    ),
    "input": st.lists(
        typed(["function_call", "function_call_output", "message"], "call_id", "content"),
        max_size=3,
    ),
    "thinking": typed(["enabled", "adaptive", "disabled"], "budget_tokens"),
    "response_format": typed(["json_schema", "json_object", "text"], "json_schema"),
    "text": st.fixed_dictionaries(
        {"format": typed(["json_schema", "json_object", "text"], "name", "schema")}
    ),
    "reasoning": st.fixed_dictionaries({}, optional={"effort": JSON, "summary": JSON}),
}


@st.composite
def requests(draw: st.DrawFn) -> tuple[Any, dict[str, Any]]:
    """A dialect and a body: random JSON in its fields, often with well-formed tools, tool
    choices and options among them, so that both the refusals and the answers are reached."""
    dialect = draw(st.sampled_from([Chat, Messages, Responses]))
    body: dict[str, Any] = {"model": GPT, "messages": HI, "input": "hi"}
    if draw(st.booleans()):
        body["tools"] = TOOLS[dialect]
        body["tool_choice"] = draw(st.sampled_from(CHOICES[dialect]) | JSON)
    body.update(draw(st.sampled_from([{}, *SHAPES])))
    body.update(draw(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3)))
    body.update(draw(st.fixed_dictionaries({}, optional=NEAR)))
    return dialect, body


@settings(max_examples=300, deadline=None)
@given(
    request=requests(),
    how=st.builds(
        Behaviour,
        tool_call_rate=st.just(1.0),
        tool_calls_per_turn=st.integers(1, 3),
        invalid_tool_call_rate=st.sampled_from([0.0, 1.0]),
        refusal_rate=st.sampled_from([0.0, 0.5]),
    ),
)
def test_any_request_is_answered_or_refused_never_crashes(
    request: tuple[Any, dict[str, Any]], how: Behaviour
) -> None:
    """Whatever JSON a client sends, each dialect answers it (JSON and SSE) or refuses it
    with the real API's 400, never with an exception (which aiohttp would make a 500)."""
    dialect, body = request
    speaker = dialect()
    try:
        ask = speaker.read(body)
    except Invalid as problem:
        assert problem.message and problem.status == 400
        return
    plan = Planner(random.Random(0)).plan(ask, how)
    orjson.dumps(speaker.answer(body, ask, plan))
    assert speaker.events(body, ask, plan, how)


def test_an_alias_bomb_in_a_fake_provider_profile_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text("default: {latency_ms: 1}\nbomb:\n" + alias_bomb(7))
    with pytest.raises(ConfigError) as caught:
        load_profile(profile)
    assert caught.value.problems[0].file == str(profile)
    assert "aliases expand it past" in caught.value.problems[0].message
