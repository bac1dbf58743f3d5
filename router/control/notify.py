"""Announcements of changes: a Slack-compatible webhook, sent off the data path.

`Notifier.send()` only puts the message on a bounded queue and returns; one background task
POSTs it with retries and exponential backoff. A slow or dead webhook therefore never slows
a request or a rollback: the change is already made and durable before it is announced.
The webhook URL is a secret (it carries its own token) and is never logged; logs name only
its host. `change_message` and `event_message` write the text people read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from router.background import Background
from router.control.moves import RouteState

log = logging.getLogger("router.notify")
QUEUE_SIZE = 1000
FIRST_BACKOFF = 0.5  # seconds; doubles after each failed attempt
MAX_BACKOFF = 30.0


class Notifier:
    def __init__(self, url: str | None, *, timeout: float = 5.0, attempts: int = 6) -> None:
        self.url = url
        self.host = urlsplit(url).netloc.rpartition("@")[2] if url else None
        self.timeout = timeout
        self.attempts = attempts
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_SIZE)
        self.sent = 0
        self.failed = 0  # messages given up on after every attempt
        self.dropped = 0  # messages that found the queue full
        self.background = Background()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.url:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            self.background.keep_running(self._run, "notifier")

    async def close(self) -> None:
        await self.background.stop()
        if self._session:
            await self._session.close()

    def send(self, message: dict[str, Any]) -> None:
        """Queue `message` ({"text": ..., plus structured fields}); never blocks."""
        log.info("%s", message["text"])
        if not self.url:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("webhook queue full; not announced: %s", message["text"])

    async def _run(self) -> None:
        while True:
            message = await self.queue.get()
            await self._deliver(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        assert self._session is not None and self.url is not None
        body = orjson.dumps(message)
        backoff = FIRST_BACKOFF
        for attempt in range(1, self.attempts + 1):
            try:
                async with self._session.post(
                    self.url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    if response.status < 300:
                        self.sent += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt < self.attempts:
                log.warning(
                    "webhook to %s failed (%s), attempt %d of %d; retrying in %.1fs",
                    self.host,
                    problem,
                    attempt,
                    self.attempts,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        self.failed += 1
        log.error(
            "webhook to %s failed %d times; giving up on: %s",
            self.host,
            self.attempts,
            message["text"],
        )


def change_message(
    name: str, before: RouteState | None, after: RouteState, record: Mapping[str, Any]
) -> dict[str, Any]:
    """The announcement of one route's change: a line for people, and the facts as fields."""
    at = record["at"]
    clock = at[11:19] + "Z"
    if record["action"] == "trip" and after.trip:
        text = (
            f"{name} {after.candidate} rolled back to {after.active} at {clock} by "
            f"{record['reason']}"
        )
    elif record["action"] == "ramp_halt" and after.ramp:
        text = (
            f"{name} rollout of {after.candidate} HALTED at {after.ramp.percent:g}% at "
            f"{clock} by {record['reason']}. Decide: bundle-router rollback {name}, "
            f"or bundle-router rollout resume {name}"
        )
    elif record["action"] in ("promote", "ramp_promote"):
        text = (
            f"{name} {after.active} promoted to 100% at {clock} by {record['actor']} "
            f"({record['reason']})"
        )
    else:
        text = (
            f"{name} {record['action']} by {record['actor']} at {clock}: "
            f"{after.describe_weights()} ({record['reason']})"
        )
    return {
        "text": text,
        "route": name,
        "action": record["action"],
        "actor": record["actor"],
        "reason": record["reason"],
        "candidate": after.candidate,
        "active": after.active,
        "weights_percent": {v: p / 100 for v, p in after.weights.items()},
        "before_weights_percent": (
            {v: p / 100 for v, p in before.weights.items()} if before else None
        ),
        "trip": dict(after.trip) if record["action"] == "trip" and after.trip else None,
        "at": at,
        "audit_seq": record["seq"],
    }


def event_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """The announcement of a recorded event that changes no route (a reload)."""
    text = f"{record['action']} by {record['actor']} at {record['at'][11:19]}Z"
    return {"text": f"{text}: {record['reason']}", **record}
