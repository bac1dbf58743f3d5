"""The fake provider against the official SDKs, straight (no router): it must answer like the
real OpenAI Chat Completions, OpenAI Responses and Anthropic Messages APIs on the points agent
frameworks depend on (tool choice, several tool calls, structured output, n, logprobs,
thinking, usage), in JSON and in SSE, so that the SDKs parse every answer into their types."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

import anthropic
import fastjsonschema
import httpx
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from router.fake_provider import Behaviour, example_instance
from router.fake_provider.chat import Chat
from router.fake_provider.messages import Messages
from router.fake_provider.plan import Invalid, Planner
from router.fake_provider.responses import Responses
from tests.servers import FakeProvider

GPT = "gpt-5.4-2026-03-05"
CLAUDE = "claude-opus-4-7-20260108"
HI = [{"role": "user", "content": "hi"}]
LOOKUP = {
    "type": "object",
    "properties": {"order_id": {"type": "string", "examples": ["A-1234"]}},
    "required": ["order_id"],
    "additionalProperties": False,
}
REFUND = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 4},
        "amount_cents": {"type": "integer", "minimum": 1},
        "reason": {"type": "string", "enum": ["unused", "damaged"]},
    },
    "required": ["order_id", "amount_cents", "reason"],
    "additionalProperties": False,
}
NOTIFY = {
    "type": "object",
    "properties": {"channels": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
    "required": ["channels"],
}
SCHEMAS = {"lookup_order": LOOKUP, "issue_refund": REFUND, "notify": NOTIFY}
OPENAI_TOOLS = [
    {"type": "function", "function": {"name": n, "description": n, "parameters": s}}
    for n, s in SCHEMAS.items()
]
ANTHROPIC_TOOLS = [{"name": n, "description": n, "input_schema": s} for n, s in SCHEMAS.items()]
RESPONSES_TOOLS = [
    {"type": "function", "name": n, "description": n, "parameters": s} for n, s in SCHEMAS.items()
]


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


@pytest.fixture
def gpt(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0) as client:
        yield client


def valid(schema: dict[str, Any], value: Any) -> bool:
    fastjsonschema.compile(schema)(value)
    return True


def sse(fake: FakeProvider, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """The raw events of a streamed answer: (event name or "", parsed data)."""
    response = httpx.post(f"{fake.url}{path}", json={**body, "stream": True}, timeout=10)
    assert response.status_code == 200, response.text
    events = []
    for block in response.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = line.removeprefix("data: ")
        events.append((name, data if data == "[DONE]" else json.loads(data)))
    return events


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
CHOICES = {
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


# ---- tool_choice ------------------------------------------------------------------------------
def openai_calls(gpt: openai.OpenAI, stream: bool, **kwargs: Any) -> list[tuple[str, Any]]:
    """(name, parsed arguments) of the tool calls in one chat answer, through the SDK."""
    args = {"model": GPT, "messages": HI, "tools": OPENAI_TOOLS, **kwargs}
    if not stream:
        message = gpt.chat.completions.create(**args).choices[0].message
        return [
            (c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []
        ]
    calls: dict[int, list[str]] = {}
    for chunk in gpt.chat.completions.create(stream=True, **args):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name, text = calls.setdefault(call.index, ["", ""])
            calls[call.index] = [
                name + (call.function.name or "" if call.function else ""),
                text + (call.function.arguments or "" if call.function else ""),
            ]
    assert sorted(calls) == list(range(len(calls)))  # indexes 0..k-1
    return [(name, json.loads(text)) for name, text in (calls[i] for i in sorted(calls))]


def anthropic_calls(claude: anthropic.Anthropic, stream: bool, **kwargs: Any) -> list[Any]:
    args = {"model": CLAUDE, "max_tokens": 4096, "messages": HI, "tools": ANTHROPIC_TOOLS, **kwargs}
    if stream:
        with claude.messages.stream(**args) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**args)
    calls = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert (message.stop_reason == "tool_use") == bool(calls)
    return calls


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_tool_choice(fake: FakeProvider, gpt: openai.OpenAI, stream: bool) -> None:
    fake.behave(GPT, tool_call_rate=1.0)
    assert openai_calls(gpt, stream, tool_choice="none") == []
    assert len(openai_calls(gpt, stream, tool_choice="auto")) == 1
    fake.behave(GPT, tool_call_rate=0.0)
    assert openai_calls(gpt, stream) == []
    assert openai_calls(gpt, stream, tool_choice="auto") == []
    required = openai_calls(gpt, stream, tool_choice="required")
    assert len(required) == 1 and required[0][0] in SCHEMAS
    for _ in range(3):
        forced = openai_calls(
            gpt, stream, tool_choice={"type": "function", "function": {"name": "issue_refund"}}
        )
        assert [name for name, _ in forced] == ["issue_refund"]
        assert valid(REFUND, forced[0][1])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_tool_choice(
    fake: FakeProvider, claude: anthropic.Anthropic, stream: bool
) -> None:
    fake.behave(CLAUDE, tool_call_rate=1.0)
    assert anthropic_calls(claude, stream, tool_choice={"type": "none"}) == []
    assert len(anthropic_calls(claude, stream, tool_choice={"type": "auto"})) == 1
    fake.behave(CLAUDE, tool_call_rate=0.0)
    assert anthropic_calls(claude, stream, tool_choice={"type": "auto"}) == []
    assert len(anthropic_calls(claude, stream, tool_choice={"type": "any"})) == 1
    for _ in range(3):
        forced = anthropic_calls(claude, stream, tool_choice={"type": "tool", "name": "notify"})
        assert [name for name, _ in forced] == ["notify"]
        assert valid(NOTIFY, forced[0][1])


def test_unknown_tool_choice_is_a_400_in_each_dialect(
    fake: FakeProvider, gpt: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        gpt.chat.completions.create(
            model=GPT,
            messages=HI,
            tools=OPENAI_TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch"}},
        )
    assert chat.value.status_code == 400
    assert chat.value.body["param"] == "tool_choice"  # type: ignore[index]
    assert "'launch'" in chat.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as responses:
        gpt.responses.create(
            model=GPT,
            input="hi",
            tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "name": "launch"},
        )
    assert "not found in 'tools'" in responses.value.body["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as messages:
        claude.messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=HI,
            tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "tool", "name": "launch"},
        )
    assert messages.value.body["error"] == {  # type: ignore[index]
        "type": "invalid_request_error",
        "message": "Tool 'launch' not found in provided tools",
    }
    assert [r["outcome"] for r in fake.requests(3)] == ["invalid_request"] * 3


# ---- several tool calls in one turn ---------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_several_tool_calls_in_one_turn(
    fake: FakeProvider, gpt: openai.OpenAI, claude: anthropic.Anthropic, stream: bool
) -> None:
    for model in (GPT, CLAUDE):
        fake.behave(model, tool_call_rate=1.0, tool_calls_per_turn=3)
    for calls in (openai_calls(gpt, stream), anthropic_calls(claude, stream)):
        assert sorted(name for name, _ in calls) == sorted(SCHEMAS)  # each offered tool
        assert all(valid(SCHEMAS[name], args) for name, args in calls)
    # Parallel calls turned off: one call a turn, as the real APIs do.
    assert len(openai_calls(gpt, stream, parallel_tool_calls=False)) == 1
    one = {"type": "auto", "disable_parallel_tool_use": True}
    assert len(anthropic_calls(claude, stream, tool_choice=one)) == 1


def test_a_tool_loop_ends_when_tool_results_are_answered(
    fake: FakeProvider, gpt: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    """With `answer_tool_results`, a conversation ending with tool results is answered in
    text, as a real model ends its tool loop; without it, `tool_call_rate` alone decides."""
    for model in (GPT, CLAUDE):
        fake.behave(model, tool_call_rate=1.0, answer_tool_results=True)
    call = gpt.chat.completions.create(model=GPT, messages=HI, tools=OPENAI_TOOLS)  # type: ignore[arg-type]
    asked = call.choices[0].message
    assert asked.tool_calls
    results = [
        *HI,
        asked.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in asked.tool_calls),
    ]
    answered = gpt.chat.completions.create(model=GPT, messages=results, tools=OPENAI_TOOLS)  # type: ignore[arg-type]
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls
    first = claude.messages.create(model=CLAUDE, max_tokens=99, messages=HI, tools=ANTHROPIC_TOOLS)  # type: ignore[arg-type]
    uses = [b for b in first.content if b.type == "tool_use"]
    assert uses
    history: Any = [
        *HI,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": b.id, "content": "ok"} for b in uses
            ],
        },
    ]
    second = claude.messages.create(
        model=CLAUDE,
        max_tokens=99,
        messages=history,
        tools=ANTHROPIC_TOOLS,  # type: ignore[arg-type]
    )
    assert [b.type for b in second.content] == ["text"]
    started = gpt.responses.create(model=GPT, input="hi", tools=RESPONSES_TOOLS)  # type: ignore[arg-type]
    outputs = [
        {"type": "function_call_output", "call_id": item.call_id, "output": "ok"}
        for item in started.output
        if item.type == "function_call"
    ]
    assert outputs
    ended = gpt.responses.create(
        model=GPT,
        previous_response_id=started.id,
        input=outputs,
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
    )
    assert [item.type for item in ended.output] == ["message"]
    fake.behave(GPT, answer_tool_results=False)
    again = gpt.chat.completions.create(model=GPT, messages=results, tools=OPENAI_TOOLS)  # type: ignore[arg-type]
    assert again.choices[0].message.tool_calls


def test_openai_parallel_calls_stream_with_their_indexes(fake: FakeProvider) -> None:
    fake.behave(GPT, tool_call_rate=1.0, tool_calls_per_turn=2)
    events = sse(
        fake, "/v1/chat/completions", {"model": GPT, "messages": HI, "tools": OPENAI_TOOLS}
    )
    heads = [
        call
        for _, chunk in events[:-1]
        for call in chunk["choices"][0]["delta"].get("tool_calls") or []
        if "id" in call
    ]
    assert [c["index"] for c in heads] == [0, 1]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in heads)
    assert events[-2][1]["choices"][0]["finish_reason"] == "tool_calls"


# ---- structured output ----------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_openai_structured_output_matches_the_schema(gpt: openai.OpenAI, stream: bool) -> None:
    schema = Order.model_json_schema()
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": schema}}
    if stream:
        with gpt.chat.completions.stream(model=GPT, messages=HI, response_format=Order) as events:
            parsed = events.get_final_completion().choices[0].message.parsed
    else:
        text = (
            gpt.chat.completions.create(
                model=GPT,
                messages=HI,
                response_format=fmt,  # type: ignore[arg-type]
            )
            .choices[0]
            .message.content
        )
        assert valid(schema, json.loads(text or ""))
        parsed = (
            gpt.chat.completions.parse(model=GPT, messages=HI, response_format=Order)
            .choices[0]
            .message.parsed
        )
    assert isinstance(parsed, Order) and len(parsed.lines) >= 2


def test_openai_json_object_mode(gpt: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Answer in JSON."}]
    text = (
        gpt.chat.completions.create(
            model=GPT,
            messages=ask,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )
        .choices[0]
        .message.content
    )
    assert isinstance(json.loads(text or ""), dict)
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        gpt.chat.completions.create(
            model=GPT,
            messages=HI,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )


# ---- n and logprobs -------------------------------------------------------------------------
def test_n_choices(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, output_tokens=7, input_tokens=11)
    answer = gpt.chat.completions.create(model=GPT, messages=HI, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all(c.message.content and c.finish_reason == "stop" for c in answer.choices)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 21)
    texts: dict[int, str] = {}
    finished = set()
    chunks = gpt.chat.completions.create(
        model=GPT, messages=HI, n=3, stream=True, stream_options={"include_usage": True}
    )
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finished.add(choice.index)
        if chunk.usage:
            assert chunk.usage.completion_tokens == 21
    assert sorted(texts) == [0, 1, 2] == sorted(finished)
    assert len(set(texts.values())) == 1 and texts[0]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_logprobs(fake: FakeProvider, gpt: openai.OpenAI, stream: bool) -> None:
    tokens: list[Any] = []
    text = ""
    if stream:
        for chunk in gpt.chat.completions.create(
            model=GPT, messages=HI, logprobs=True, top_logprobs=2, stream=True
        ):
            if chunk.choices and chunk.choices[0].logprobs:
                tokens += chunk.choices[0].logprobs.content or []
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    else:
        choice = gpt.chat.completions.create(
            model=GPT, messages=HI, logprobs=True, top_logprobs=2
        ).choices[0]
        assert choice.logprobs is not None
        tokens, text = choice.logprobs.content or [], choice.message.content or ""
    assert "".join(t.token for t in tokens) == text != ""
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert all(bytes(t.bytes or []) == t.token.encode() for t in tokens)
    plain = gpt.chat.completions.create(model=GPT, messages=HI).choices[0]
    assert plain.logprobs is None


# ---- Anthropic thinking and usage -----------------------------------------------------------
THINK = {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_thinking(fake: FakeProvider, claude: anthropic.Anthropic, stream: bool) -> None:
    fake.behave(CLAUDE, thinking_text="Look up the order first.", text="Done.")
    args: dict[str, Any] = {"model": CLAUDE, "max_tokens": 4096, "messages": HI, "thinking": THINK}
    if stream:
        with claude.messages.stream(**args) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**args)
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text"]
    thinking = message.content[0]
    assert thinking.type == "thinking"
    assert thinking.thinking == "Look up the order first." and thinking.signature
    assert message.content[1].type == "text" and message.content[1].text == "Done."
    assert message.usage.output_tokens == 5 + 1  # the thinking is billed as output


def test_anthropic_thinking_events(fake: FakeProvider) -> None:
    fake.behave(CLAUDE, tool_call_rate=1.0)
    events = sse(
        fake,
        "/v1/messages",
        {
            "model": CLAUDE,
            "max_tokens": 4096,
            "messages": HI,
            "thinking": THINK,
            "tools": ANTHROPIC_TOOLS,
        },
    )
    shape = []
    for name, data in events:
        if name == "content_block_start":
            shape.append(f"start {data['index']} {data['content_block']['type']}")
        elif name == "content_block_delta":
            shape.append(f"delta {data['index']} {data['delta']['type']}")
        elif name == "content_block_stop":
            shape.append(f"stop {data['index']}")
    deduplicated = [s for i, s in enumerate(shape) if i == 0 or s != shape[i - 1]]
    assert deduplicated == [
        "start 0 thinking",
        "delta 0 thinking_delta",
        "delta 0 signature_delta",
        "stop 0",
        "start 1 tool_use",
        "delta 1 input_json_delta",
        "stop 1",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"temperature": 0.2}, "`temperature` may only be set to 1 when thinking is enabled"),
        ({"top_k": 5}, "`top_k` must be unset when thinking is enabled"),
        ({"max_tokens": 1000}, "`max_tokens` must be greater than `thinking.budget_tokens`"),
        (
            {"tools": ANTHROPIC_TOOLS, "tool_choice": {"type": "any"}},
            "Thinking may not be enabled when tool_choice forces tool use.",
        ),
    ],
    ids=["temperature", "top_k", "budget", "forced_tool"],
)
def test_anthropic_thinking_conflicts_are_400(
    claude: anthropic.Anthropic, extra: dict[str, Any], message: str
) -> None:
    # This SDK version no longer takes temperature or top_k as arguments: extra_body sends them.
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(
            model=CLAUDE, max_tokens=4096, messages=HI, thinking=THINK, extra_body=extra
        )  # type: ignore[arg-type]
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert refused.value.body["error"]["message"].startswith(message)  # type: ignore[index]
    claude.messages.create(  # temperature 1 is allowed
        model=CLAUDE, max_tokens=4096, messages=HI, thinking=THINK, extra_body={"temperature": 1}
    )  # type: ignore[arg-type]


def test_anthropic_message_delta_carries_cumulative_usage(fake: FakeProvider) -> None:
    fake.behave(
        CLAUDE, input_tokens=100, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40
    )
    events = dict(sse(fake, "/v1/messages", {"model": CLAUDE, "max_tokens": 50, "messages": HI}))
    assert events["message_start"]["message"]["usage"]["output_tokens"] == 1
    assert events["message_delta"]["usage"] == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 40,
        "cache_read_input_tokens": 30,
        "output_tokens": 20,
    }


# ---- the Responses API ----------------------------------------------------------------------
def test_responses_text(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, text="Hello there.", input_tokens=50, cache_read_tokens=10)
    response = gpt.responses.create(model=GPT, input="hi", instructions="Be brief.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == GPT
    assert response.instructions == "Be brief."
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == "Hello there."
    assert response.usage is not None
    assert response.usage.input_tokens == 60
    assert response.usage.input_tokens_details.cached_tokens == 10
    assert response.usage.output_tokens == 2
    assert response.usage.total_tokens == 62
    assert response.usage.output_tokens_details.reasoning_tokens == 0
    assert gpt.responses.retrieve(response.id).output_text == "Hello there."


def test_responses_function_call_round_trip(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    first = gpt.responses.create(
        model=GPT,
        input=[{"role": "user", "content": "refund A-1234"}],
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "function", "name": "issue_refund"},
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "issue_refund"
    assert call.call_id.startswith("call_") and valid(REFUND, json.loads(call.arguments))
    second = gpt.responses.create(
        model=GPT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"}],
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
    )
    assert second.output[0].type == "message" and second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the conversation so far
    for choice, rate, calls in (("none", 1.0, 0), ("required", 0.0, 1), ("auto", 0.0, 0)):
        fake.behave(GPT, tool_call_rate=rate)
        answer = gpt.responses.create(
            model=GPT,
            input="hi",
            tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
            tool_choice=choice,  # type: ignore[arg-type]
        )
        assert sum(item.type == "function_call" for item in answer.output) == calls
    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        gpt.responses.create(
            model=GPT,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "ok"}],
        )


def test_responses_unknown_ids(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        gpt.responses.create(model=GPT, input="hi", previous_response_id="resp_nope")
    assert unknown.value.body == {  # type: ignore[comparison-overlap]
        "message": "Previous response with id 'resp_nope' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    with pytest.raises(openai.NotFoundError, match="No response found with id 'resp_nope'"):
        gpt.responses.retrieve("resp_nope")
    unstored = gpt.responses.create(model=GPT, input="hi", store=False)
    with pytest.raises(openai.NotFoundError):
        gpt.responses.retrieve(unstored.id)
    stored = gpt.responses.create(model=GPT, input="hi")
    gpt.responses.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        gpt.responses.retrieve(stored.id)


def test_responses_logprobs(gpt: openai.OpenAI) -> None:
    asked = {"include": ["message.output_text.logprobs"], "top_logprobs": 3}
    response = gpt.responses.create(model=GPT, input="hi", **asked)  # type: ignore[arg-type]
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert part.type == "output_text" and part.logprobs
    assert "".join(t.token for t in part.logprobs) == part.text
    assert all(len(t.top_logprobs) == 3 for t in part.logprobs)
    deltas = [
        e.logprobs
        for e in gpt.responses.create(model=GPT, input="hi", stream=True, **asked)  # type: ignore[arg-type]
        if e.type == "response.output_text.delta"
    ]
    assert all(deltas) and "".join(t.token for d in deltas for t in d) == part.text


RESPONSES_TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_stream_events(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, text="one two three four", stream_chunks=4)
    events = sse(fake, "/v1/responses", {"model": GPT, "input": "hi"})
    names = [name for name, _ in events]
    assert [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]] == RESPONSES_TEXT_EVENTS
    assert names.count("response.output_text.delta") == 4
    assert all(name == data["type"] for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed" and completed["usage"]["output_tokens"] == 4
    with gpt.responses.stream(model=GPT, input="hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "one two three four"
    kinds = {e.type for e in gpt.responses.create(model=GPT, input="hi", stream=True)}
    assert kinds == set(RESPONSES_TEXT_EVENTS)


def test_responses_stream_function_calls(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, tool_call_rate=1.0, tool_calls_per_turn=2)
    with gpt.responses.stream(
        model=GPT,
        input="hi",
        tools=RESPONSES_TOOLS,  # type: ignore[arg-type]
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds.count("response.function_call_arguments.done") == 2
    assert "response.function_call_arguments.delta" in kinds
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 2 and all(c.status == "completed" for c in calls)
    assert all(valid(SCHEMAS[c.name], json.loads(c.arguments)) for c in calls)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_responses_structured_output(gpt: openai.OpenAI, stream: bool) -> None:
    if stream:
        with gpt.responses.stream(model=GPT, input="hi", text_format=Order) as events:
            parsed = events.get_final_response().output_parsed
    else:
        parsed = gpt.responses.parse(model=GPT, input="hi", text_format=Order).output_parsed
    assert isinstance(parsed, Order)


def test_responses_reasoning_and_refusal(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, thinking_text="Think about it.")
    response = gpt.responses.create(
        model=GPT, input="hi", reasoning={"effort": "low", "summary": "auto"}
    )
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Think about it."
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 3
    with gpt.responses.stream(
        model=GPT, input="hi", reasoning={"effort": "low", "summary": "auto"}
    ) as stream:
        kinds = {e.type for e in stream}
    assert "response.reasoning_summary_text.delta" in kinds
    fake.behave(GPT, refusal_rate=1.0)
    refused = gpt.responses.create(model=GPT, input="hi")
    message = refused.output[0]
    assert message.type == "message" and message.content[0].type == "refusal"
    with gpt.responses.stream(model=GPT, input="hi") as stream:
        kinds = {e.type for e in stream}
    assert {"response.refusal.delta", "response.refusal.done"} <= kinds


def test_responses_knobs_errors_and_truncation(fake: FakeProvider, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, error_rate=1.0, error_kind="529")
    with pytest.raises(openai.InternalServerError):
        gpt.responses.create(model=GPT, input="hi")
    fake.behave(GPT, error_rate=0.0, stream_truncate_after=3)
    events = sse(fake, "/v1/responses", {"model": GPT, "input": "hi"})
    assert [name for name, _ in events] == RESPONSES_TEXT_EVENTS[:3]
    logged = fake.requests(2)
    assert [r["path"] for r in logged] == ["/v1/responses"] * 2
    assert [r["outcome"] for r in logged] == ["error_529", "completed"]
