"""The Anthropic SDK on its own, with only base_url and a key."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.compat.harness import (
    Answer,
    Compat,
    assert_one_version_per_run,
    issue_refund,
    lookup_order,
)

ROUTE = "refund-agent"
TOOLS: Any = [
    {
        "name": "lookup_order",
        "description": "Fetch an order by its id.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
]
RUN: dict[str, Callable[..., str]] = {"lookup_order": lookup_order, "issue_refund": issue_refund}


@pytest.fixture
def client(compat: Compat) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=compat.anthropic_url, api_key="sk-ant-anything") as opened:
        yield opened


def tool_loop(client: anthropic.Anthropic, messages: list[Any]) -> str:
    """The documented tool-use loop: run each tool_use block, send the tool_result blocks."""
    for _ in range(5):
        message = client.messages.create(
            model=ROUTE, max_tokens=1024, messages=messages, tools=TOOLS
        )
        messages.append({"role": "assistant", "content": message.content})
        uses = [block for block in message.content if block.type == "tool_use"]
        if message.stop_reason != "tool_use":
            assert not uses
            return "".join(block.text for block in message.content if block.type == "text")
        messages.append(
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "content": RUN[use.name](**use.input),
                    }
                    for use in uses
                ],
            }
        )
    raise AssertionError("the tool loop did not end")


def test_plain(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model=ROUTE, max_tokens=256, messages=[{"role": "user", "content": "Refund A-1?"}]
    )
    assert raw.parse().content[0].type == "text"
    assert raw.headers["X-Bundle-Version"] in ("v1.4", "v1.5")


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=ROUTE, max_tokens=256, messages=[{"role": "user", "content": "Refund A-1?"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0


def test_tool_round_trip(compat: Compat, client: anthropic.Anthropic) -> None:
    compat.call_tools()
    messages: list[Any] = [{"role": "user", "content": "Refund order A-1234, please."}]
    assert tool_loop(client, messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]


def test_structured_output_through_a_forced_tool(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model=ROUTE,
        max_tokens=256,
        messages=[{"role": "user", "content": "How long does a refund take?"}],
        tools=[{"name": "Answer", "input_schema": Answer.model_json_schema()}],
        tool_choice={"type": "tool", "name": "Answer"},
    )
    [use] = [block for block in message.content if block.type == "tool_use"]
    Answer.model_validate(use.input)


def test_agent_runs_stay_on_one_version(compat: Compat, client: anthropic.Anthropic) -> None:
    compat.call_tools()

    def run(opening: str) -> None:
        messages: list[Any] = [{"role": "user", "content": opening}]
        tool_loop(client, messages)
        messages.append({"role": "user", "content": "And if it is late?"})
        tool_loop(client, messages)

    assert_one_version_per_run(compat.sticky_runs(ROUTE, run), calls=4)
