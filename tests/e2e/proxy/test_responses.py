"""The OpenAI Responses API through the router, with the official SDK: injection, JSON and
streams, usage and tool calls counted, chained turns kept on the version that answered."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from router.proxy.routing import BASIS_POINTS, bucket_of
from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value

SUPPORT = "gpt-5.4-2026-03-05"


@pytest.fixture
def responses_router(fake: ProviderProcess, start_router: Callable[..., Router]) -> Router:
    config = router_config(fake.url)
    config["routes"]["support-agent"]["guardrails"] = "off"  # tool-call tests stay on v2.1
    return start_router(config)


@pytest.fixture
def client(responses_router: Router) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{responses_router.url}/v1", api_key="k", max_retries=0) as opened:
        yield opened


def user_on_active(route: str = "support-agent", candidate_points: int = 1000) -> str:
    """A `user` whose bucket the active version serves (the candidate has buckets 0..999)."""
    return next(
        f"customer-{n}"
        for n in range(1000)
        if bucket_of(route, f"customer-{n}") >= candidate_points
    )


def opening_on_active(route: str = "support-agent", candidate_points: int = 1000) -> str:
    """An opening message whose fingerprint the active version serves."""
    assert BASIS_POINTS == 10_000  # support-agent's candidate holds 10 %: buckets 0..999
    return next(
        text
        for text in (f"And then? ({n})" for n in range(1000))
        if bucket_of(route, f"\x00opening\x00{text}") >= candidate_points
    )


def test_a_responses_request_gets_the_bundle(
    client: openai.OpenAI, fake: ProviderProcess, responses_router: Router
) -> None:
    raw = client.responses.with_raw_response.create(
        model="support-agent",
        input="Where is my order?",
        instructions="You are a pirate.",
        user="customer-1",
    )
    response = raw.parse()
    assert response.output_text
    assert raw.headers["X-Bundle-Version"] in ("v2.0", "v2.1")
    sent = fake.last()["body"]
    assert sent["model"] == SUPPORT
    assert sent["instructions"].endswith("You are a pirate.")  # client_system: append
    assert sent["instructions"].startswith("You are Acme")  # the bundle's prompt first
    assert [t["name"] for t in sent["tools"]] == ["search_help_center"]
    assert sent["tools"][0]["type"] == "function" and "parameters" in sent["tools"][0]
    assert sent["max_output_tokens"] == 800 and sent["temperature"] == 0.3
    assert "max_completion_tokens" not in sent
    metrics = scrape(responses_router)
    version = raw.headers["X-Bundle-Version"]
    rv = {"route": "support-agent", "version": version}
    assert response.usage is not None
    assert (
        value(metrics, "router_tokens_total", kind="output", **rv) == response.usage.output_tokens
    )


def test_a_streamed_response_is_relayed_and_counted(
    client: openai.OpenAI, fake: ProviderProcess, responses_router: Router
) -> None:
    fake.behave(SUPPORT, tool_call_rate=1.0)
    user = user_on_active()
    with client.responses.stream(model="support-agent", input="Find shipping", user=user) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_response()
    assert {"response.created", "response.completed"} <= kinds
    calls = [item for item in final.output if item.type == "function_call"]
    assert [call.name for call in calls] == ["search_help_center"]
    metrics = scrape(responses_router)
    rv = {"route": "support-agent", "version": "v2.0"}
    assert value(metrics, "router_tool_calls_total", result="valid", **rv) == 1
    assert value(metrics, "router_usage_incomplete_total", **rv) == 0
    assert value(metrics, "router_requests_total", outcome="ok", **rv) == 1


def test_a_chained_turn_stays_on_the_version_that_answered(
    client: openai.OpenAI, responses_router: Router
) -> None:
    """The canary answers the first turn (pinned by override). The second turn carries only
    `previous_response_id` and new input, no session key, and that input alone would go to
    the control: it stays on the canary, where its chain lives."""
    first = client.responses.with_raw_response.create(
        model="support-agent",
        input="Hi",
        extra_headers={"X-Bundle-Version": "v2.1"},
    )
    assert first.headers["X-Bundle-Version"] == "v2.1"
    follow_up = opening_on_active()
    second = client.responses.with_raw_response.create(
        model="support-agent", input=follow_up, previous_response_id=first.parse().id
    )
    assert second.headers["X-Bundle-Version"] == "v2.1"
    alone = client.responses.with_raw_response.create(model="support-agent", input=follow_up)
    assert alone.headers["X-Bundle-Version"] == "v2.0"
    stored = client.responses.retrieve(first.parse().id)
    assert stored.id == first.parse().id and stored.output_text


def test_unknown_stored_responses_and_wrong_routes_are_clear(responses_router: Router) -> None:
    missing = httpx.get(f"{responses_router.url}/v1/responses/resp_nowhere", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_response"
    wrong = httpx.post(
        f"{responses_router.url}/v1/responses",
        json={"model": "refund-agent", "input": "hi"},
        timeout=5,
    )
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "wrong_dialect"
    bad: dict[str, Any] = {"model": "support-agent", "input": 7}
    refused = httpx.post(f"{responses_router.url}/v1/responses", json=bad, timeout=5)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_input"
