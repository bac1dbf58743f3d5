"""Online-eval feedback: a bounded memory of recent request ids and who served them.

`POST /v1/feedback {"request_id": ..., "passed": true|false, "score": 0.8}` attributes a
verdict to the version that served the request. Only the last `feedback_capacity` request
ids, each for `feedback_ttl` seconds, are remembered; an older id is answered with 404.
A request's first verdict counts; the same verdict sent again is acknowledged and ignored,
a different one is refused with 409. An id names one answer only: a request that reuses an id
still remembered gets a fresh one, so a second answer cannot take over the first one's verdict.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass

from router.proxy.telemetry import VersionStats


@dataclass(slots=True)
class Served:
    stats: VersionStats
    at: float
    verdict: tuple[bool, float | None] | None = None


class RecentRequests:
    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._items: OrderedDict[str, Served] = OrderedDict()

    def remember(self, request_id: str, stats: VersionStats) -> str:
        """Remember who serves this request; returns its id: `request_id`, or a fresh one
        when `request_id` already names another answer that may still get feedback."""
        items = self._items
        if self.lookup(request_id) is not None:
            request_id = uuid.uuid4().hex
        items[request_id] = Served(stats, time.monotonic())
        if len(items) > self.capacity:
            items.popitem(last=False)
        return request_id

    def put(self, key: str, stats: VersionStats) -> None:
        """Remember `key` as served by `stats`'s version (a Responses API response id)."""
        items = self._items
        items[key] = Served(stats, time.monotonic())
        items.move_to_end(key)
        if len(items) > self.capacity:
            items.popitem(last=False)

    def lookup(self, request_id: str) -> Served | None:
        served = self._items.get(request_id)
        if served is None:
            return None
        if time.monotonic() - served.at > self.ttl:
            del self._items[request_id]
            return None
        return served

    def __len__(self) -> int:
        return len(self._items)
