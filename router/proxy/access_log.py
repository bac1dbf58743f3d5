"""The access log: one JSON line per request, written off the event loop.

    access_log: errors     # off | errors (the default) | all

`errors` writes the requests that did not end well: any status of 400 or more, and any
outcome but `ok` (a stream cut short answers 200 and still ends badly). A line names the
request, where it went and what it cost; it never holds a body, a prompt, a header value or
a key, and never a string the client made up but its request id: the endpoint is the
template of one the proxy serves or null, and so is the route (an unknown one is null).

The lines go to the `router.access` logger, whose handler `start()` sets up: a bounded queue
that the event loop puts lines on, and a thread that writes them to stderr. A slow pipe then
slows the thread, never a request; when the queue is full, lines are dropped and counted
(`router_access_log_dropped_total`), so a stalled pipe cannot grow the router's memory.
"""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
from typing import IO, TYPE_CHECKING

import orjson

from router.config import AccessLevel
from router.proxy.telemetry import Outcome

if TYPE_CHECKING:
    from router.proxy.exchange import Exchange

log = logging.getLogger("router.access")


class AccessLog:
    def __init__(self, level: AccessLevel = "errors") -> None:
        self.level = level
        self.everything = level == "all"
        self.enabled = level != "off"

    def record(self, x: Exchange) -> None:
        """Write the exchange's line if the level asks for it."""
        # Every error status has an outcome other than ok; a stream that broke after its
        # 200 has one too.
        if self.enabled and (self.everything or x.outcome is not Outcome.OK):
            log.info(line(x))


def line(x: Exchange) -> str:
    """The exchange as one JSON object (keys in a fixed order)."""
    stats = x.target.stats if x.target is not None else None
    usage = x.reading.usage if x.reading is not None else None
    elapsed = x.elapsed()  # when it arrived is now less this: no clock read per request
    return orjson.dumps(
        {
            "time": _utc(time.time() - elapsed),
            "request_id": x.request_id,
            "method": x.method,
            "path": x.path,
            "route": stats.route if stats is not None else None,
            "version": stats.version if stats is not None else None,
            "dialect": x.dialect.name,
            "status": x.status,
            "outcome": x.outcome.label,
            "error": x.error,
            "duration_ms": round(elapsed * 1000, 3),
            "overhead_ms": round((elapsed - x.waited) * 1000, 3),
            "ttft_ms": None if x.ttft is None else round(x.ttft * 1000, 3),
            "tokens": None
            if usage is None
            else {
                "input": usage.input,
                "output": usage.output,
                "cache_read": usage.cache_read,
                "cache_write": usage.cache_write,
            },
            "session": x.session,
        }
    ).decode()


def _utc(wall: float) -> str:
    seconds = int(wall)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int((wall - seconds) * 1000):03d}Z"


QUEUED_LINES = 10_000  # about 4 MB of lines waiting for a slow stderr, then drops


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Puts records on a bounded queue; a full queue drops the record and counts it."""

    def __init__(self, lines: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(lines)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1


def start(stream: IO[str] | None = None) -> logging.handlers.QueueListener:
    """Send `router.access` lines, bare (no level or logger name: each is a JSON object),
    through a bounded queue to a writer thread. Stop the returned listener at shutdown: it
    writes what is queued first."""
    lines: queue.Queue[logging.LogRecord] = queue.Queue(QUEUED_LINES)
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    listener = logging.handlers.QueueListener(lines, writer)
    log.handlers[:] = [DroppingQueueHandler(lines)]
    log.setLevel(logging.INFO)
    log.propagate = False  # not also through the root logger's formatter
    listener.start()
    return listener


def dropped() -> int:
    """Lines dropped because the writer fell behind (0 when the log is off)."""
    return sum(h.dropped for h in log.handlers if isinstance(h, DroppingQueueHandler))
