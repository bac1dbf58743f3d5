"""pydantic-ai with OpenAIChatModel (Chat Completions) and OpenAIResponsesModel (the Responses
API), with only base_url and a key given to its OpenAIProvider."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI
from pydantic_ai import Agent
from pydantic_ai.messages import ToolCallPart, ToolReturnPart
from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
from pydantic_ai.providers.openai import OpenAIProvider

from tests.compat.harness import Answer, Compat, assert_one_version_per_run, search_help_center

ROUTE = "support-agent"
MODELS = [OpenAIChatModel, OpenAIResponsesModel]
ModelClass = type[OpenAIChatModel] | type[OpenAIResponsesModel]


@pytest.fixture
async def provider(compat: Compat) -> AsyncIterator[OpenAIProvider]:
    """OpenAIProvider(base_url=..., api_key=...) keeps a client cached for the process; the
    tests give it one closed on each test's own event loop instead."""
    async with AsyncOpenAI(base_url=compat.openai_url, api_key="sk-anything") as client:
        yield OpenAIProvider(openai_client=client)


def support_agent(
    provider: OpenAIProvider, model_class: ModelClass, output_type: type[object] = str
) -> Agent[None, object]:
    return Agent(
        model_class(ROUTE, provider=provider),
        instructions="Answer in one sentence.",
        tools=[search_help_center],
        output_type=output_type,
    )


def path_of(model_class: ModelClass) -> str:
    return "/v1/responses" if model_class is OpenAIResponsesModel else "/v1/chat/completions"


@pytest.mark.parametrize("model_class", MODELS)
async def test_plain(compat: Compat, provider: OpenAIProvider, model_class: ModelClass) -> None:
    result = await support_agent(provider, model_class).run("Where is my order?")
    assert isinstance(result.output, str) and result.output
    assert compat.fake.last()["path"] == path_of(model_class)


@pytest.mark.parametrize("model_class", MODELS)
async def test_stream(compat: Compat, provider: OpenAIProvider, model_class: ModelClass) -> None:
    async with support_agent(provider, model_class).run_stream("Where is my order?") as result:
        text = "".join([delta async for delta in result.stream_text(delta=True)])
    assert text
    assert compat.sent()[0]["stream"] is True


@pytest.mark.parametrize("model_class", MODELS)
async def test_tool_round_trip(
    compat: Compat, provider: OpenAIProvider, model_class: ModelClass
) -> None:
    compat.call_tools()
    result = await support_agent(provider, model_class).run("How long does shipping take?")
    parts = [part for message in result.all_messages() for part in message.parts]
    calls = [p.tool_name for p in parts if isinstance(p, ToolCallPart)]
    returns = [p.tool_name for p in parts if isinstance(p, ToolReturnPart)]
    assert calls == returns == ["search_help_center"]
    assert isinstance(result.output, str) and result.output


@pytest.mark.parametrize("model_class", MODELS)
async def test_structured_output(
    compat: Compat, provider: OpenAIProvider, model_class: ModelClass
) -> None:
    """output_type by its default: a final_result tool, offered beside the bundle's, with
    tool_choice required."""
    agent = support_agent(provider, model_class, output_type=Answer)
    result = await agent.run("How long does shipping take?")
    assert isinstance(result.output, Answer)
    assert compat.tool_names() == ["search_help_center", "final_result"]
    assert compat.sent()[0]["tool_choice"] == "required"


@pytest.mark.parametrize("model_class", MODELS)
async def test_agent_runs_stay_on_one_version(
    compat: Compat, provider: OpenAIProvider, model_class: ModelClass
) -> None:
    compat.call_tools()
    agent = support_agent(provider, model_class)

    async def run(opening: str) -> None:
        first = await agent.run(opening)
        await agent.run("And if it is late?", message_history=first.all_messages())

    assert_one_version_per_run(await compat.sticky_runs_async(ROUTE, run), calls=4)
