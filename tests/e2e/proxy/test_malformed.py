"""Malformed input: bytes no standard client sends get a clear JSON 4xx that quotes none of
them, clients sending good requests at the same time are not affected, and no JSON body,
however odd, makes the router fail with a 5xx of its own."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testing.servers import ProviderProcess, Router, router_config

SECRET = "sk-ant-CANARY-malformed-0005"  # noqa: S105 - a canary, not a secret
BODY = (
    b'{"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
)
MAX_BODY = 256 * 1024


def head(*lines: bytes, path: bytes = b"/v1/messages") -> bytes:
    """A request head: the given header lines after Host and Content-Type."""
    start = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    return start + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def with_body(body: bytes, *lines: bytes) -> bytes:
    return head(b"Content-Length: %d" % len(body), *lines) + body


def chunked(body: bytes, *lines: bytes) -> bytes:
    return head(b"Transfer-Encoding: chunked", *lines) + b"%x\r\n%s\r\n0\r\n\r\n" % (
        len(body),
        body,
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = orjson.loads(self.body)["error"]
        return error


def exchange(router: Router, data: bytes, timeout: float = 10.0) -> Answer:
    """Send raw bytes on a new connection and read one HTTP answer."""
    host, port = router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        # The router may answer and close before taking all of it; the answer still waits.
        with contextlib.suppress(BrokenPipeError):
            sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the router closed without answering: {received!r}"
            received += chunk
        raw_head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = raw_head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        length = int(headers["content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, "the router closed mid-answer"
            body += chunk
    return Answer(int(status_line.split()[1]), headers, body[:length])


@pytest.fixture(scope="module")
def router(
    fake_provider: ProviderProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Router]:
    limits = {"max_body_bytes": MAX_BODY, "body_timeout": "1s", "header_timeout": "2s"}
    running = Router(
        tmp_path_factory.mktemp("malformed"), router_config(fake_provider.url, limits=limits)
    )
    yield running
    running.stop()


REJECTED = {
    "a header line over the limit": (
        head(b"Authorization: Bearer " + SECRET.encode() + b"a" * 9000, b"Content-Length: 2"),
        431,
        "headers_too_large",
    ),
    "too many headers": (
        head(*(b"X-Filler-%d: %s" % (i, SECRET.encode()) for i in range(200))),
        431,
        "too_many_headers",
    ),
    "a request line over the limit": (head(path=b"/v1/messages?" + b"k" * 9000), 431, None),
    "two Content-Lengths": (with_body(BODY, b"Content-Length: %d" % len(BODY)), 400, None),
    "two different Content-Lengths": (with_body(BODY, b"Content-Length: 5"), 400, None),
    "Content-Length with Transfer-Encoding": (
        with_body(BODY, b"Transfer-Encoding: chunked"),
        400,
        None,
    ),
    "Transfer-Encoding twice": (chunked(BODY, b"Transfer-Encoding: chunked"), 400, None),
    "CR inside a header value": (
        with_body(BODY, b"X-Note: a\rAuthorization: " + SECRET.encode()),
        400,
        None,
    ),
    "LF inside a header value": (
        with_body(BODY, b"X-Note: a\nAuthorization: " + SECRET.encode()),
        400,
        None,
    ),
    "NUL inside a header value": (with_body(BODY, b"X-Note: a\x00" + SECRET.encode()), 400, None),
    "TLS on the plain port": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400, None),
    "a Content-Length shorter than the body": (
        head(b"Content-Length: 10") + BODY + b"\r\n" + SECRET.encode(),
        400,
        None,
    ),
    "a Content-Length over the limit, body not sent": (
        head(b"Content-Length: %d" % (MAX_BODY * 100)),
        413,
        "request_too_large",
    ),
    "a chunked body over the limit": (chunked(b"x" * (MAX_BODY + 1)), 413, "request_too_large"),
    "a Content-Length longer than the body": (
        head(b"Content-Length: %d" % (len(BODY) + 100)) + BODY,
        408,
        "request_timeout",
    ),
    "bytes that are not UTF-8": (with_body(b'{"model": "\xff\xfe"}'), 400, "invalid_json"),
    "JSON nested 100,000 deep": (with_body(b"[" * 100_000), 400, "invalid_json"),
    "a JSON array, not an object": (with_body(b"[1, 2]"), 400, "invalid_json"),
}


def test_each_malformed_request_gets_a_clear_json_4xx_and_good_clients_carry_on(
    router: Router,
) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def good_client() -> None:
        with httpx.Client(base_url=router.url, timeout=10) as client:
            while not stop.is_set() and len(statuses) < 5000:
                answer = client.post("/v1/messages", content=BODY, headers=JSON)
                statuses.append(answer.status_code)

    JSON = {"Content-Type": "application/json", "X-Session-Id": "good-client"}
    worker = threading.Thread(target=good_client)
    worker.start()
    try:
        for name, (data, status, code) in REJECTED.items():
            answer = exchange(router, data)
            assert answer.status == status, (name, answer)
            assert answer.headers["content-type"].startswith("application/json"), name
            error = answer.error()
            assert error["source"] == "bundle-router", name
            assert error["code"] == answer.headers["x-router-error"], name
            if code is not None:
                assert error["code"] == code, (name, error)
            elif status == 400:
                assert error["code"] in {"malformed_request", "invalid_json"}, (name, error)
            assert "bundle-router: " in error["message"], name
            assert SECRET.encode() not in answer.body, f"{name}: the error quotes the secret"
    finally:
        stop.set()
        worker.join(timeout=30)
    assert statuses and set(statuses) == {200}, statuses  # nobody else noticed
    output = router.process.output()
    assert SECRET not in output, "the router log quotes a rejected request's bytes"
    assert "rejected a request from 127.0.0.1: the request is not valid HTTP/1.1" in output


def test_malformed_answers_name_the_problem_and_the_fix(router: Router) -> None:
    too_long = exchange(router, REJECTED["a header line over the limit"][0]).error()
    assert "over 8190 bytes (limits.max_header_bytes)" in too_long["message"]
    assert "JSON body" in too_long["message"]
    duplicate = exchange(router, REJECTED["two Content-Lengths"][0]).error()
    assert "(Duplicate Content-Length)" in duplicate["message"]
    assert "one Content-Length or Transfer-Encoding: chunked" in duplicate["message"]
    late = exchange(router, REJECTED["a Content-Length longer than the body"][0]).error()
    assert "within 1 s (limits.body_timeout)" in late["message"]
    assert f"{len(BODY) + 100} bytes announced" in late["message"]
    nested = exchange(router, REJECTED["JSON nested 100,000 deep"][0]).error()
    assert "not valid JSON" in nested["message"] and "depth limit exceeded" in nested["message"]


def test_sdk_clients_read_the_message_of_a_431(router: Router) -> None:
    """A parse error comes before the dialect is known: its body suits both SDKs."""
    huge = {"X-Trace": "t" * 9000}
    claude = anthropic.Anthropic(base_url=router.url, api_key="k", max_retries=0)
    with claude, pytest.raises(anthropic.APIStatusError) as caught:
        claude.messages.create(model="refund-agent", max_tokens=5, messages=[], extra_headers=huge)
    assert caught.value.status_code == 431
    assert "limits.max_header_bytes" in caught.value.message
    gpt = openai.OpenAI(base_url=f"{router.url}/v1", api_key="k", max_retries=0)
    with gpt, pytest.raises(openai.APIStatusError) as failed:
        gpt.chat.completions.create(model="support-agent", messages=[], extra_headers=huge)
    assert failed.value.status_code == 431
    assert "limits.max_header_bytes" in failed.value.message


def test_valid_chunked_bodies_and_huge_strings_are_served(router: Router) -> None:
    assert exchange(router, chunked(BODY)).status == 200
    text = "é" * 100_000  # 200 KB of two-byte characters, under the 256 KiB limit
    big = orjson.dumps(
        {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": text}]}
    )
    answer = exchange(router, with_body(big))
    assert answer.status == 200, answer
    assert answer.headers["x-bundle-version"]


JSON_LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
ANY_JSON = st.recursive(
    JSON_LEAF,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
FIELDS = ("messages", "stream", "max_tokens", "system", "tools", "tool_choice", "metadata", "user")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=st.sampled_from(
        [("/v1/messages", "refund-agent"), ("/v1/chat/completions", "support-agent")]
    ),
    body=st.dictionaries(st.sampled_from(FIELDS), ANY_JSON, max_size=5),
)
def test_any_json_body_is_answered_and_never_by_a_router_500(
    router: Router, endpoint: tuple[str, str], body: dict[str, Any]
) -> None:
    path, route = endpoint
    with httpx.Client(base_url=router.url, timeout=10) as client:
        answer = client.post(path, json={**body, "model": route})
    if answer.headers.get("X-Router-Error"):
        assert answer.status_code < 500, answer.text  # the router's own fault, not the client's
