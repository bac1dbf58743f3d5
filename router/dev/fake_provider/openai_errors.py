"""OpenAI's error bodies, shared by Chat Completions and Responses."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from router.dev.fake_provider.plan import Invalid

KINDS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    500: "server_error",
    529: "server_error",
    429: "rate_limit_exceeded",
}


def error_body(
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def refused(problem: Invalid) -> dict[str, Any]:
    return error_body(
        problem.message,
        KINDS.get(problem.status, "invalid_request_error"),
        problem.param,
        problem.code,
    )


def injected(status: int, request: web.Request) -> dict[str, Any]:
    """The body of an error the behaviour injects."""
    # Like OpenAI's, a 401 names the key it refused by its last four characters only.
    key = request.headers.get("Authorization", "").removeprefix("Bearer ")
    message = f"Incorrect API key provided: sk-...{key[-4:]}" if status == 401 else ""
    return error_body(message or f"fake provider error {status}", KINDS[status])


NOT_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)
