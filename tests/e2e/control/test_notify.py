"""Change announcements: the webhook gets the trip; a dead or hanging one blocks nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from router.dev.ports import free_port
from testing.servers import ProviderProcess, Router
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.control.test_core import CANARY_MODEL, drive_until_trip, half_canary
from tests.e2e.traffic import burst, served_by


class Receiver:
    """A webhook on 127.0.0.1 that records what it is sent, or hangs when told to."""

    def __init__(self, hang: bool = False) -> None:
        self.messages: list[dict[str, Any]] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    receiver.release.wait(timeout=60)
                receiver.messages.append(orjson.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/SECRET"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


@pytest.fixture
def hanging_receiver() -> Iterator[Receiver]:
    running = Receiver(hang=True)
    yield running
    running.close()


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


async def test_the_webhook_receives_the_trip(
    fake: ProviderProcess, start_router: Callable[..., Router], receiver: Receiver
) -> None:
    fake.behave(CANARY_MODEL, error_rate=1.0)
    config = half_canary(fake.url)
    config["notify"] = {"webhook_url_env": "TEST_WEBHOOK_URL"}
    router = start_router(config, env={"TEST_WEBHOOK_URL": receiver.url})
    await drive_until_trip(router)
    assert _wait_for(lambda: any(m["action"] == "trip" for m in receiver.messages))
    message = next(m for m in receiver.messages if m["action"] == "trip")
    assert message["text"].startswith("refund-agent v1.5 rolled back to v1.4 at ")
    assert "by guardrail error_rate (" in message["text"]
    assert message["trip"]["rule"] == "error_rate" and message["actor"] == "guardrail"
    assert message["weights_percent"] == {"v1.4": 100.0, "v1.5": 0.0}
    assert message["audit_seq"] == router.audit()[-1]["seq"]
    assert "SECRET" not in router.process.output()  # the webhook URL carries a token


async def test_a_hanging_webhook_slows_no_request_and_loses_no_rollback(
    fake: ProviderProcess, start_router: Callable[..., Router], hanging_receiver: Receiver
) -> None:
    fake.behave(CANARY_MODEL, error_rate=1.0)
    config = half_canary(fake.url)
    config["notify"] = {"webhook_url": hanging_receiver.url, "timeout": "60s", "attempts": 1}
    router = start_router(config)
    await drive_until_trip(router)  # bounded; fails if the webhook held the trip up
    results = await burst(router.url, 200, concurrency=50)
    assert served_by(results, "v1.4") == 200
    assert router.audit()[-1]["action"] == "trip"
    assert hanging_receiver.messages == []  # still hanging on the first announcement


async def test_a_dead_webhook_is_retried_then_counted_as_failed(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    fake.behave(CANARY_MODEL, error_rate=1.0)
    config = half_canary(fake.url)
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    config["notify"] = {"webhook_url": dead, "attempts": 2}
    router = start_router(config)
    await drive_until_trip(router)
    assert router.audit()[-1]["action"] == "trip"

    def failed() -> float:
        return value(scrape(router), "router_notifications_total", result="failed")

    assert _wait_for(lambda: failed() == 3.0)  # the two first-start records and the trip
    assert "retrying in" in router.process.output()
