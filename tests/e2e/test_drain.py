"""Graceful drain: on SIGTERM the router reports unready, stops accepting, lets the streams
in flight finish, keeps its state and audit whole, and exits 0."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import httpx

from router.control.durable import verify
from testing.servers import ProviderProcess, Router, router_config

BODY = {
    "model": "refund-agent",
    "max_tokens": 5,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}


def test_sigterm_drains_streams_in_flight_then_exits_0(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url))
    fake.behave(stream_chunks=20, stream_interval_ms=100)  # each stream takes about 2 s
    events: list[list[str]] = [[] for _ in range(3)]

    def stream(i: int) -> None:
        headers = {"X-Session-Id": f"drain-{i}"}
        with httpx.stream(
            "POST", f"{router.url}/v1/messages", json=BODY, headers=headers, timeout=30
        ) as answer:
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    events[i].append(line.removeprefix("event: "))

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the streams are under way
    router.process.proc.send_signal(signal.SIGTERM)

    ready = 200
    deadline = time.monotonic() + 2
    while ready == 200 and time.monotonic() < deadline:
        ready = httpx.get(f"{router.metrics_url}/readyz", timeout=1).status_code
        time.sleep(0.05)
    # Unready, said by the health listener, which stays up while the proxy drains (so a
    # probe reads "not ready" and Prometheus can take its last scrape).
    assert ready == 503, "still ready after SIGTERM"
    assert httpx.get(f"{router.metrics_url}/metrics", timeout=1).status_code == 200
    try:  # no new request gets in
        late = httpx.post(f"{router.url}/v1/messages", json=BODY, timeout=2).status_code
    except httpx.HTTPError:
        late = 0
    assert late != 200

    for thread in threads:
        thread.join(timeout=20)
    for received in events:  # every stream in flight ran to its end, no error event
        assert received and received[-1] == "message_stop", received
        assert "error" not in received
    assert router.process.proc.wait(timeout=20) == 0
    assert "stopped" in router.process.output()
    assert verify(router.state_dir / "audit.jsonl").ok
