"""Agent workers load-testing a router the way users will.

Start the router on the example config (fake provider in the same process):

    .venv/bin/bundle-router serve --config config/router.yaml --fake-provider

then, headless, 50 workers for a minute:

    .venv/bin/locust -f benchmarks/locustfile.py --host http://127.0.0.1:8080 \\
        --headless -u 50 -r 10 -t 60s --only-summary

Each worker holds one conversation at a time, several turns long, sticky to one bundle
version by its session key:

- `RefundAgent` speaks the Anthropic dialect (refund-agent, `X-Session-Id`): answers tool
  calls with tool results, streams a third of its turns, and posts online-eval feedback.
- `SupportAgent` speaks the OpenAI dialect (support-agent, sessions on the `user` field),
  streams half of its turns.

Besides the usual request stats, the entry "router overhead, microseconds" records the
router's own time per answer as the router measured it (`X-Router-Overhead-Ms` times 1000,
so that locust's whole-number columns keep the detail): read its columns as microseconds
spent in the router, not as the request's latency.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

from locust import FastHttpUser, between, events, task

TURNS = [
    "My order A-1234 arrived damaged. Can I get a refund?",
    "It was the blue kettle, the lid is cracked.",
    "Yes, the full amount please.",
    "How long until I see the money?",
    "Please email me the confirmation.",
]
_sessions = itertools.count()


def report_overhead(response: Any) -> None:
    """Record the router's own time for this answer as a locust entry of its own."""
    overhead = response.headers.get("X-Router-Overhead-Ms")
    if overhead is not None:
        events.request.fire(  # type: ignore[no-untyped-call]  # locust's EventHook is unannotated
            request_type="ROUTER",
            name="router overhead, microseconds (X-Router-Overhead-Ms x 1000)",
            response_time=float(overhead) * 1000,
            response_length=0,
            exception=None,
            context={},
        )


class RefundAgent(FastHttpUser):
    weight = 3
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.new_conversation()

    def new_conversation(self) -> None:
        self.session = f"locust-refund-{next(_sessions)}"
        self.messages: list[dict[str, Any]] = []
        self.turns = random.randint(2, len(TURNS))

    @task
    def turn(self) -> None:
        if len(self.messages) >= 2 * self.turns:
            self.new_conversation()
        self.messages.append({"role": "user", "content": random.choice(TURNS)})
        stream = random.random() < 1 / 3
        body = {
            "model": "refund-agent",
            "max_tokens": 256,
            "messages": self.messages,
            "stream": stream,
        }
        with self.client.post(
            "/v1/messages",
            json=body,
            headers={"X-Session-Id": self.session},
            name="refund-agent stream" if stream else "refund-agent",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                self.new_conversation()
                return
            report_overhead(response)
            if stream:
                self.messages.append({"role": "assistant", "content": "(streamed answer)"})
                return
            answer = response.json()
            self.messages.append({"role": "assistant", "content": answer["content"]})
            calls = [block for block in answer["content"] if block.get("type") == "tool_use"]
            if calls:  # run the tools, report back on the next turn
                results = [
                    {"type": "tool_result", "tool_use_id": call["id"], "content": "done"}
                    for call in calls
                ]
                self.messages.append({"role": "user", "content": results})
                self.messages.append({"role": "assistant", "content": "(answer after tools)"})
            request_id = response.headers.get("X-Request-Id")
            if request_id and random.random() < 0.2:
                self.client.post(
                    "/v1/feedback",
                    json={"request_id": request_id, "passed": random.random() < 0.9},
                    name="feedback",
                )


class SupportAgent(FastHttpUser):
    weight = 1
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.user = f"locust-customer-{next(_sessions)}"
        self.messages: list[dict[str, Any]] = []

    @task
    def turn(self) -> None:
        if len(self.messages) >= 8:
            self.on_start()
        self.messages.append({"role": "user", "content": random.choice(TURNS)})
        stream = random.random() < 0.5
        body = {
            "model": "support-agent",
            "user": self.user,
            "messages": self.messages,
            "stream": stream,
        }
        with self.client.post(
            "/v1/chat/completions",
            json=body,
            name="support-agent stream" if stream else "support-agent",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            report_overhead(response)
            self.messages.append({"role": "assistant", "content": "(answer)"})
