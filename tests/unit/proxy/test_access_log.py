"""The access log line of an exchange, in process: what each ending records, and that a full
queue drops lines instead of growing (tests/e2e/proxy/test_access_log.py runs the router)."""

from __future__ import annotations

import json
import logging
import queue

from router.errors import NotFound, UpstreamTimeout
from router.proxy import access_log
from router.proxy.access_log import AccessLog, DroppingQueueHandler, line
from router.proxy.dialects import DIALECTS
from router.proxy.exchange import Exchange
from router.proxy.telemetry import Outcome


def exchange(method: str | None = "POST", path: str | None = "/v1/messages") -> Exchange:
    return Exchange(DIALECTS["anthropic"], "req-1", AccessLog("all"), method, path)


def test_an_exchange_that_crashed_is_a_router_error_500() -> None:
    x = exchange()
    x.crashed()
    entry = json.loads(line(x))
    assert (entry["status"], entry["outcome"], entry["error"]) == (
        500,
        "router_error",
        "internal_error",
    )


def test_a_crash_after_the_answer_started_keeps_its_status() -> None:
    x = exchange()
    x.status = 200  # a stream already sent its head
    x.crashed()
    assert (x.status, x.outcome, x.error) == (200, Outcome.ROUTER_ERROR, "internal_error")


def test_router_errors_are_classified_by_kind() -> None:
    timed_out, unknown = exchange(), exchange()
    timed_out.failed(UpstreamTimeout("slow"))
    unknown.failed(NotFound("no such route", code="unknown_route"))
    assert (timed_out.outcome, timed_out.status) == (Outcome.TIMEOUT, 504)
    assert (unknown.outcome, unknown.error) == (Outcome.ROUTER_ERROR, "unknown_route")


def test_an_unknown_endpoint_is_logged_without_the_clients_path_or_method() -> None:
    entry = json.loads(line(exchange(method=None, path=None)))
    assert entry["method"] is None and entry["path"] is None


def test_the_overhead_never_exceeds_the_duration() -> None:
    x = exchange()
    x.waited = 0.0
    entry = json.loads(line(x))
    assert 0 <= entry["overhead_ms"] <= entry["duration_ms"]


def test_only_errors_are_written_at_the_errors_level() -> None:
    written: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            written.append(record)

    keep, level = Keep(), access_log.log.level
    access_log.log.addHandler(keep)
    access_log.log.setLevel(logging.INFO)  # as start() sets it
    try:
        quiet, failed = exchange(), exchange()
        failed.failed(NotFound("gone"))
        errors = AccessLog("errors")
        errors.record(quiet)
        errors.record(failed)
        AccessLog("off").record(failed)
    finally:
        access_log.log.removeHandler(keep)
        access_log.log.setLevel(level)
    assert [json.loads(r.getMessage())["status"] for r in written] == [404]


def test_a_full_queue_drops_lines_and_counts_them() -> None:
    lines: queue.Queue[logging.LogRecord] = queue.Queue(2)
    handler = DroppingQueueHandler(lines)
    for n in range(5):
        handler.handle(logging.LogRecord("router.access", logging.INFO, "", 0, f"{n}", None, None))
    assert lines.qsize() == 2 and handler.dropped == 3
