"""The OpenAI Agents SDK on its defaults (the Responses API), with only base_url and a key."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from agents import (
    Agent,
    ItemHelpers,
    Runner,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from tests.compat import harness
from tests.compat.harness import Answer, Compat, assert_one_version_per_run

ROUTE = "support-agent"
search_help_center = function_tool(harness.search_help_center)


@pytest.fixture(autouse=True)
async def openai_client(compat: Compat) -> AsyncIterator[None]:
    """The SDK's client, opened and closed on the test's event loop."""
    set_tracing_disabled(True)
    async with AsyncOpenAI(base_url=compat.openai_url, api_key="sk-anything") as client:
        set_default_openai_client(client)
        yield


def support_agent(**kwargs: object) -> Agent:
    return Agent(
        name="support",
        model=ROUTE,
        instructions="Answer in one sentence.",
        tools=[search_help_center],
        **kwargs,  # type: ignore[arg-type]
    )


async def test_plain(compat: Compat) -> None:
    result = await Runner.run(support_agent(), "Where is my order?")
    assert result.final_output
    assert compat.sent()[0]["input"][0]["content"] == "Where is my order?"


async def test_stream() -> None:
    result = Runner.run_streamed(support_agent(), "Where is my order?")
    deltas = [
        event.data.delta
        async for event in result.stream_events()
        if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"
    ]
    assert deltas and "".join(deltas) == result.final_output


async def test_tool_round_trip(compat: Compat) -> None:
    compat.call_tools()
    result = await Runner.run(support_agent(), "How long does shipping take?")
    kinds = [item.type for item in result.new_items]
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert ItemHelpers.text_message_outputs(result.new_items) == result.final_output


async def test_structured_output(compat: Compat) -> None:
    """output_type: a json_schema text.format, which the router passes on as sent."""
    result = await Runner.run(support_agent(output_type=Answer), "How long does shipping take?")
    assert isinstance(result.final_output, Answer)
    assert compat.sent()[0]["text"]["format"]["schema"] == Answer.model_json_schema() | {
        "additionalProperties": False
    }


@pytest.mark.parametrize("chained", [False, True], ids=["history", "previous_response_id"])
async def test_agent_runs_stay_on_one_version(compat: Compat, chained: bool) -> None:
    """Two user turns, each a tool round trip. The SDK re-sends the history each turn, or
    with auto_previous_response_id sends only the new items and the previous response's id."""
    compat.call_tools()
    agent = support_agent()

    async def run(opening: str) -> None:
        first = await Runner.run(agent, opening, auto_previous_response_id=chained)
        follow_up = {"role": "user", "content": "And if it is late?"}
        if chained:
            await Runner.run(
                agent,
                [follow_up],  # type: ignore[list-item]
                previous_response_id=first.last_response_id,
                auto_previous_response_id=True,
            )
        else:
            await Runner.run(agent, [*first.to_input_list(), follow_up])  # type: ignore[list-item]

    assert_one_version_per_run(await compat.sticky_runs_async(ROUTE, run), calls=4)
