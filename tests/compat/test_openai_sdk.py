"""The OpenAI SDK on its own, Chat Completions and Responses, with only base_url and a key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.compat.harness import Answer, Compat, assert_one_version_per_run, search_help_center

ROUTE = "support-agent"
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "search_help_center",
            "description": "Full-text search over the help center articles.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    }
]
TOOLS_RESPONSES: Any = [{"type": "function", **TOOLS[0]["function"]}]


@pytest.fixture
def client(compat: Compat) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=compat.openai_url, api_key="sk-anything") as opened:
        yield opened


def tool_loop(client: openai.OpenAI, messages: list[Any]) -> str:
    """The documented function-calling loop: run each call, send the results, until text."""
    for _ in range(5):
        message = (
            client.chat.completions.create(model=ROUTE, messages=messages, tools=TOOLS)
            .choices[0]
            .message
        )
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        for call in message.tool_calls:
            assert call.type == "function"
            result = search_help_center(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise AssertionError("the tool loop did not end")


def test_plain(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=ROUTE, messages=[{"role": "user", "content": "Where is my order?"}]
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["X-Bundle-Version"] in ("v2.0", "v2.1")


def test_stream_as_the_docs_loop_it(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=ROUTE, messages=[{"role": "user", "content": "Where is my order?"}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream)


def test_tool_round_trip(compat: Compat, client: openai.OpenAI) -> None:
    compat.call_tools()
    messages: list[Any] = [{"role": "user", "content": "How long does shipping take?"}]
    assert tool_loop(client, messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]


def test_structured_output_with_a_json_schema(compat: Compat, client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=ROUTE,
        messages=[{"role": "user", "content": "How long does shipping take?"}],
        response_format=Answer,
    )
    assert isinstance(completion.choices[0].message.parsed, Answer)
    assert compat.sent()[0]["response_format"]["type"] == "json_schema"


def test_responses_plain_stream_and_chain(client: openai.OpenAI) -> None:
    first = client.responses.create(model=ROUTE, input="Where is my order?")
    assert first.output_text
    with client.responses.stream(
        model=ROUTE, input="And the refund?", previous_response_id=first.id
    ) as stream:
        assert "".join(e.delta for e in stream if e.type == "response.output_text.delta")


def test_chat_agent_runs_stay_on_one_version(compat: Compat, client: openai.OpenAI) -> None:
    compat.call_tools()

    def run(opening: str) -> None:
        messages: list[Any] = [{"role": "user", "content": opening}]
        tool_loop(client, messages)
        messages.append({"role": "user", "content": "And if it is late?"})
        tool_loop(client, messages)

    assert_one_version_per_run(compat.sticky_runs(ROUTE, run), calls=4)


def test_chained_responses_runs_stay_on_one_version(compat: Compat, client: openai.OpenAI) -> None:
    """Each later turn carries only previous_response_id and the new input: the router sends
    it where its chain was answered."""
    compat.call_tools()

    def run(opening: str) -> None:
        response = client.responses.create(model=ROUTE, input=opening, tools=TOOLS_RESPONSES)
        for follow_up in (None, "And if it is late?"):
            outputs: list[Any] = [
                {
                    "type": "function_call_output",
                    "call_id": item.call_id,
                    "output": search_help_center(**json.loads(item.arguments)),
                }
                for item in response.output
                if item.type == "function_call"
            ]
            if follow_up:
                outputs.append({"role": "user", "content": follow_up})
            response = client.responses.create(
                model=ROUTE, previous_response_id=response.id, input=outputs, tools=TOOLS_RESPONSES
            )

    assert_one_version_per_run(compat.sticky_runs(ROUTE, run), calls=3)
