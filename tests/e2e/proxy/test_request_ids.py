"""Request ids: a client's X-Request-Id is kept only when it is short and plain, and an id
names one answer only, so that feedback always judges the answer it was given for."""

from __future__ import annotations

import re
import uuid

import httpx

from testing.servers import Router

BODY = {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
FRESH = re.compile(r"^[0-9a-f]{32}$")  # the router's own ids: uuid4().hex


def ask(router: Router, request_id: str) -> str:
    response = httpx.post(
        f"{router.url}/v1/messages", json=BODY, headers={b"X-Request-Id": request_id.encode()}
    )
    assert response.status_code == 200, response.text
    return response.headers["X-Request-Id"]


def feedback(router: Router, request_id: str, passed: bool) -> httpx.Response:
    return httpx.post(
        f"{router.url}/v1/feedback", json={"request_id": request_id, "passed": passed}
    )


def test_a_short_plain_request_id_is_kept(router: Router) -> None:
    own = f"req_{uuid.uuid4().hex}-agent.7:{'x' * 80}"[:128]
    assert ask(router, own) == own
    assert feedback(router, own, True).json()["recorded"] is True


def test_a_long_or_unsafe_request_id_is_replaced_and_never_remembered(router: Router) -> None:
    for sent in ("a" * 129, "k" * 8000, "two words", 'quote"d', "caf\u00e9"):
        served = ask(router, sent)
        assert served != sent and FRESH.match(served), (sent[:20], served)
        assert feedback(router, served, True).json()["recorded"] is True  # the fresh id counts
        refused = feedback(router, sent, True)
        assert refused.status_code in (400, 404), refused.text
        assert len(refused.text) < 1000  # the error does not echo a long id back


def test_a_reused_request_id_gets_a_fresh_one_so_the_first_verdict_counts(router: Router) -> None:
    first = f"reused-{uuid.uuid4().hex}"
    assert ask(router, first) == first
    assert feedback(router, first, True).json()["recorded"] is True
    second = ask(router, first)  # a second answer under the same id
    assert second != first and FRESH.match(second)
    conflict = feedback(router, first, False)
    assert conflict.status_code == 409, conflict.text  # the first answer's verdict still stands
    assert feedback(router, second, False).json()["recorded"] is True
