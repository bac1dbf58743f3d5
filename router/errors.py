"""The exception tree.

Every error the router answers with knows its HTTP status, a stable `code`, and how to
render itself in the caller's API dialect. Errors that the router itself produces are
marked (`"source": "bundle-router"` in the body and an `X-Router-Error` header) so that an
operator can tell them apart from errors the provider sent, which pass through untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson
from aiohttp import web

# The shapes an error body takes: one per API dialect, and the admin API's own (the CLI prints
# its message as it is).
DialectName = Literal["openai", "anthropic", "responses", "admin"]


class RouterError(Exception):
    """An error the router answers a client request with."""

    status = 500
    code = "router_error"
    openai_type = "api_error"
    anthropic_type = "api_error"
    headers: Mapping[str, str] = {}  # sent with the error, e.g. Retry-After

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def body(self, dialect: DialectName) -> bytes:
        """The JSON error body in the client's dialect."""
        if dialect == "admin":
            return orjson.dumps({"error": {"code": self.code, "message": self.message}})
        message = f"bundle-router: {self.message}"
        if dialect == "anthropic":
            return orjson.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": self.anthropic_type,
                        "message": message,
                        "code": self.code,
                        "source": "bundle-router",
                    },
                }
            )
        return orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": self.openai_type,
                    "param": None,
                    "code": self.code,
                    "source": "bundle-router",
                }
            }
        )

    def sse_event(self, dialect: DialectName) -> bytes:
        """The same error as one SSE event, for a stream that already started."""
        if dialect == "anthropic":
            return b"event: error\ndata: " + self.body(dialect) + b"\n\n"
        if dialect == "responses":  # the Responses API's `error` event
            event = {
                "type": "error",
                "code": self.code,
                "message": f"bundle-router: {self.message}",
                "param": None,
                "sequence_number": 0,
            }
            return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"
        return b"data: " + self.body(dialect) + b"\n\n"


class BadRequest(RouterError):
    status = 400
    code = "invalid_request"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class MalformedRequest(BadRequest):
    """The bytes on the connection are not a valid HTTP/1.1 request."""

    code = "malformed_request"


class RequestTimeout(RouterError):
    """The client started a request and did not finish sending it in time."""

    status = 408
    code = "request_timeout"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class HeadersTooLarge(RouterError):
    status = 431
    code = "headers_too_large"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class Forbidden(RouterError):
    status = 403
    code = "forbidden"
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class NotFound(RouterError):
    status = 404
    code = "not_found"
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"


class UnsupportedMediaType(RouterError):
    status = 415
    code = "unsupported_media_type"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class PayloadTooLarge(RouterError):
    status = 413
    code = "request_too_large"
    openai_type = "invalid_request_error"
    anthropic_type = "request_too_large"


class MethodNotAllowed(RouterError):
    status = 405
    code = "method_not_allowed"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class Overloaded(RouterError):
    """Too many requests in flight on one route: come back shortly (Retry-After)."""

    status = 503
    code = "overloaded"
    openai_type = "server_error"
    anthropic_type = "overloaded_error"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.headers = {"Retry-After": f"{max(1, round(retry_after))}"}  # whole seconds


class Conflict(RouterError):
    status = 409
    code = "conflict"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class Refused(Conflict):
    """A change that does not apply to a route's deploy state as it is (a move of
    `router.control.moves`); the message says what to do instead."""

    code = "refused"


class StateNotDurable(RouterError):
    """A change the disk did not take: nothing was changed."""

    status = 503
    code = "state_not_durable"


class Unavailable(RouterError):
    """Something the router needs for this answer does not answer (Redis, in fleet mode)."""

    status = 503
    code = "unavailable"


class UpstreamUnavailable(RouterError):
    """The provider could not be reached, or broke the connection."""

    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(RouterError):
    status = 504
    code = "upstream_timeout"
    openai_type = "timeout_error"
    anthropic_type = "timeout_error"


def error_response(
    exc: RouterError, dialect: DialectName, headers: Mapping[str, str] | None = None
) -> web.Response:
    """The one way an error becomes an HTTP answer: the proxy's, the admin API's and the
    client connection's (the way Starlette's exception middleware renders HTTPException)."""
    return web.Response(
        status=exc.status,
        body=exc.body(dialect),
        content_type="application/json",
        headers={**(headers or {}), **exc.headers, "X-Router-Error": exc.code},
    )


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the configuration: where, what, and how to fix it."""

    file: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        text = f"{where}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


class ConfigError(Exception):
    """The configuration or a bundle cannot be loaded. Holds every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))
