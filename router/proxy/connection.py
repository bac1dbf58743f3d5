"""The client connection: aiohttp's HTTP/1.1 protocol, with the router's answers to bad framing.

aiohttp parses the request line and headers. When that fails it answers in plain text that
quotes the offending bytes, an `Authorization` value included, and logs them with a
traceback. Here such a failure becomes a JSON error that names the problem and the fix and
quotes nothing, and the log line says what was wrong without the bytes.

aiohttp has no deadline for a request head that arrives slowly (slowloris): a client that
starts a request and then sends a byte every few seconds holds its connection open. Here the
head must be complete within `header_timeout` of its first byte, or the client gets a 408 and
the connection is closed.

A client that stops reading an answer would hold its connection, and the upstream request
behind it, for as long as it likes. Here, once the transport's write buffer is over its
high-water mark, the buffer must shrink within `send_timeout` (nginx's `send_timeout`), or the
connection is aborted: the request handler is cancelled, which cancels the upstream request.

`ProxyServer` counts the open connections of its listener in a `ConnectionStats`. Past
`max_connections`, a new connection gets a `Refusal`: a 503 `too_many_connections` with
Retry-After, sent at once, and the connection is let go.

Use `ProxyRunner` in place of `web.AppRunner`:

    runner = ProxyRunner(app, stats=ConnectionStats("proxy"), max_connections=4096,
                         header_timeout=10.0, send_timeout=60.0, max_field_size=8190)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from router.errors import (
    DialectName,
    HeadersTooLarge,
    MalformedRequest,
    Overloaded,
    RequestTimeout,
    RouterError,
    error_response,
)
from router.proxy.dialects import dialect_for_path

log = logging.getLogger("router")
LINGER = 2.0  # how long a refused connection may take to read its 503 and close


@dataclass(slots=True)
class ConnectionStats:
    """One listener's connections, read by the metrics collector: plain ints, no lock."""

    listener: str  # "proxy", "metrics"
    open: int = 0
    refused: int = 0  # turned away at max_connections
    send_timeouts: int = 0  # aborted: the client took nothing for send_timeout
    accept_errors: dict[str, int] = field(default_factory=dict)  # errno name -> count


class Throttle:
    """At most one log line per `every` seconds about a condition that recurs; `due()`
    returns how many occurrences went unlogged since the last line, or None (skip this one)."""

    __slots__ = ("every", "next_at", "skipped")

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.next_at = 0.0
        self.skipped = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now < self.next_at:
            self.skipped += 1
            return None
        skipped, self.skipped = self.skipped, 0
        self.next_at = now + self.every
        return skipped


