"""The fake provider against the official SDKs, straight (no router): it must answer like the
real OpenAI Chat Completions, OpenAI Responses and Anthropic Messages APIs on the points agent
frameworks depend on (tool choice, several tool calls, structured output, n, logprobs,
thinking, usage), in JSON and in SSE, so that the SDKs parse every answer into their types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import anthropic
import httpx
import openai
import pytest
from anthropic.types import ThinkingConfigParam
from openai.types.chat import ChatCompletionMessageParam
from openai.types.responses import ResponseIncludable, ToolChoiceOptions
from openai.types.shared_params import ResponseFormatJSONSchema

from testing.servers import ProviderProcess
from tests.unit.dev.test_fake_provider import (
    ANTHROPIC_TOOLS,
    GPT,
    HI,
    NOTIFY,
    OPENAI_TOOLS,
    REFUND,
    RESPONSES_TOOLS,
    SCHEMAS,
    Order,
    valid,
)

CLAUDE = "claude-opus-4-7-20260108"
HI_CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def gpt(fake: ProviderProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{fake.url}/v1", api_key="k", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: ProviderProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=fake.url, api_key="k", max_retries=0) as client:
        yield client


def sse(fake: ProviderProcess, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
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


# ---- tool_choice ------------------------------------------------------------------------------
def openai_calls(gpt: openai.OpenAI, stream: bool, **kwargs: Any) -> list[tuple[str, Any]]:
    """(name, parsed arguments) of the tool calls in one chat answer, through the SDK."""
    args = {"model": GPT, "messages": HI_CHAT, "tools": OPENAI_TOOLS, **kwargs}
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
def test_openai_tool_choice(fake: ProviderProcess, gpt: openai.OpenAI, stream: bool) -> None:
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
    fake: ProviderProcess, claude: anthropic.Anthropic, stream: bool
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
    fake: ProviderProcess, gpt: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    with pytest.raises(openai.BadRequestError) as chat:
        gpt.chat.completions.create(
            model=GPT,
            messages=HI_CHAT,
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
            tools=RESPONSES_TOOLS,
            tool_choice={"type": "function", "name": "launch"},
        )
    assert "not found in 'tools'" in responses.value.body["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as messages:
        claude.messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=HI,
            tools=ANTHROPIC_TOOLS,
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
    fake: ProviderProcess, gpt: openai.OpenAI, claude: anthropic.Anthropic, stream: bool
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
    fake: ProviderProcess, gpt: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    """With `answer_tool_results`, a conversation ending with tool results is answered in
    text, as a real model ends its tool loop; without it, `tool_call_rate` alone decides."""
    for model in (GPT, CLAUDE):
        fake.behave(model, tool_call_rate=1.0, answer_tool_results=True)
    call = gpt.chat.completions.create(model=GPT, messages=HI_CHAT, tools=OPENAI_TOOLS)
    asked = call.choices[0].message
    assert asked.tool_calls
    results: Any = [
        *HI_CHAT,
        asked.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "ok"} for c in asked.tool_calls),
    ]
    answered = gpt.chat.completions.create(model=GPT, messages=results, tools=OPENAI_TOOLS)
    assert answered.choices[0].message.content and not answered.choices[0].message.tool_calls
    first = claude.messages.create(model=CLAUDE, max_tokens=99, messages=HI, tools=ANTHROPIC_TOOLS)
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
        tools=ANTHROPIC_TOOLS,
    )
    assert [b.type for b in second.content] == ["text"]
    started = gpt.responses.create(model=GPT, input="hi", tools=RESPONSES_TOOLS)
    outputs = [
        {"type": "function_call_output", "call_id": item.call_id, "output": "ok"}
        for item in started.output
        if item.type == "function_call"
    ]
    assert outputs
    ended = gpt.responses.create(
        model=GPT,
        previous_response_id=started.id,
        input=cast(Any, outputs),
        tools=RESPONSES_TOOLS,
    )
    assert [item.type for item in ended.output] == ["message"]
    fake.behave(GPT, answer_tool_results=False)
    again = gpt.chat.completions.create(model=GPT, messages=results, tools=OPENAI_TOOLS)
    assert again.choices[0].message.tool_calls


def test_openai_parallel_calls_stream_with_their_indexes(fake: ProviderProcess) -> None:
    fake.behave(GPT, tool_call_rate=1.0, tool_calls_per_turn=2)
    events = sse(
        fake, "/v1/chat/completions", {"model": GPT, "messages": HI_CHAT, "tools": OPENAI_TOOLS}
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
    fmt: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "order", "schema": schema},
    }
    if stream:
        with gpt.chat.completions.stream(
            model=GPT, messages=HI_CHAT, response_format=Order
        ) as events:
            parsed = events.get_final_completion().choices[0].message.parsed
    else:
        text = (
            gpt.chat.completions.create(
                model=GPT,
                messages=HI_CHAT,
                response_format=fmt,
            )
            .choices[0]
            .message.content
        )
        assert valid(schema, json.loads(text or ""))
        parsed = (
            gpt.chat.completions.parse(model=GPT, messages=HI_CHAT, response_format=Order)
            .choices[0]
            .message.parsed
        )
    assert isinstance(parsed, Order) and len(parsed.lines) >= 2


def test_openai_json_object_mode(gpt: openai.OpenAI) -> None:
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Answer in JSON."}]
    text = (
        gpt.chat.completions.create(
            model=GPT,
            messages=ask,
            response_format={"type": "json_object"},
        )
        .choices[0]
        .message.content
    )
    assert isinstance(json.loads(text or ""), dict)
    with pytest.raises(openai.BadRequestError, match="must contain the word 'json'"):
        gpt.chat.completions.create(
            model=GPT,
            messages=HI_CHAT,
            response_format={"type": "json_object"},
        )


# ---- n and logprobs -------------------------------------------------------------------------
def test_n_choices(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, output_tokens=7, input_tokens=11)
    answer = gpt.chat.completions.create(model=GPT, messages=HI_CHAT, n=3)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all(c.message.content and c.finish_reason == "stop" for c in answer.choices)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (11, 21)
    texts: dict[int, str] = {}
    finished = set()
    chunks = gpt.chat.completions.create(
        model=GPT, messages=HI_CHAT, n=3, stream=True, stream_options={"include_usage": True}
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
def test_logprobs(fake: ProviderProcess, gpt: openai.OpenAI, stream: bool) -> None:
    tokens: list[Any] = []
    text = ""
    if stream:
        for chunk in gpt.chat.completions.create(
            model=GPT, messages=HI_CHAT, logprobs=True, top_logprobs=2, stream=True
        ):
            if chunk.choices and chunk.choices[0].logprobs:
                tokens += chunk.choices[0].logprobs.content or []
            text += chunk.choices[0].delta.content or "" if chunk.choices else ""
    else:
        choice = gpt.chat.completions.create(
            model=GPT, messages=HI_CHAT, logprobs=True, top_logprobs=2
        ).choices[0]
        assert choice.logprobs is not None
        tokens, text = choice.logprobs.content or [], choice.message.content or ""
    assert "".join(t.token for t in tokens) == text != ""
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert all(bytes(t.bytes or []) == t.token.encode() for t in tokens)
    plain = gpt.chat.completions.create(model=GPT, messages=HI_CHAT).choices[0]
    assert plain.logprobs is None


# ---- Anthropic thinking and usage -----------------------------------------------------------
THINK: ThinkingConfigParam = {"type": "enabled", "budget_tokens": 2048}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_anthropic_thinking(
    fake: ProviderProcess, claude: anthropic.Anthropic, stream: bool
) -> None:
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


def test_anthropic_thinking_events(fake: ProviderProcess) -> None:
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
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert refused.value.body["error"]["message"].startswith(message)  # type: ignore[index]
    claude.messages.create(  # temperature 1 is allowed
        model=CLAUDE, max_tokens=4096, messages=HI, thinking=THINK, extra_body={"temperature": 1}
    )


def test_anthropic_message_delta_carries_cumulative_usage(fake: ProviderProcess) -> None:
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
def test_responses_text(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
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


def test_responses_function_call_round_trip(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
    first = gpt.responses.create(
        model=GPT,
        input=[{"role": "user", "content": "refund A-1234"}],
        tools=RESPONSES_TOOLS,
        tool_choice={"type": "function", "name": "issue_refund"},
    )
    call = first.output[0]
    assert call.type == "function_call" and call.name == "issue_refund"
    assert call.call_id.startswith("call_") and valid(REFUND, json.loads(call.arguments))
    second = gpt.responses.create(
        model=GPT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"}],
        tools=RESPONSES_TOOLS,
    )
    assert second.output[0].type == "message" and second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the conversation so far
    cases: list[tuple[ToolChoiceOptions, float, int]] = [
        ("none", 1.0, 0),
        ("required", 0.0, 1),
        ("auto", 0.0, 0),
    ]
    for choice, rate, calls in cases:
        fake.behave(GPT, tool_call_rate=rate)
        answer = gpt.responses.create(
            model=GPT, input="hi", tools=RESPONSES_TOOLS, tool_choice=choice
        )
        assert sum(item.type == "function_call" for item in answer.output) == calls
    with pytest.raises(openai.BadRequestError, match="No tool call found"):
        gpt.responses.create(
            model=GPT,
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "ok"}],
        )


def test_responses_unknown_ids(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as unknown:
        gpt.responses.create(model=GPT, input="hi", previous_response_id="resp_nope")
    assert unknown.value.body == {
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
    include: list[ResponseIncludable] = ["message.output_text.logprobs"]
    response = gpt.responses.create(model=GPT, input="hi", include=include, top_logprobs=3)
    message = response.output[0]
    assert message.type == "message"
    part = message.content[0]
    assert part.type == "output_text" and part.logprobs
    assert "".join(t.token for t in part.logprobs) == part.text
    assert all(len(t.top_logprobs) == 3 for t in part.logprobs)
    deltas = [
        e.logprobs
        for e in gpt.responses.create(
            model=GPT, input="hi", stream=True, include=include, top_logprobs=3
        )
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


def test_responses_stream_events(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
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


def test_responses_stream_function_calls(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, tool_call_rate=1.0, tool_calls_per_turn=2)
    with gpt.responses.stream(
        model=GPT,
        input="hi",
        tools=RESPONSES_TOOLS,
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


def test_responses_reasoning_and_refusal(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
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


def test_responses_knobs_errors_and_truncation(fake: ProviderProcess, gpt: openai.OpenAI) -> None:
    fake.behave(GPT, error_rate=1.0, error_kind="529")
    with pytest.raises(openai.InternalServerError):
        gpt.responses.create(model=GPT, input="hi")
    fake.behave(GPT, error_rate=0.0, stream_truncate_after=3)
    events = sse(fake, "/v1/responses", {"model": GPT, "input": "hi"})
    assert [name for name, _ in events] == RESPONSES_TEXT_EVENTS[:3]
    logged = fake.requests(2)
    assert [r["path"] for r in logged] == ["/v1/responses"] * 2
    assert [r["outcome"] for r in logged] == ["error_529", "completed"]
