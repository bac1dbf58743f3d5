"""The access log: one JSON line per request, at the level the config sets (off, errors, all).
Keys and bodies never reach it: tests/e2e/test_secrets.py runs with `access_log: all`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.traffic import leave_mid_stream

HI = [{"role": "user", "content": "hi"}]
REFUND = {"model": "refund-agent", "max_tokens": 5, "messages": HI}
FIELDS = [
    "time",
    "request_id",
    "method",
    "path",
    "route",
    "version",
    "dialect",
    "status",
    "outcome",
    "error",
    "duration_ms",
    "overhead_ms",
    "ttft_ms",
    "tokens",
    "session",
]


def access_lines(router: Router) -> dict[str, dict[str, Any]]:
    """The access log lines in the router's output, by request id (after it stopped)."""
    lines = {}
    for text in router.process.output().splitlines():
        if text.startswith("{"):
            line = json.loads(text)
            assert list(line) == FIELDS, line
            lines[line["request_id"]] = line
    return lines


def post(router: Router, request_id: str, body: Any, path: str = "/v1/messages") -> httpx.Response:
    headers = {"X-Request-Id": request_id, "X-Session-Id": f"s-{request_id}"}
    if isinstance(body, bytes):
        headers["Content-Type"] = "application/json"
        return httpx.post(f"{router.url}{path}", content=body, headers=headers, timeout=10)
    return httpx.post(f"{router.url}{path}", json=body, headers=headers, timeout=10)


def test_errors_level_logs_every_failure_and_nothing_that_went_well(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url))  # access_log defaults to errors
    assert post(router, "fine", REFUND).status_code == 200
    assert post(router, "bad-json", b"{nope").status_code == 400
    assert post(router, "no-route", {**REFUND, "model": "secret-route-name"}).status_code == 404
    fake.behave(error_rate=1.0, error_kind="500")
    assert post(router, "provider-500", REFUND).status_code == 500
    fake.behave(error_rate=1.0, error_kind="reset")
    assert post(router, "reset", REFUND).status_code == 502
    fake.behave(error_rate=0.0, stream_truncate_after=2)
    truncated = post(router, "truncated", {**REFUND, "stream": True})
    assert truncated.status_code == 200 and "upstream_stream_truncated" in truncated.text
    fake.behave(stream_truncate_after=None, stream_interval_ms=200, stream_chunks=20)
    leave_mid_stream(router.url, b"X-Request-Id: leaver")
    scanner = httpx.request(  # a path and a method of the client's own making
        "PROPFIND", f"{router.url}/keys/sk-SCANNED-0001/v1?x=1", headers={"X-Request-Id": "scan"}
    )
    assert scanner.status_code == 404
    wrong = httpx.get(f"{router.url}/v1/messages", headers={"X-Request-Id": "wrong-method"})
    assert wrong.status_code == 405
    router.stop()  # the writer thread writes what is queued before the process ends

    lines = access_lines(router)
    assert set(lines) == {
        "bad-json",
        "no-route",
        "provider-500",
        "reset",
        "truncated",
        "leaver",
        "scan",
        "wrong-method",
    }
    # Only endpoints the proxy serves are named, and only by their template.
    assert (lines["scan"]["method"], lines["scan"]["path"]) == (None, None)
    assert "sk-SCANNED-0001" not in router.process.output()
    assert (lines["wrong-method"]["method"], lines["wrong-method"]["path"]) == (
        "GET",
        "/v1/messages",
    )
    assert lines["bad-json"] | {"time": None, "duration_ms": None, "overhead_ms": None} == {
        "time": None,
        "request_id": "bad-json",
        "method": "POST",
        "path": "/v1/messages",
        "route": None,
        "version": None,
        "dialect": "anthropic",
        "status": 400,
        "outcome": "router_error",
        "error": "invalid_json",
        "duration_ms": None,
        "overhead_ms": None,
        "ttft_ms": None,
        "tokens": None,
        "session": None,
    }
    # What the client called its route is its own input: not logged, not even when unknown.
    assert lines["no-route"]["route"] is None and lines["no-route"]["error"] == "unknown_route"
    assert "secret-route-name" not in router.process.output()
    failed = lines["provider-500"]
    assert (failed["status"], failed["outcome"], failed["error"]) == (500, "provider_5xx", None)
    assert failed["route"] == "refund-agent" and failed["version"] in ("v1.4", "v1.5")
    assert failed["session"] == "header"
    assert failed["duration_ms"] >= failed["overhead_ms"] > 0
    reset = lines["reset"]
    assert (reset["status"], reset["outcome"]) == (502, "connect_error")
    assert reset["error"] == "upstream_connection_broken"
    cut = lines["truncated"]  # answered 200, then ended badly
    assert (cut["status"], cut["outcome"], cut["error"]) == (
        200,
        "connect_error",
        "upstream_stream_truncated",
    )
    assert cut["tokens"] is not None  # what the provider reported before it stopped
    assert lines["leaver"]["outcome"] == "client_disconnect"
    assert lines["leaver"]["status"] == 200
    assert lines["leaver"]["time"].endswith("Z")


def test_all_level_logs_every_request_with_its_tokens_and_session_source(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(router_config(fake.url, access_log="all"))
    assert post(router, "keyed", REFUND).status_code == 200
    streamed = httpx.post(  # no session header: the conversation's opening keys it
        f"{router.url}/v1/chat/completions",
        json={"model": "support-agent", "messages": HI, "stream": True},
        headers={"X-Request-Id": "opening"},
        timeout=10,
    )
    assert streamed.status_code == 200
    assert httpx.get(f"{router.url}/v1/models", headers={"X-Request-Id": "models"}).is_success
    router.stop()

    lines = access_lines(router)
    assert set(lines) == {"keyed", "opening", "models"}
    models = lines["models"]
    assert (models["method"], models["path"], models["status"]) == ("GET", "/v1/models", 200)
    keyed = lines["keyed"]
    assert (keyed["status"], keyed["outcome"], keyed["session"]) == (200, "ok", "header")
    assert keyed["tokens"]["input"] > 0 and keyed["tokens"]["output"] > 0
    assert keyed["ttft_ms"] is None  # not a stream
    opening = lines["opening"]
    assert (opening["dialect"], opening["session"]) == ("openai", "fingerprint")
    assert opening["route"] == "support-agent" and opening["tokens"]["output"] > 0
    assert 0 < opening["ttft_ms"] <= opening["duration_ms"]


def test_off_writes_no_line(fake: ProviderProcess, start_router: Callable[..., Router]) -> None:
    router = start_router(router_config(fake.url, access_log="off"))
    fake.behave(error_rate=1.0, error_kind="500")
    assert post(router, "failed", REFUND).status_code == 500
    router.stop()
    assert access_lines(router) == {}
