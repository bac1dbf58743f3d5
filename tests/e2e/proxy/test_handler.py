"""The data path end to end: official SDKs -> router -> fake provider, on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from testing.servers import ProviderProcess, Router, router_config

REFUND_V14 = "claude-sonnet-4-6-20260215"
REFUND_V15 = "claude-opus-4-7-20260108"
SUPPORT = "gpt-5.4-2026-03-05"


_clients: list[anthropic.Anthropic | openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every SDK client a test opened is closed after it (an open one leaks its sockets)."""
    yield
    while _clients:
        _clients.pop().close()


def anthropic_client(router: Router, **kwargs: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=router.url, api_key="client-key", max_retries=0, **kwargs)
    _clients.append(client)
    return client


def openai_client(router: Router, **kwargs: Any) -> openai.OpenAI:
    client = openai.OpenAI(
        base_url=f"{router.url}/v1", api_key="client-key", max_retries=0, **kwargs
    )
    _clients.append(client)
    return client


def session_on(route: str, version: str, router: Router, dialect: str) -> str:
    """A session key that the router sends to `version` (found by asking it)."""
    for n in range(400):
        key = f"probe-{n}"
        if dialect == "anthropic":
            response = httpx.post(
                f"{router.url}/v1/messages",
                json={
                    "model": route,
                    "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}],
                },
                headers={"X-Session-Id": key},
            )
        else:
            response = httpx.post(
                f"{router.url}/v1/chat/completions",
                json={"model": route, "user": key, "messages": [{"role": "user", "content": "hi"}]},
            )
        if response.headers["X-Bundle-Version"] == version:
            return key
    raise AssertionError(f"no session key found for {route} {version}")


def test_anthropic_json_gets_pinned_bundle(router: Router, fake: ProviderProcess) -> None:
    client = anthropic_client(router)
    raw = client.messages.with_raw_response.create(
        model="refund-agent",
        max_tokens=64,
        system="You are a pirate.",
        messages=[{"role": "user", "content": "Refund order A-1234 please"}],
        extra_headers={"X-Session-Id": session_on("refund-agent", "v1.4", router, "anthropic")},
    )
    message = raw.parse()
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Thanks for reaching out")
    assert raw.headers["X-Bundle-Version"] == "v1.4"
    assert len(raw.headers["X-Bundle-Digest"]) == 12
    assert raw.headers["X-Request-Id"]

    sent = fake.last()["body"]
    assert sent["model"] == REFUND_V14
    assert sent["system"].startswith("You are the refund agent for Acme Outfitters.")
    assert "pirate" not in str(sent["system"])  # client_system: replace
    assert [t["name"] for t in sent["tools"]] == ["lookup_order", "issue_refund"]
    assert sent["tools"][0]["input_schema"]["required"] == ["order_id"]
    assert sent["temperature"] == 0.2  # pinned by the bundle
    assert sent["max_tokens"] == 64  # the client's value beats the bundle default


def test_anthropic_prompt_caching_marks_system_block(router: Router, fake: ProviderProcess) -> None:
    client = anthropic_client(router)
    raw = client.messages.with_raw_response.create(
        model="refund-agent",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Session-Id": session_on("refund-agent", "v1.5", router, "anthropic")},
    )
    assert raw.headers["X-Bundle-Version"] == "v1.5"
    sent = fake.last()["body"]
    assert sent["model"] == REFUND_V15
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert "Partial refunds need a reason" in sent["system"][0]["text"]


def test_openai_json_gets_pinned_bundle(router: Router, fake: ProviderProcess) -> None:
    client = openai_client(router)
    raw = client.chat.completions.with_raw_response.create(
        model="support-agent",
        user="customer-42",
        temperature=1.5,
        messages=[
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Where is my order?"},
        ],
    )
    completion = raw.parse()
    content = completion.choices[0].message.content
    assert content is not None and content.startswith("Thanks for reaching out")
    assert raw.headers["X-Bundle-Version"] in ("v2.0", "v2.1")
    sent = fake.last()["body"]
    assert sent["model"] == SUPPORT
    # client_system: append -> the bundle prompt first, the client's after it
    assert sent["messages"][0]["role"] == "system"
    assert sent["messages"][0]["content"].startswith("You are Acme Outfitters' support agent.")
    assert sent["messages"][1] == {"role": "system", "content": "Answer in French."}
    assert sent["tools"][0]["type"] == "function"
    assert sent["tools"][0]["function"]["name"] == "search_help_center"
    assert sent["temperature"] == 0.3  # pinned: the client's 1.5 does not get through
    assert sent["max_completion_tokens"] == 800  # a default the client did not set


def test_anthropic_stream_relays_events_as_they_come(router: Router, fake: ProviderProcess) -> None:
    fake.behave(REFUND_V14, stream_chunks=4, stream_interval_ms=250)
    client = anthropic_client(router)
    key = session_on("refund-agent", "v1.4", router, "anthropic")
    received: list[tuple[str, float]] = []
    with client.messages.stream(
        model="refund-agent",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Session-Id": key},
    ) as stream:
        for event in stream:
            received.append((event.type, time.time()))
        final = stream.get_final_message()
    assert final.usage.output_tokens > 0
    assert "".join(b.text for b in final.content if b.type == "text").startswith("Thanks")
    types = [t for t, _ in received]
    assert types[0] == "message_start" and "message_stop" in types
    record = fake.last()
    assert record["outcome"] == "completed"
    # The first event reached the client before the provider had even produced the last.
    assert received[0][1] < record["received_at"] + 3 * 0.25


