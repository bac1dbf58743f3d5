"""Provider faults: down, slow, resetting, erroring; and a client that leaves mid-stream."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from router.dev.ports import free_port
from testing.servers import ProviderProcess, router_config
from tests.e2e.traffic import leave_mid_stream

HI = [{"role": "user", "content": "hi"}]
REFUND_V14 = "claude-sonnet-4-6-20260215"
REFUND_V15 = "claude-opus-4-7-20260108"
SUPPORT = "gpt-5.4-2026-03-05"


def refund(router: Any, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{router.url}/v1/messages",
        json={"model": "refund-agent", "max_tokens": 5, "messages": HI, **extra},
        timeout=10,
    )


def test_provider_down_is_a_router_502(fake: ProviderProcess, start_router: Any) -> None:
    router = start_router(router_config(f"http://127.0.0.1:{free_port()}"))
    response = refund(router)
    assert response.status_code == 502
    assert response.headers["X-Router-Error"] == "upstream_connect_failed"
    error = response.json()["error"]
    assert error["source"] == "bundle-router"
    assert "cannot connect to provider anthropic" in error["message"]
    assert response.headers["X-Bundle-Version"] in ("v1.4", "v1.5")


def test_slow_provider_is_a_router_504(fake: ProviderProcess, start_router: Any) -> None:
    config = router_config(fake.url)
    config["providers"]["anthropic"]["timeouts"] = {
        "connect": "1s",
        "total": "300ms",
        "stream_idle": "300ms",
    }
    router = start_router(config)
    fake.behave(latency_ms=2000)
    response = refund(router)
    assert response.status_code == 504
    assert response.headers["X-Router-Error"] == "upstream_timeout"
    assert "timeouts" in response.json()["error"]["message"]
    streamed = refund(router, stream=True)
    assert streamed.status_code == 504


def test_stream_that_goes_quiet_ends_with_an_error_event(
    fake: ProviderProcess, start_router: Any
) -> None:
    config = router_config(fake.url)
    config["providers"]["anthropic"]["timeouts"] = {"stream_idle": "300ms"}
    router = start_router(config)
    fake.behave(stream_interval_ms=1500, stream_chunks=3)
    response = refund(router, stream=True)
    assert response.status_code == 200  # the stream had started
    assert response.text.startswith("event: message_start")
    last = response.text.strip().split("\n\n")[-1]
    assert last.startswith("event: error")
    assert "upstream_timeout" in last and "bundle-router" in last


def test_reset_is_a_router_502(fake: ProviderProcess, router: Any) -> None:
    fake.behave(error_rate=1.0, error_kind="reset")
    response = refund(router)
    assert response.status_code == 502
    assert response.headers["X-Router-Error"] == "upstream_connection_broken"
    assert response.json()["error"]["source"] == "bundle-router"


@pytest.mark.parametrize("kind", ["500", "529", "429"])
def test_provider_errors_pass_through_with_their_body(
    kind: str, fake: ProviderProcess, router: Any
) -> None:
    fake.behave(error_rate=1.0, error_kind=kind)
    with (
        anthropic.Anthropic(base_url=router.url, api_key="k", max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(model="refund-agent", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == int(kind)
    body = error.response.json()
    assert "source" not in body["error"]  # the provider's own error, untouched
    assert "X-Router-Error" not in error.response.headers
    assert error.response.headers["X-Bundle-Version"] in ("v1.4", "v1.5")
    if kind == "429":
        assert error.response.headers["retry-after"] == "1"


def test_openai_provider_error_passes_through(fake: ProviderProcess, router: Any) -> None:
    fake.behave(SUPPORT, error_rate=1.0, error_kind="500")
    with (
        openai.OpenAI(base_url=f"{router.url}/v1", api_key="k", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as caught,
    ):
        client.chat.completions.create(model="support-agent", messages=HI)  # type: ignore[arg-type]
    assert caught.value.response.json()["error"]["type"] == "server_error"


def test_client_disconnect_mid_stream_closes_upstream(fake: ProviderProcess, router: Any) -> None:
    fake.behave(stream_interval_ms=200, stream_chunks=40)
    assert b"200 OK" in leave_mid_stream(router.url, b"X-Session-Id: leaver")
    # The provider sees the close long before its 40 x 200 ms stream would have ended.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if fake.last()["outcome"] == "client_closed":
            break
        time.sleep(0.1)
    assert fake.last()["outcome"] == "client_closed"
    assert httpx.get(f"{router.metrics_url}/healthz").status_code == 200
