"""Limits: JSON answers for unknown endpoints and methods, overload protection per route,
the keep-alive idle timeout, header size and count, and the header read timeout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

import aiohttp
import httpx
import orjson

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value

BODY = {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_unknown_endpoints_get_json_naming_the_ones_that_exist(router: Router) -> None:
    response = httpx.post(f"{router.url}/v1/completions", json={"prompt": "hi"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_endpoint" and error["source"] == "bundle-router"
    assert "POST /v1/chat/completions" in error["message"] and "base_url" in error["message"]
    assert response.headers["X-Router-Error"] == "unknown_endpoint"
    anthropic_path = httpx.post(f"{router.url}/v1/messages/batches", json={})
    assert anthropic_path.status_code == 404 and anthropic_path.json()["type"] == "error"


def test_a_wrong_method_gets_405_with_allow(router: Router) -> None:
    response = httpx.get(f"{router.url}/v1/messages")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json()["error"]["message"] == "bundle-router: /v1/messages takes POST, not GET"
    assert httpx.delete(f"{router.url}/v1/models").headers["Allow"] == "GET"


async def test_a_full_route_answers_503_with_retry_after_then_recovers(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url)
    config["limits"] = {"max_concurrent_per_route": 3, "retry_after": "2s"}
    router = start_router(config)
    fake.behave(latency_ms=800)
    statuses: list[int] = []
    retry_after: set[str] = set()
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> None:
            headers = {"X-Session-Id": f"s-{i}"}
            async with session.post(f"{router.url}/v1/messages", json=BODY, headers=headers) as r:
                await r.read()
                statuses.append(r.status)
                if r.status == 503:
                    retry_after.add(r.headers["Retry-After"])
                    assert r.headers["X-Router-Error"] == "overloaded"

        await asyncio.gather(*(one(i) for i in range(10)))
        assert statuses.count(200) == 3 and statuses.count(503) == 7, statuses
        assert retry_after == {"2"}
        metrics = scrape(router)
        assert value(metrics, "router_overload_rejections_total", route="refund-agent") == 7
        assert value(metrics, "router_in_flight_requests", route="refund-agent") == 0
        fake.behave(latency_ms=0)
        async with session.post(f"{router.url}/v1/messages", json=BODY) as again:
            assert again.status == 200  # the route takes requests again


def test_an_idle_keep_alive_connection_is_closed(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url)
    config["limits"] = {"keepalive_timeout": "1s"}
    router = start_router(config)
    host, port = router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        sock.settimeout(5)
        assert sock.recv(4096) == b""  # the router hung up on the idle connection
        assert time.monotonic() - started < 4


def test_a_slow_request_head_gets_408_and_other_clients_are_served(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """Slowloris: 20 connections each trickle a request head, a header every 0.2 s."""
    router = start_router(router_config(fake.url, limits={"header_timeout": "1s"}))
    host, port = router.url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
    try:
        for sock in slow:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n")
        answers = {sock: b"" for sock in slow}
        for i in range(25):  # 5 s of trickling at most; the router cuts them off after 1 s
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Trickle-%d: a\r\n" % i)
            assert httpx.post(f"{router.url}/v1/messages", json=BODY).status_code == 200
            time.sleep(0.2)
        for sock in slow:
            sock.settimeout(5)
            while chunk := sock.recv(4096):
                answers[sock] += chunk
    finally:
        for sock in slow:
            sock.close()
    for answer in answers.values():
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        assert b"X-Router-Error: request_timeout" in head
        message = orjson.loads(body)["error"]["message"]
        assert "within 1 s of their first byte (limits.header_timeout)" in message


def test_header_limits_are_configurable(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(
        router_config(fake.url, limits={"max_header_bytes": 2048, "max_headers": 20})
    )
    long_header = httpx.post(f"{router.url}/v1/messages", json=BODY, headers={"X-A": "a" * 3000})
    assert long_header.status_code == 431
    assert "over 2048 bytes" in long_header.json()["error"]["message"]
    many = {f"X-H{i}": "v" for i in range(30)}
    too_many = httpx.post(f"{router.url}/v1/messages", json=BODY, headers=many)
    assert too_many.status_code == 431
    assert too_many.json()["error"]["code"] == "too_many_headers"
    fine = {"X-A": "a" * 1500, **{f"X-H{i}": "v" for i in range(10)}}
    assert httpx.post(f"{router.url}/v1/messages", json=BODY, headers=fine).status_code == 200
