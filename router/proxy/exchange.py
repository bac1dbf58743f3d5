"""One request on the data path, from its first byte to its one record.

`Proxy` makes an `Exchange` per request and hands it down the stages: routing sets its
route and target, the relay its reading and outcome. Wherever the request ends (an answer,
an error, a client that left), `finish()` records it once: the version's counters and the
access log line. The object plays the part of uvicorn's `RequestResponseCycle`.
"""

from __future__ import annotations

from time import perf_counter

from aiohttp import web

from router.errors import (
    PayloadTooLarge,
    RequestTimeout,
    RouterError,
    UpstreamTimeout,
    UpstreamUnavailable,
    error_response,
)
from router.proxy.access_log import AccessLog
from router.proxy.dialects import Dialect
from router.proxy.dialects.base import Reading
from router.proxy.live import LiveRoute, Target
from router.proxy.telemetry import Outcome


class Exchange:
    """A request's route, version, headers, clock, outcome and reading."""

    __slots__ = (
        "access",
        "client_tools",
        "counted",
        "dialect",
        "error",
        "headers",
        "method",
        "outcome",
        "path",
        "reading",
        "recorded",
        "request_id",
        "route",
        "session",
        "started",
        "status",
        "target",
        "ttft",
        "waited",
    )

    def __init__(
        self,
        dialect: Dialect,
        request_id: str,
        access: AccessLog,
        method: str | None,
        path: str | None,
    ) -> None:
        self.started = perf_counter()
        # Time spent waiting on others (the provider, a slow client draining a stream): the
        # rest of the elapsed time is the router's own overhead.
        self.waited = 0.0
        # The endpoint it reached, for the access log: a method and path template the router
        # serves, or None; never the client's own text (a scanner's 8 KB path, say).
        self.method = method
        self.path = path
        self.dialect = dialect
        self.access = access
        self.request_id = request_id
        self.headers = {"X-Request-Id": request_id}  # the router's headers on the answer
        self.route: LiveRoute | None = None
        self.target: Target | None = None
        self.counted = False  # whether it counts in the target version's telemetry
        self.session: str | None = None  # where its session key came from
        self.client_tools: frozenset[str] = frozenset()  # the client's own tools, sent on
        self.status: int | None = None  # what the client was answered with, once it was
        self.outcome = Outcome.OK
        self.error: str | None = None  # the router's error code, when it answered one
        self.ttft: float | None = None
        self.reading: Reading | None = None
        self.recorded = False  # whether the reading is in the version's telemetry yet

    def elapsed(self) -> float:
        return perf_counter() - self.started

    def overhead(self) -> float:
        return perf_counter() - self.started - self.waited

    def serve(self, route: LiveRoute, target: Target, request_id: str) -> None:
        """Routed: answered by `target`, and counted in its telemetry."""
        self.route, self.target, self.counted = route, target, True
        self.request_id = request_id
        self.headers["X-Request-Id"] = request_id
        self.headers.update(target.headers)

    def failed(self, exc: RouterError) -> None:
        """The request ends in the router's error `exc` (its status, code and outcome)."""
        self.status, self.error = exc.status, exc.code
        if isinstance(exc, UpstreamTimeout):
            self.outcome = Outcome.TIMEOUT
        elif isinstance(exc, UpstreamUnavailable):
            self.outcome = Outcome.CONNECT_ERROR
        else:
            self.outcome = Outcome.ROUTER_ERROR

    def fail(self, exc: RouterError) -> web.Response:
        """The router's error as the answer, in the client's dialect."""
        self.failed(exc)
        answer = error_response(exc, self.dialect.name, self.headers)
        if isinstance(exc, RequestTimeout | PayloadTooLarge):
            answer.force_close()  # close rather than read and discard the unread body
        return answer

    def crashed(self) -> None:
        """An exception the handler did not expect: the connection answers it with a 500
        internal_error and logs its traceback (an answer already started is cut off)."""
        self.status = self.status or 500
        self.outcome, self.error = Outcome.ROUTER_ERROR, "internal_error"

    def left(self, *, before_the_answer: bool) -> None:
        """The client went away before its answer was done."""
        self.outcome = Outcome.CLIENT_DISCONNECT
        if before_the_answer and self.reading is None:
            # It left while the provider was thinking: the provider may bill it, and no one
            # will know what for.
            self.reading = Reading()

    def record_reading(self) -> None:
        """Usage, tool calls and refusals of the answer, into the version's telemetry."""
        target, reading = self.target, self.reading
        if self.recorded or not self.counted or target is None or reading is None:
            return
        self.recorded = True
        target.stats.record_usage(reading.usage, reading.usage_complete)
        self.judge(target, reading)

    def finish(self) -> None:
        """Record the exchange, once, wherever it ended."""
        target = self.target
        if self.counted and target is not None:
            self.record_reading()
            elapsed = perf_counter() - self.started
            target.stats.record_request(self.outcome, elapsed, elapsed - self.waited, self.ttft)
        self.access.record(self)

    def judge(self, target: Target, reading: Reading) -> None:
        """Tool calls against the bundle's schemas, and refusals."""
        stats, bundle = target.stats, target.bundle
        client_tools = self.client_tools
        for call in reading.tool_calls:
            if call.name in client_tools:  # the client's own tool: not the bundle's to judge
                stats.record_tool_call("client_tool")
            else:
                stats.record_tool_call(
                    bundle.check_tool_call(call.name, call.arguments, raw=call.raw)
                )
        refused = reading.refusal
        patterns = self.route.refusal_patterns if self.route is not None else ()
        if not refused and patterns and reading.text:
            text = "".join(reading.text)
            refused = any(p.search(text) for p in patterns)
        if refused:
            stats.record_refusal()
