"""litellm as a client, in its OpenAI form (`openai/<route>`, api_base the router's /v1) and
its Anthropic form (`anthropic/<route>`, api_base the router)."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import litellm
import pytest

from tests.compat import harness
from tests.compat.harness import Answer, Compat, assert_one_version_per_run

FUNCTIONS: dict[str, Callable[..., str]] = {
    "search_help_center": harness.search_help_center,
    "lookup_order": harness.lookup_order,
    "issue_refund": harness.issue_refund,
}
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Fetch an order by its id.",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
FORMS = pytest.mark.parametrize("form", ["openai", "anthropic"])
# litellm's own TypedDicts, as pydantic reads them: nothing the router could change.
pytestmark = pytest.mark.filterwarnings("ignore:Items? .* using the `ReadOnly` qualifier")


def target(compat: Compat, form: str) -> dict[str, str]:
    """What litellm is given: the model with its provider prefix, api_base and a key."""
    if form == "openai":
        return {"model": "openai/support-agent", "api_base": compat.openai_url, "api_key": "k"}
    return {"model": "anthropic/refund-agent", "api_base": compat.anthropic_url, "api_key": "k"}


def route(form: str) -> str:
    return "support-agent" if form == "openai" else "refund-agent"


def tool_loop(compat: Compat, form: str, messages: list[Any]) -> str:
    for _ in range(5):
        response: Any = litellm.completion(messages=messages, tools=TOOLS, **target(compat, form))
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return str(message.content)
        for call in message.tool_calls:
            result = FUNCTIONS[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise AssertionError("the tool loop did not end")


@pytest.fixture(autouse=True, scope="module")
def litellm_settings() -> Iterator[None]:
    litellm.suppress_debug_info = True  # no "Provider List" banner for routes it cannot price
    yield
    # litellm's sync calls make an event loop the thread's current one (get_event_loop) and
    # never close it; closed here, or its collection warns in whichever test comes next.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        left = asyncio.get_event_loop_policy().get_event_loop()
    left.close()
    asyncio.set_event_loop(None)


@FORMS
def test_plain(compat: Compat, form: str) -> None:
    response: Any = litellm.completion(
        messages=[{"role": "user", "content": "Where is my order?"}], **target(compat, form)
    )
    assert response.choices[0].message.content
    assert compat.fake.last()["path"] == (
        "/v1/chat/completions" if form == "openai" else "/v1/messages"
    )


@FORMS
def test_stream(compat: Compat, form: str) -> None:
    stream: Any = litellm.completion(
        messages=[{"role": "user", "content": "Where is my order?"}],
        stream=True,
        **target(compat, form),
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream)


@FORMS
def test_tool_round_trip(compat: Compat, form: str) -> None:
    compat.call_tools()
    messages: list[Any] = [{"role": "user", "content": "Where is my order A-1234?"}]
    assert tool_loop(compat, form, messages)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]


@FORMS
def test_structured_output(compat: Compat, form: str) -> None:
    """response_format with a pydantic model: a json_schema for OpenAI, a forced tool that
    litellm turns back into JSON text for Anthropic."""
    response: Any = litellm.completion(
        messages=[{"role": "user", "content": "How long does shipping take?"}],
        response_format=Answer,
        **target(compat, form),
    )
    Answer.model_validate_json(response.choices[0].message.content)
    sent = compat.sent()[0]
    if form == "openai":
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert sent["tool_choice"] == {"type": "tool", "name": "json_tool_call"}


@FORMS
def test_agent_runs_stay_on_one_version(compat: Compat, form: str) -> None:
    compat.call_tools()

    def run(opening: str) -> None:
        messages: list[Any] = [{"role": "user", "content": opening}]
        tool_loop(compat, form, messages)
        messages.append({"role": "user", "content": "And if it is late?"})
        tool_loop(compat, form, messages)

    assert_one_version_per_run(compat.sticky_runs(route(form), run), calls=4)
