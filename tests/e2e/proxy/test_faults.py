"""Provider faults through a fault-injecting TCP proxy: every one gets the right 502/504 or
an SSE error event in the client's dialect, a cut stream is never counted complete, and the
router lets go of every broken upstream connection."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from router.dev.ports import free_port
from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.faults import FaultProxy

BODY = {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**BODY, "stream": True}
HEADERS = {"X-Session-Id": "faults"}


@pytest.fixture
def proxy(fake: ProviderProcess) -> Iterator[FaultProxy]:
    running = FaultProxy(int(fake.url.rsplit(":", 1)[1]))
    yield running
    running.stop()


def faulty_router(start: Callable[..., Router], provider_url: str) -> Router:
    config = router_config(provider_url)
    for provider in config["providers"].values():
        provider["timeouts"] = {"connect": "1s", "total": "2s", "stream_idle": "1s"}
    return start(config)


def all_closed(proxy: FaultProxy, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while proxy.open and time.monotonic() < deadline:
        time.sleep(0.05)
    return proxy.open == 0


def events_of(router: Router, body: dict[str, Any]) -> tuple[int, list[str]]:
    with httpx.stream(
        "POST", f"{router.url}/v1/messages", json=body, headers=HEADERS, timeout=15
    ) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith(("event:", "data:"))]
        return answer.status_code, lines


def test_connection_refused_is_a_502(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = faulty_router(start_router, f"http://127.0.0.1:{free_port()}")
    answer = httpx.post(f"{router.url}/v1/messages", json=BODY, headers=HEADERS)
    assert answer.status_code == 502 and answer.json()["type"] == "error"  # Anthropic's shape
    assert answer.json()["error"]["code"] == "upstream_connect_failed"


@pytest.mark.parametrize("body", [BODY, STREAM], ids=["json", "stream"])
def test_a_provider_that_accepts_and_hangs_is_a_504(
    body: dict[str, Any], proxy: FaultProxy, start_router: Callable[..., Router]
) -> None:
    router = faulty_router(start_router, proxy.url)
    proxy.set("hang")
    started = time.monotonic()
    answer = httpx.post(f"{router.url}/v1/messages", json=body, headers=HEADERS, timeout=15)
    assert answer.status_code == 504 and answer.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5
    assert all_closed(proxy)


def test_a_reset_mid_body_is_a_502(proxy: FaultProxy, start_router: Callable[..., Router]) -> None:
    router = faulty_router(start_router, proxy.url)
    proxy.set("reset_mid_body", after=250)  # the headers and part of the JSON
    answer = httpx.post(f"{router.url}/v1/messages", json=BODY, headers=HEADERS)
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_connection_broken"
    assert all_closed(proxy)


@pytest.mark.parametrize("fault", ["reset_mid_body", "close_mid_body"])
def test_a_stream_cut_short_ends_with_an_error_event_and_is_not_complete(
    fault: str, fake: ProviderProcess, proxy: FaultProxy, start_router: Callable[..., Router]
) -> None:
    router = faulty_router(start_router, proxy.url)
    fake.behave(stream_chunks=20, stream_interval_ms=20)
    proxy.set(fault, after=900)  # the headers and the first few events
    status, lines = events_of(router, STREAM)
    assert status == 200
    assert "event: error" in lines and "event: message_stop" not in lines, lines
    for line in lines:  # no half event relayed: every data line the client got is whole JSON
        if line.startswith("data:"):
            orjson.loads(line.removeprefix("data:"))
    error = next(line for line in lines if line.startswith("data:") and '"type":"error"' in line)
    assert '"source":"bundle-router"' in error
    metrics = scrape(router)
    versions = {"v1.4", "v1.5"}
    incomplete = sum(
        value(metrics, "router_usage_incomplete_total", route="refund-agent", version=v)
        for v in versions
    )
    complete = sum(
        value(metrics, "router_requests_total", route="refund-agent", version=v, outcome="ok")
        for v in versions
    )
    assert incomplete == 1 and complete == 0
    assert all_closed(proxy)


def test_a_drip_of_one_byte_a_second_times_out(
    proxy: FaultProxy, start_router: Callable[..., Router]
) -> None:
    router = faulty_router(start_router, proxy.url)
    proxy.set("drip")
    answer = httpx.post(f"{router.url}/v1/messages", json=BODY, headers=HEADERS, timeout=15)
    assert answer.status_code == 504
    assert all_closed(proxy)


def test_a_client_leaving_an_endless_stream_closes_the_upstream(
    proxy: FaultProxy, start_router: Callable[..., Router]
) -> None:
    router = faulty_router(start_router, proxy.url)
    proxy.set("endless")
    with httpx.stream(
        "POST", f"{router.url}/v1/messages", json=STREAM, headers=HEADERS, timeout=15
    ) as answer:
        seen = 0
        for line in answer.iter_lines():
            seen += line.startswith("event: content_block_delta")
            if seen == 5:
                break  # the client has had enough and hangs up
    assert proxy.open <= 1
    assert all_closed(proxy), "the router kept reading an endless stream nobody wanted"