def test_openai_stream_asks_for_usage_and_relays_only_what_the_client_asked_for(
    router: Router, fake: ProviderProcess
) -> None:
    client = openai_client(router)
    chunks = list(
        client.chat.completions.create(
            model="support-agent",
            user="customer-7",
            stream=True,
            messages=[{"role": "user", "content": "Where is my order?"}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks)  # every chunk has one
    assert text.startswith("Thanks for reaching out")
    assert all(c.usage is None for c in chunks)  # the client did not ask for usage
    sent = fake.last()["body"]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == SUPPORT


def test_session_stays_on_its_version(router: Router, fake: ProviderProcess) -> None:
    versions = set()
    for _ in range(20):
        response = httpx.post(
            f"{router.url}/v1/messages",
            json={
                "model": "refund-agent",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"X-Session-Id": "sticky-session-1"},
        )
        versions.add(response.headers["X-Bundle-Version"])
    assert len(versions) == 1


def test_body_field_session_key(router: Router, fake: ProviderProcess) -> None:
    """support-agent keys sessions on the OpenAI `user` field: both versions get users."""
    seen: dict[str, list[int]] = {}
    for n in range(200):
        response = httpx.post(
            f"{router.url}/v1/chat/completions",
            json={
                "model": "support-agent",
                "user": f"user-{n}",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        seen.setdefault(response.headers["X-Bundle-Version"], []).append(n)
    assert set(seen) == {"v2.0", "v2.1"}
    for n in seen["v2.1"][:5]:
        again = httpx.post(
            f"{router.url}/v1/chat/completions",
            json={
                "model": "support-agent",
                "user": f"user-{n}",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert again.headers["X-Bundle-Version"] == "v2.1"


def test_version_override_where_allowed(router: Router, fake: ProviderProcess) -> None:
    """Every session goes to the pinned v2.1, though the weights give it only 10%."""
    client = openai_client(router)
    for n in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model="support-agent",
            user=f"override-{n}",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Bundle-Version": "v2.1"},
        )
        assert raw.headers["X-Bundle-Version"] == "v2.1"


def test_request_id_is_kept(router: Router, fake: ProviderProcess) -> None:
    response = httpx.post(
        f"{router.url}/v1/messages",
        json={
            "model": "refund-agent",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"X-Request-Id": "req-from-client-1"},
    )
    assert response.headers["X-Request-Id"] == "req-from-client-1"


def test_models_lists_routes(router: Router) -> None:
    client = openai_client(router)
    assert sorted(m.id for m in client.models.list()) == ["refund-agent", "support-agent"]


def test_client_key_and_stray_headers_stay_behind(router: Router, fake: ProviderProcess) -> None:
    httpx.post(
        f"{router.url}/v1/messages",
        json={
            "model": "refund-agent",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={
            "x-api-key": "sk-client-secret",
            "Authorization": "Bearer sk-client-secret",
            "anthropic-beta": "prompt-caching-2024-07-31",
            "X-Forwarded-For": "10.0.0.9",
            "X-Custom": "nope",
            "Host": "evil.example",
        },
    ).raise_for_status()
    headers = fake.last()["headers"]
    assert "sk-client-secret" not in str(headers)
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert headers["anthropic-version"] == "2023-06-01"
    assert "x-forwarded-for" not in headers and "x-custom" not in headers
    assert headers["host"] == fake.url.removeprefix("http://")


def test_provider_key_from_env_replaces_client_key(
    fake: ProviderProcess, start_router: Any
) -> None:
    router = start_router(router_config(fake.url), env={"ANTHROPIC_API_KEY": "sk-router-key"})
    anthropic_client(router).messages.create(
        model="refund-agent", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    headers = fake.last()["headers"]
    assert headers["x-api-key"] == "sk-router-key"
    assert "client-key" not in str(headers)
    assert "sk-router-key" not in router.process.output()


def test_client_key_passes_only_when_configured(fake: ProviderProcess, start_router: Any) -> None:
    config = router_config(fake.url)
    config["providers"]["openai"]["pass_client_key"] = True
    router = start_router(config)
    openai_client(router).chat.completions.create(
        model="support-agent", messages=[{"role": "user", "content": "hi"}]
    )
    assert fake.last()["headers"]["authorization"] == "Bearer client-key"


@pytest.mark.parametrize("policy", ["replace", "append", "reject"])
def test_client_system_policy_anthropic(
    policy: str, fake: ProviderProcess, start_router: Any
) -> None:
    config = router_config(fake.url)
    config["routes"]["refund-agent"]["client_system"] = policy
    router = start_router(config)
    client = anthropic_client(router)
    request: dict[str, Any] = {
        "model": "refund-agent",
        "max_tokens": 5,
        "system": "Client rules.",
        "messages": [{"role": "user", "content": "hi"}],
    }
    if policy == "reject":
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(**request)
        assert "refuses one from the client" in str(caught.value)
        return
    client.messages.create(**request)
    system = fake.last()["body"]["system"]
    if policy == "replace":
        assert "Client rules." not in str(system)
    else:
        texts = [block["text"] for block in system]
        assert texts[0].startswith("You are the refund agent") and texts[-1] == "Client rules."