class ClientConnection(RequestHandler):
    """One client connection. Between requests it times the head of the next one; a
    request that cannot be parsed gets a JSON error that echoes none of its bytes; a
    client that takes nothing of an answer for `send_timeout` is let go."""

    __slots__ = (
        "_head_timer",
        "_send_left",
        "_send_timer",
        "_stats",
        "header_timeout",
        "send_timeout",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        header_timeout: float,
        send_timeout: float = 60.0,
        stats: ConnectionStats | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = header_timeout
        self.send_timeout = send_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._send_left = 0  # the write buffer's size when the send timer was last set
        self._stats = stats  # counted open by ProxyServer; uncounted here when lost

    def data_received(self, data: bytes) -> None:
        # aiohttp's start() waits on `_waiter` exactly while no request is parsed or queued.
        waiter = self._waiter
        super().data_received(data)
        if waiter is None or waiter.done():
            # A body, a pipelined request behind one in progress, or a head now complete.
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            return
        if self._head_timer is None:  # these bytes began a head that is still incomplete
            self._head_timer = self._loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        self.forget()
        super().connection_lost(exc)

    def forget(self) -> None:
        """Uncount a connection that never started (its socket could not be set up)."""
        if self._stats is not None:
            self._stats.open -= 1
            self._stats = None

    def pause_writing(self) -> None:
        """The transport's write buffer is over its high-water mark: the client is not
        keeping up. From now on it must take some of it every `send_timeout`."""
        super().pause_writing()
        if self._send_timer is None and self.transport is not None:
            self._send_left = self.transport.get_write_buffer_size()
            self._send_timer = self._loop.call_later(self.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _send_stalled(self) -> None:
        self._send_timer = None
        transport = self.transport
        if transport is None or transport.is_closing() or not self.writing_paused:
            return
        left = transport.get_write_buffer_size()
        if left < self._send_left:  # the client took some: it gets another send_timeout
            self._send_left = left
            self._send_timer = self._loop.call_later(self.send_timeout, self._send_stalled)
            return
        if self._stats is not None:
            self._stats.send_timeouts += 1
        log.info(
            "closed a connection from %s: the client took nothing of the answer for %g s "
            "(limits.send_timeout), %d bytes still waiting for it",
            self._peer(),
            self.send_timeout,
            left,
        )
        # The handler is cancelled (handler_cancellation), and with it the upstream request.
        transport.abort()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        transport, waiter = self.transport, self._waiter
        if waiter is None or waiter.done() or transport is None or transport.is_closing():
            return  # the head completed, or the connection is already going
        error = RequestTimeout(
            f"the request headers did not arrive within {self.header_timeout:g} s of their "
            "first byte (limits.header_timeout); send the whole head at once",
        )
        body = error.body("anthropic")  # the dialect is unknown: see handle_error
        head = (
            "HTTP/1.1 408 Request Timeout\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Router-Error: {error.code}\r\n"
            "Connection: close\r\n\r\n"
        )
        log.info("closed a connection from %s: %s", self._peer(), error.message)
        transport.write(head.encode() + body)
        self.force_close()  # the transport sends what it holds, then closes

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp: too late for another answer
            raise ConnectionError("the response had started; no error answer can follow it")
        if isinstance(exc, BadHttpMessage):
            error = self._parse_error(exc)
            if isinstance(exc, BadHttpMethod) and self._request_count == 1:
                # TLS or other non-HTTP bytes on a plain port: scanners do this all day.
                log.debug("rejected a request from %s: %s", self._peer(), error.message)
            else:
                log.info("rejected a request from %s: %s", self._peer(), error.message)
            # Unparsed, the request has no dialect yet. Anthropic's error shape serves both
            # SDKs: the OpenAI one also reads its message from body["error"]["message"].
            dialect: DialectName = "anthropic"
        else:  # an exception a handler let through: a bug, logged with its traceback
            error = RouterError(
                "an internal error; the router's log has the traceback", code="internal_error"
            )
            self.log_exception("Error handling request to %s", request.path, exc_info=exc)
            dialect = dialect_for_path(request.path).name
        response = error_response(error, dialect)
        response.force_close()
        return response

    def _parse_error(self, exc: BadHttpMessage) -> RouterError:
        if isinstance(exc, LineTooLong):
            return HeadersTooLarge(
                f"the request line or a header is over {self.max_field_size} bytes "
                "(limits.max_header_bytes); send large values in the JSON body, or raise the limit",
            )
        if exc.message.startswith("Too many headers"):
            return HeadersTooLarge(
                f"the request has over {self.max_headers} headers (limits.max_headers); "
                "send fewer, or raise the limit",
                code="too_many_headers",
            )
        return MalformedRequest(
            f"the request is not valid HTTP/1.1 ({_reason(exc)}); send it with a standard "
            "HTTP client, with one Content-Length or Transfer-Encoding: chunked, and no CR, LF "
            "or NUL inside header values",
        )

    def _peer(self) -> str:
        transport = self.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else "a client"


def _reason(exc: BadHttpMessage) -> str:
    """What the parser found wrong, without the request bytes it quotes after its reason
    (llhttp's format is "reason:\\n\\n  b'...'\\n  ^")."""
    reason = exc.message.split(":\n", 1)[0].strip()
    quotes_bytes = any(mark in reason for mark in ("b'", 'b"', "bytearray(", "\\x"))
    if not reason or quotes_bytes or len(reason) > 100:
        return type(exc).__name__
    return reason


class Refusal(asyncio.Protocol):
    """A connection over `max_connections`: answered at once, request unread, then let go.

    The write side is shut after the answer, and what the client sends is read and dropped
    until it closes (or for LINGER s at most): closing with unread bytes would send a reset,
    which can reach the client before it has read the answer."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self.answer)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not read: the answer does not depend on it

    def eof_received(self) -> bool:
        return False  # the client has read the answer and closed: close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class ProxyServer(web.Server):
    """aiohttp's protocol factory, making `ClientConnection`s, counted in `stats`; past
    `max_connections` (None: no cap) it makes `Refusal`s instead."""

    def __init__(
        self,
        handler: Any,
        *,
        stats: ConnectionStats,
        max_connections: int | None = None,
        retry_after: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.stats = stats
        self.max_connections = max_connections
        self.refusals = Throttle()
        self.refusal = _too_many_connections(max_connections or 0, retry_after)

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        stats = self.stats
        if self.max_connections is not None and stats.open >= self.max_connections:
            stats.refused += 1
            if (unlogged := self.refusals.due()) is not None:
                log.warning(
                    "refused a connection: the %s listener has %d open connections, its "
                    "limit (limits.max_connections)%s",
                    stats.listener,
                    stats.open,
                    f"; {unlogged} more refused since the last message" if unlogged else "",
                )
            return Refusal(self.refusal)
        stats.open += 1  # here, not in connection_made: a burst of accepts sees each other
        return ClientConnection(self, loop=self._loop, stats=stats, **self._kwargs)


def _too_many_connections(limit: int, retry_after: float) -> bytes:
    error = Overloaded(
        f"the router already has {limit} open connections (limits.max_connections); retry "
        f"after {max(1, round(retry_after))} s, and keep connections alive rather than "
        "opening new ones",
        retry_after=retry_after,
        code="too_many_connections",
    )
    body = error.body("anthropic")  # the dialect is unknown: see handle_error
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {error.headers['Retry-After']}\r\n"
        f"X-Router-Error: {error.code}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ProxyRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `ClientConnection`s, counted in `stats` and
    capped at `max_connections`. Takes `header_timeout` and `send_timeout` besides aiohttp's
    own options (`max_field_size`, `max_headers`, `keepalive_timeout`). Serve it with a
    `router.proxy.listener.ListenerSite`, which hands each accepted socket to its server."""

    def __init__(
        self,
        app: web.Application,
        *,
        stats: ConnectionStats,
        max_connections: int | None = None,
        retry_after: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.stats = stats
        self.max_connections = max_connections
        self.retry_after = retry_after

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ProxyServer(
            server.request_handler,
            stats=self.stats,
            max_connections=self.max_connections,
            retry_after=self.retry_after,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
