"""A client's own tools through the router: structured output done as a forced tool call
(instructor, pydantic-ai, LangChain's with_structured_output do it so) and an agent's own
functions reach the provider beside the bundle's tools, and the call comes back."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value

ANSWER_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"refund_approved": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["refund_approved", "reason"],
}


@pytest.fixture
def tools_router(fake: ProviderProcess, start_router: Callable[..., Router]) -> Router:
    return start_router(router_config(fake.url))


def test_anthropic_structured_output_through_a_forced_client_tool(
    tools_router: Router, fake: ProviderProcess
) -> None:
    with anthropic.Anthropic(base_url=tools_router.url, api_key="k", max_retries=0) as client:
        message = client.messages.create(
            model="refund-agent",
            max_tokens=200,
            messages=[{"role": "user", "content": "Refund order A-1?"}],
            tools=[{"name": "FinalAnswer", "input_schema": ANSWER_SCHEMA}],
            tool_choice={"type": "tool", "name": "FinalAnswer"},
        )
    calls = [block for block in message.content if block.type == "tool_use"]
    assert [call.name for call in calls] == ["FinalAnswer"]
    assert set(calls[0].input) >= {"refund_approved", "reason"}
    sent = fake.last()["body"]
    names = [tool["name"] for tool in sent["tools"]]
    assert names[-1] == "FinalAnswer" and len(names) > 1  # the bundle's tools, then the client's
    assert sent["tool_choice"] == {"type": "tool", "name": "FinalAnswer"}
    metrics = scrape(tools_router)
    counted = sum(
        value(metrics, "router_tool_calls_total", route="refund-agent", version=v, result=r)
        for v in ("v1.4", "v1.5")
        for r in ("client_tool",)
    )
    failures = sum(
        value(metrics, "router_tool_calls_total", route="refund-agent", version=v, result=r)
        for v in ("v1.4", "v1.5")
        for r in ("unknown_tool", "invalid_json", "invalid_arguments")
    )
    assert (counted, failures) == (1, 0)


def test_openai_agent_tools_and_a_forced_choice_go_upstream(
    tools_router: Router, fake: ProviderProcess
) -> None:
    tool: Any = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
    }
    with openai.OpenAI(base_url=f"{tools_router.url}/v1", api_key="k", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="support-agent",
            user="customer-1",
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    calls = completion.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["get_weather"]  # type: ignore[union-attr]
    json.loads(calls[0].function.arguments)  # type: ignore[union-attr]
    sent = fake.last()["body"]
    assert [t["function"]["name"] for t in sent["tools"]][-1] == "get_weather"


def test_a_forced_tool_the_route_does_not_send_is_a_clear_400(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url)
    config["routes"]["refund-agent"]["client_tools"] = "replace"
    router = start_router(config)
    with (
        anthropic.Anthropic(base_url=router.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError) as caught,
    ):
        client.messages.create(
            model="refund-agent",
            max_tokens=200,
            messages=[{"role": "user", "content": "Refund order A-1?"}],
            tools=[{"name": "FinalAnswer", "input_schema": ANSWER_SCHEMA}],
            tool_choice={"type": "tool", "name": "FinalAnswer"},
        )
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["code"] == "tool_not_offered" and error["source"] == "bundle-router"
    assert "client_tools: merge" in error["message"]


def test_the_openai_docs_stream_loop_works_and_usage_is_still_counted(
    tools_router: Router, fake: ProviderProcess
) -> None:
    """The router asks for usage (cost needs it); a client that did not ask gets no
    usage-only chunk, whose empty `choices` would break `chunk.choices[0]`."""
    with openai.OpenAI(base_url=f"{tools_router.url}/v1", api_key="k", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="support-agent",
            user="customer-2",
            messages=[{"role": "user", "content": "Where is my order?"}],
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
        assert text
        assert fake.last()["body"]["stream_options"] == {"include_usage": True}
        asked = client.chat.completions.create(
            model="support-agent",
            user="customer-2",
            messages=[{"role": "user", "content": "Where is my order?"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = [chunk.usage for chunk in asked if chunk.usage is not None]
        assert len(usage) == 1 and usage[0].completion_tokens > 0
    metrics = scrape(tools_router)
    output = sum(
        value(metrics, "router_tokens_total", route="support-agent", version=v, kind="output")
        for v in ("v2.0", "v2.1")
    )
    incomplete = sum(
        value(metrics, "router_usage_incomplete_total", route="support-agent", version=v)
        for v in ("v2.0", "v2.1")
    )
    assert output > usage[0].completion_tokens and incomplete == 0  # both streams counted
