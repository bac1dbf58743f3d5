"""The client connection: aiohttp's HTTP/1.1 protocol, with the router's answers to bad framing.

aiohttp parses the request line and headers. When that fails it answers in plain text that
quotes the offending bytes, an `Authorization` value included, and logs them with a
traceback. Here such a failure becomes a JSON error that names the problem and the fix and
quotes nothing, and the log line says what was wrong without the bytes.

aiohttp has no deadline for a request head that arrives slowly (slowloris): a client that
starts a request and then sends a byte every few seconds holds its connection open. Here the
head must be complete within `header_timeout` of its first byte, or the client gets a 408 and
the connection is closed.

Use `ProxyRunner` in place of `web.AppRunner`:

    runner = ProxyRunner(app, header_timeout=10.0, max_field_size=8190, max_headers=128)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler

from router.errors import HeadersTooLarge, MalformedRequest, RequestTimeout, RouterError

log = logging.getLogger("router")


class ClientConnection(RequestHandler):
    """One client connection. Between requests it times the head of the next one; a
    request that cannot be parsed gets a JSON error that echoes none of its bytes."""

    __slots__ = ("_head_timer", "header_timeout")

    def __init__(self, manager: web.Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None

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
        super().connection_lost(exc)

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
            body = error.body("anthropic")
        else:  # an exception a handler let through: a bug, logged with its traceback
            error = RouterError(
                "an internal error; the router's log has the traceback", code="internal_error"
            )
            self.log_exception("Error handling request to %s", request.path, exc_info=exc)
            body = error.body("anthropic" if request.path.startswith("/v1/messages") else "openai")
        response = web.Response(
            status=error.status,
            body=body,
            content_type="application/json",
            headers={"X-Router-Error": error.code},
        )
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


class ProxyServer(web.Server):
    """aiohttp's protocol factory, making `ClientConnection`s."""

    def __call__(self) -> RequestHandler:
        return ClientConnection(self, loop=self._loop, **self._kwargs)


class ProxyRunner(web.AppRunner):
    """`web.AppRunner` whose connections are `ClientConnection`s. Takes `header_timeout`
    besides aiohttp's own options (`max_field_size`, `max_headers`, `keepalive_timeout`)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return ProxyServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
