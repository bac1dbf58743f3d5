"""Client connections: the cap on open proxy connections (health and metrics answer on their
own listener), running out of file descriptors (logged, counted, survived), the open-file
limit raised at start, and the write timeout for a client that stops reading."""

from __future__ import annotations

import os
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value

BODY = {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def address(router: Router) -> tuple[str, int]:
    host, port = router.url.removeprefix("http://").split(":")
    return host, int(port)


def wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def open_connections(router: Router) -> float:
    return value(scrape(router), "router_open_connections", listener="proxy")


@contextmanager
def idle_clients(router: Router, n: int) -> Iterator[list[socket.socket]]:
    """`n` connections to the proxy that send nothing."""
    socks = [socket.create_connection(address(router), timeout=5) for _ in range(n)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def read_all(sock: socket.socket) -> bytes:
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def test_over_max_connections_new_clients_get_503_while_health_and_metrics_answer(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    limits = {"max_connections": 10, "retry_after": "2s"}
    router = start_router(router_config(fake.url, limits=limits))
    with idle_clients(router, 10) as idle:
        wait_for(lambda: open_connections(router) == 10)
        # A new client is answered at once, before it sends a byte, and let go.
        with socket.create_connection(address(router), timeout=5) as refused:
            refused.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = read_all(refused).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 Service Unavailable"), head
        assert b"Retry-After: 2" in head and b"Connection: close" in head
        assert b"X-Router-Error: too_many_connections" in head
        error = orjson.loads(body)["error"]
        assert "10 open connections (limits.max_connections)" in error["message"]
        sdk_like = httpx.post(f"{router.url}/v1/messages", json=BODY)
        assert sdk_like.status_code == 503
        assert sdk_like.headers["X-Router-Error"] == "too_many_connections"
        # The operator side has its own listener and answers all along.
        assert httpx.get(f"{router.metrics_url}/healthz").status_code == 200
        metrics = scrape(router)
        assert value(metrics, "router_connections_refused_total", listener="proxy") == 2
        assert value(metrics, "router_open_connections", listener="proxy") == 10
        for sock in idle[:3]:
            sock.close()
        wait_for(lambda: open_connections(router) == 7)
        assert httpx.post(f"{router.url}/v1/messages", json=BODY).status_code == 200


def test_running_out_of_file_descriptors_is_logged_once_counted_and_survived(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url))
    pid = router.process.proc.pid
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 20, in_use + 20))
    with idle_clients(router, 60):
        time.sleep(1.5)  # the router accepts 20, then runs out and retries every 0.5 s
    # Its connections have all closed: the router accepts the waiting ones and carries on.
    assert httpx.post(f"{router.url}/v1/messages", json=BODY, timeout=10).status_code == 200
    errors = value(scrape(router), "router_accept_errors_total", listener="proxy", error="EMFILE")
    assert errors >= 2
    logged = [line for line in router.process.output().splitlines() if "EMFILE" in line]
    assert len(logged) == 1, logged  # once a minute at most
    assert "cannot accept connections on the proxy listener" in logged[0], logged
    assert "ulimit -n" in logged[0] and "limits.max_connections" in logged[0], logged


def test_the_open_file_limit_is_raised_to_the_hard_limit_at_start(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard open-file limit is {hard}: nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the router inherits it
    try:
        router = start_router(router_config(fake.url))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.prlimit(router.process.proc.pid, resource.RLIMIT_NOFILE) == (hard, hard)
    assert f"open-file limit (RLIMIT_NOFILE) raised from 1024 to {hard}" in router.process.output()


def test_a_client_that_stops_reading_is_let_go_after_send_timeout(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url, limits={"send_timeout": "1s"}))
    # Four times what the kernel's send buffer on the router's side may grow to (tcp_wmem),
    # 16 MB at least, in 2000 events 5 ms apart: the router's own buffer fills within a few
    # seconds, and the provider is still streaming when the router gives up on the client.
    send_buffer_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    megabytes = max(16, 4 * send_buffer_max // 1_000_000)
    fake.behave(text=("x" * 999 + " ") * megabytes * 1000, stream_chunks=2000, stream_interval_ms=5)
    body = orjson.dumps({**BODY, "stream": True})
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
        sock.connect(address(router))
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        # The client never reads. The provider sees the router let go while still streaming.
        wait_for(lambda: fake.last()["outcome"] != "pending", 5)
        wait_for(lambda: fake.last()["outcome"] != "streaming", 15)
        assert fake.last()["outcome"] == "client_closed"
    metrics = scrape(router)
    assert value(metrics, "router_send_timeouts_total", listener="proxy") == 1
    left = sum(
        value(metrics, "router_requests_total", route="refund-agent", version=v, outcome=o)
        for v in ("v1.4", "v1.5")
        for o in ("client_disconnect",)
    )
    assert left == 1
    logged = [line for line in router.process.output().splitlines() if "send_timeout" in line]
    assert len(logged) == 1 and "took nothing" in logged[0], logged
