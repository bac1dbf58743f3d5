"""Bad requests get a clear error in the client's dialect, and the router stays healthy."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

from testing.servers import ProviderProcess, Router, router_config

HI = [{"role": "user", "content": "hi"}]


def assert_router_error(response: httpx.Response, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["X-Router-Error"] == code
    body = response.json()
    error = body["error"]
    assert error["source"] == "bundle-router"
    assert error["code"] == code
    for word in words:
        assert word in error["message"], error["message"]


def assert_healthy(router: Router) -> None:
    assert httpx.get(f"{router.metrics_url}/healthz").status_code == 200
    ok = httpx.post(
        f"{router.url}/v1/messages",
        json={"model": "refund-agent", "max_tokens": 5, "messages": HI},
    )
    assert ok.status_code == 200


def test_invalid_json(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/messages",
        content=b'{"model": "refund-agent", ',
        headers={"Content-Type": "application/json"},
    )
    assert_router_error(response, 400, "invalid_json", "not valid JSON")
    assert response.json()["type"] == "error"  # Anthropic's error shape
    assert_healthy(router)


def test_unknown_route_lists_the_known_ones(router: Router, fake: ProviderProcess) -> None:
    with (
        openai.OpenAI(base_url=f"{router.url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.NotFoundError) as caught,
    ):
        client.chat.completions.create(model="refund-agnet", messages=HI)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "unknown route 'refund-agnet'" in message
    assert "refund-agent" in message and "support-agent" in message
    assert_healthy(router)


def test_missing_model(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(f"{router.url}/v1/chat/completions", json={"messages": HI})
    assert_router_error(response, 400, "missing_model", "no 'model'", "refund-agent")
    assert "error" in response.json() and "type" not in response.json()  # OpenAI's shape


def test_wrong_content_type(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/messages",
        content=b"model=refund-agent",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_router_error(response, 415, "unsupported_media_type", "application/json")
    assert_healthy(router)


def test_body_over_the_limit(fake: ProviderProcess, start_router: Any) -> None:
    router = start_router(router_config(fake.url, limits={"max_body_bytes": 4096}))
    response = httpx.post(
        f"{router.url}/v1/messages",
        json={
            "model": "refund-agent",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x" * 10_000}],
        },
    )
    assert_router_error(response, 413, "request_too_large", "4096 bytes", "max_body_bytes")
    assert_healthy(router)


def test_unknown_version_override(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        json={"model": "support-agent", "messages": HI},
        headers={"X-Bundle-Version": "v9.9"},
    )
    assert_router_error(response, 400, "unknown_version", "v9.9", "v2.0", "v2.1")


def test_override_refused_where_not_allowed(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/messages",
        json={"model": "refund-agent", "max_tokens": 5, "messages": HI},
        headers={"X-Bundle-Version": "v1.5"},
    )
    assert_router_error(response, 400, "override_not_allowed", "allow_version_override")


def test_wrong_dialect_names_the_right_endpoint(router: Router, fake: ProviderProcess) -> None:
    with (
        openai.OpenAI(base_url=f"{router.url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(model="refund-agent", messages=HI)  # type: ignore[arg-type]
    assert "POST /v1/messages" in str(caught.value)


def test_missing_session_key_refused_when_configured(
    fake: ProviderProcess, start_router: Any
) -> None:
    config = router_config(fake.url)
    config["routes"]["refund-agent"]["session_key"] = {
        "header": "X-Session-Id",
        "missing": "reject",
    }
    router = start_router(config)
    with anthropic.Anthropic(base_url=router.url, api_key="k", max_retries=0) as client:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model="refund-agent", max_tokens=5, messages=HI)  # type: ignore[arg-type]
        assert "X-Session-Id" in str(caught.value)
        ok = client.messages.create(
            model="refund-agent",
            max_tokens=5,
            messages=HI,  # type: ignore[arg-type]
            extra_headers={"X-Session-Id": "s-1"},
        )
    assert ok.content


def test_messages_not_a_list(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/chat/completions",
        json={"model": "support-agent", "messages": "hi"},
    )
    assert_router_error(response, 400, "invalid_messages", "'messages' must be a list")
