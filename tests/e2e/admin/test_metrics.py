"""Exact telemetry after known traffic, read from the real /metrics (and a real Prometheus)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from router.dev.ports import free_port
from testing.servers import REPO, ProviderProcess, Router, router_config
from tests.e2e.traffic import leave_mid_stream

HI: list[MessageParam] = [{"role": "user", "content": "hi"}]
HI_CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
OPUS = "claude-opus-4-7-20260108"  # refund-agent v1.5
GPT = "gpt-5.4-2026-03-05"  # support-agent
USAGE = {
    "input_tokens": 10_000,
    "output_tokens": 2_000,
    "cache_read_tokens": 3_000,
    "cache_write_tokens": 1_000,
}


def scrape(router: Router) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{router.metrics_url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def telemetry_router(fake: ProviderProcess, start_router: Callable[..., Router]) -> Router:
    """A fresh router (counters at zero) where every route allows version overrides. Its
    guardrails are off: these tests pin failing answers on the canary, and a trip would
    rightly end overrides to it."""
    config = router_config(fake.url)
    for route in config["routes"].values():
        route["allow_version_override"] = True
        route["guardrails"] = "off"
    config["routes"]["refund-agent"]["refusal_patterns"] = ["(?i)cannot process refunds"]
    return start_router(config)


def claude(router: Router) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=router.url,
        api_key="k",
        max_retries=0,
        default_headers={"X-Bundle-Version": "v1.5"},
    )


def gpt(router: Router) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{router.url}/v1",
        api_key="k",
        max_retries=0,
        default_headers={"X-Bundle-Version": "v2.1"},
    )


def ask_claude(router: Router, stream: bool) -> None:
    with claude(router) as client:
        if stream:
            with client.messages.stream(model="refund-agent", max_tokens=5, messages=HI) as s:
                s.until_done()
        else:
            client.messages.create(model="refund-agent", max_tokens=5, messages=HI)


def ask_gpt(router: Router, stream: bool) -> None:
    with gpt(router) as client:
        if stream:
            for _ in client.chat.completions.create(
                model="support-agent", messages=HI_CHAT, stream=True
            ):
                pass
        else:
            client.chat.completions.create(model="support-agent", messages=HI_CHAT)


def test_requests_tokens_and_cost_exact(fake: ProviderProcess, telemetry_router: Router) -> None:
    router = telemetry_router
    fake.behave(OPUS, **USAGE)
    fake.behave(GPT, **USAGE)
    for stream in (False, False, False, True, True):
        ask_claude(router, stream)
    for stream in (False, False, True, True):
        ask_gpt(router, stream)
    m = scrape(router)
    v15 = {"route": "refund-agent", "version": "v1.5"}
    v21 = {"route": "support-agent", "version": "v2.1"}
    assert value(m, "router_requests_total", **v15, outcome="ok") == 5
    assert value(m, "router_requests_total", **v21, outcome="ok") == 4
    assert value(m, "router_request_duration_seconds_count", **v15) == 5
    assert value(m, "router_time_to_first_token_seconds_count", **v15) == 2  # streams only
    assert value(m, "router_overhead_seconds_count", **v21) == 4
    # Anthropic reports all four kinds; usage comes from message_start + message_delta.
    for kind, per_answer in (
        ("input", 10_000),
        ("output", 2_000),
        ("cache_read", 3_000),
        ("cache_write", 1_000),
    ):
        assert value(m, "router_tokens_total", **v15, kind=kind) == 5 * per_answer
    # OpenAI: cached tokens are split out of prompt_tokens; no cache writes are reported.
    assert value(m, "router_tokens_total", **v21, kind="input") == 4 * 10_000
    assert value(m, "router_tokens_total", **v21, kind="cache_read") == 4 * 3_000
    assert value(m, "router_tokens_total", **v21, kind="output") == 4 * 2_000
    # USD per million: opus 15 in / 75 out / 1.5 cache read / 18.75 cache write.
    opus = (10_000 * 15 + 2_000 * 75 + 3_000 * 1.5 + 1_000 * 18.75) / 1e6  # 0.32325
    assert round(value(m, "router_cost_usd_total", **v15), 2) == round(5 * opus, 2) == 1.62
    assert value(m, "router_cost_usd_total", **v15) == pytest.approx(5 * opus, abs=1e-9)
    gpt_cost = (10_000 * 1.25 + 2_000 * 10 + 3_000 * 0.125) / 1e6  # 0.032875
    assert value(m, "router_cost_usd_total", **v21) == pytest.approx(4 * gpt_cost, abs=1e-9)
    assert value(m, "router_usage_incomplete_total", **v15) == 0
    assert value(m, "router_weight_ratio", **v15) == 0.05
    digest = next(
        labels
        for (name, labels) in m
        if name == "router_build_info" and ("version", "v1.5") in labels
    )
    assert len(dict(digest)["digest"]) == 12


def test_explicit_zero_usage_is_complete_and_free(
    fake: ProviderProcess, telemetry_router: Router
) -> None:
    fake.behave(GPT, input_tokens=0, output_tokens=0)
    ask_gpt(telemetry_router, stream=True)
    ask_gpt(telemetry_router, stream=False)
    m = scrape(telemetry_router)
    v21 = {"route": "support-agent", "version": "v2.1"}
    assert value(m, "router_requests_total", **v21, outcome="ok") == 2
    assert value(m, "router_usage_incomplete_total", **v21) == 0
    assert value(m, "router_cost_usd_total", **v21) == 0


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_by_result(
    fake: ProviderProcess, telemetry_router: Router, stream: bool
) -> None:
    router = telemetry_router
    for kind, times in (("valid", 2), ("schema", 3), ("unknown_tool", 1), ("not_json", 2)):
        invalid = 0.0 if kind == "valid" else 1.0
        fake.behave(
            OPUS,
            tool_call_rate=1.0,
            invalid_tool_call_rate=invalid,
            invalid_tool_call_kind="schema" if kind == "valid" else kind,
        )
        fake.behave(
            GPT,
            tool_call_rate=1.0,
            invalid_tool_call_rate=invalid,
            invalid_tool_call_kind="schema" if kind == "valid" else kind,
        )
        for _ in range(times):
            ask_gpt(router, stream)
            if kind != "not_json" or stream:  # Anthropic JSON tool input is always an object
                ask_claude(router, stream)
    m = scrape(router)
    for labels, not_json in (
        ((("support-agent", "v2.1")), 2),
        ((("refund-agent", "v1.5")), 2 if stream else 0),
    ):
        route, version = labels
        tool = {"route": route, "version": version}
        assert value(m, "router_tool_calls_total", **tool, result="valid") == 2
        assert value(m, "router_tool_calls_total", **tool, result="invalid_arguments") == 3
        assert value(m, "router_tool_calls_total", **tool, result="unknown_tool") == 1
        assert value(m, "router_tool_calls_total", **tool, result="invalid_json") == not_json


@pytest.mark.parametrize("stream", [False, True])
def test_refusals(fake: ProviderProcess, telemetry_router: Router, stream: bool) -> None:
    router = telemetry_router
    fake.behave(OPUS, refusal_rate=1.0)
    fake.behave(GPT, refusal_rate=1.0)
    ask_claude(router, stream)  # stop_reason: refusal
    ask_gpt(router, stream)  # message.refusal / delta.refusal
    fake.behave(OPUS, refusal_rate=0.0, text="Sorry, I cannot process refunds on Sundays.")
    ask_claude(router, stream)  # the route's refusal pattern
    fake.behave(OPUS, text="Your refund is on its way.")
    ask_claude(router, stream)  # not a refusal
    m = scrape(router)
    assert value(m, "router_refusals_total", route="refund-agent", version="v1.5") == 2
    assert value(m, "router_refusals_total", route="support-agent", version="v2.1") == 1


def test_every_error_kind(
    fake: ProviderProcess, telemetry_router: Router, start_router: Any
) -> None:
    router = telemetry_router
    for kind, times in (("400", 1), ("500", 2), ("529", 1), ("429", 3), ("reset", 2)):
        fake.behave(OPUS, error_rate=1.0, error_kind=kind)
        for _ in range(times):
            with pytest.raises((anthropic.APIStatusError, anthropic.APIConnectionError)):
                ask_claude(router, stream=False)
    fake.behave(OPUS, error_rate=0.0)
    # A route policy the request breaks, after a version was chosen: the router's own error.
    httpx.post(
        f"{router.url}/v1/messages",
        headers={"X-Bundle-Version": "v1.5"},
        json={"model": "refund-agent", "max_tokens": 5, "messages": "not a list"},
    )
    # A stream the provider ends before its final event.
    fake.behave(OPUS, stream_truncate_after=3)
    truncated = httpx.post(
        f"{router.url}/v1/messages",
        headers={"X-Bundle-Version": "v1.5"},
        json={"model": "refund-agent", "max_tokens": 5, "messages": HI, "stream": True},
    )
    assert "upstream_stream_truncated" in truncated.text.split("\n\n")[-2]
    fake.behave(OPUS, stream_truncate_after=None, latency_ms=3000)
    # A client that leaves while the provider thinks.
    with claude(router) as client, pytest.raises(anthropic.APITimeoutError):
        client.with_options(timeout=0.5).messages.create(
            model="refund-agent", max_tokens=5, messages=HI
        )
    time.sleep(0.3)
    m = scrape(router)
    v15 = {"route": "refund-agent", "version": "v1.5"}
    expected = {
        "provider_4xx": 1,
        "provider_5xx": 3,
        "provider_429": 3,
        "connect_error": 3,
        "router_error": 1,
        "client_disconnect": 1,
        "ok": 0,
        "timeout": 0,
    }
    got = {o: value(m, "router_requests_total", **v15, outcome=o) for o in expected}
    assert got == expected
    # The truncated stream and the client that left: neither has its final usage.
    assert value(m, "router_usage_incomplete_total", **v15) == 2

    # A provider slower than the route's timeout.
    config = router_config(fake.url)
    config["routes"]["refund-agent"]["allow_version_override"] = True
    config["providers"]["anthropic"]["timeouts"] = {"total": "200ms"}
    slow = start_router(config)
    with pytest.raises(anthropic.APIStatusError):
        ask_claude(slow, stream=False)
    assert value(scrape(slow), "router_requests_total", **v15, outcome="timeout") == 1


def test_client_disconnect_mid_stream_is_incomplete(
    fake: ProviderProcess, telemetry_router: Router
) -> None:
    fake.behave(OPUS, stream_interval_ms=200, stream_chunks=30)
    assert b"200 OK" in leave_mid_stream(telemetry_router.url, b"X-Bundle-Version: v1.5")
    v15 = {"route": "refund-agent", "version": "v1.5"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        m = scrape(telemetry_router)
        if value(m, "router_requests_total", **v15, outcome="client_disconnect") == 1:
            break
        time.sleep(0.1)
    assert value(m, "router_requests_total", **v15, outcome="client_disconnect") == 1
    assert value(m, "router_usage_incomplete_total", **v15) == 1
    # What message_start told is counted (the provider bills the input anyway); the
    # output stops at message_start's 1, as the final count never came.
    assert value(m, "router_tokens_total", **v15, kind="input") > 0
    assert value(m, "router_tokens_total", **v15, kind="output") == 1
    assert value(m, "router_cost_usd_total", **v15) > 0
    windows = httpx.get(f"{telemetry_router.metrics_url}/windows").json()
    assert windows["refund-agent"]["v1.5"]["cost_per_request_usd"] is None  # no complete answer


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_before_the_first_token_cancels_upstream(
    stream: bool, fake: ProviderProcess, telemetry_router: Router
) -> None:
    fake.behave(OPUS, latency_ms=4000)
    body = orjson.dumps(
        {"model": "refund-agent", "max_tokens": 5, "stream": stream, "messages": HI}
    )
    host, port = telemetry_router.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Bundle-Version: v1.5\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.monotonic() + 2
        while fake.last()["outcome"] != "pending" and time.monotonic() < deadline:
            time.sleep(0.05)  # until the provider is thinking about it
    left = time.monotonic()
    while fake.last()["outcome"] == "pending" and time.monotonic() < left + 3:
        time.sleep(0.05)
    assert fake.last()["outcome"] == "client_closed"  # seen before the 4 s answer was due
    v15 = {"route": "refund-agent", "version": "v1.5"}
    m = scrape(telemetry_router)
    assert value(m, "router_requests_total", **v15, outcome="client_disconnect") == 1
    assert value(m, "router_usage_incomplete_total", **v15) == 1
    assert value(m, "router_tokens_total", **v15, kind="input") == 0  # nothing was known


def test_feedback(fake: ProviderProcess, telemetry_router: Router) -> None:
    router = telemetry_router
    with claude(router) as client:
        raw = client.messages.with_raw_response.create(
            model="refund-agent", max_tokens=5, messages=HI
        )
    request_id = raw.headers["X-Request-Id"]
    url = f"{router.url}/v1/feedback"
    first = httpx.post(url, json={"request_id": request_id, "passed": True, "score": 0.75})
    assert first.status_code == 200
    assert first.json() == {
        "request_id": request_id,
        "route": "refund-agent",
        "version": "v1.5",
        "recorded": True,
    }
    again = httpx.post(url, json={"request_id": request_id, "passed": True, "score": 0.75})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    conflict = httpx.post(url, json={"request_id": request_id, "passed": False})
    assert conflict.status_code == 409
    unknown = httpx.post(url, json={"request_id": "never-served", "passed": True})
    assert unknown.status_code == 404 and "unknown or expired" in unknown.json()["error"]["message"]
    bad = httpx.post(url, json={"request_id": request_id, "passed": "yes"})
    assert bad.status_code == 400
    with gpt(router) as openai_client:
        raw_chat = openai_client.chat.completions.with_raw_response.create(
            model="support-agent", messages=HI_CHAT
        )
    by_header = httpx.post(
        url, json={"passed": False}, headers={"X-Request-Id": raw_chat.headers["X-Request-Id"]}
    )
    assert by_header.json()["version"] == "v2.1"
    m = scrape(router)
    v15 = {"route": "refund-agent", "version": "v1.5"}
    assert value(m, "router_eval_feedback_total", **v15, result="pass") == 1
    assert value(m, "router_eval_feedback_total", **v15, result="fail") == 0
    assert value(m, "router_eval_score_sum", **v15) == 0.75
    assert value(m, "router_eval_score_count", **v15) == 1
    assert (
        value(m, "router_eval_feedback_total", route="support-agent", version="v2.1", result="fail")
        == 1
    )


def test_overhead_header_and_windows(fake: ProviderProcess, telemetry_router: Router) -> None:
    with claude(telemetry_router) as client:
        raw = client.messages.with_raw_response.create(
            model="refund-agent", max_tokens=5, messages=HI
        )
    overhead_ms = float(raw.headers["X-Router-Overhead-Ms"])
    assert 0 < overhead_ms < 1000
    windows = httpx.get(f"{telemetry_router.metrics_url}/windows").json()
    v15 = windows["refund-agent"]["v1.5"]
    assert v15["requests"] == 1 and v15["error_rate"] == 0 and v15["weight_percent"] == 5.0
    assert v15["p95_seconds"] > 0


def test_counted_client_system_prompts_and_sessionless(
    fake: ProviderProcess, telemetry_router: Router
) -> None:
    router = telemetry_router
    httpx.post(
        f"{router.url}/v1/messages",
        json={"model": "refund-agent", "max_tokens": 5, "system": "mine", "messages": HI},
    )
    m = scrape(router)
    assert (
        value(m, "router_client_system_prompts_total", route="refund-agent", policy="replace") == 1
    )
    # No session key: the first user message keys the conversation instead (fingerprint).
    assert value(m, "router_sessionless_requests_total", route="refund-agent") == 0
    assert value(m, "router_session_keys_total", route="refund-agent", source="fingerprint") == 1


PROMETHEUS = shutil.which("prometheus")


@pytest.mark.skipif(
    PROMETHEUS is None and not os.environ.get("CI"),
    reason="needs Debian's prometheus package (.ci/run installs it)",
)
def test_real_prometheus_scrapes_the_router(
    fake: ProviderProcess, telemetry_router: Router, tmp_path: Path
) -> None:
    assert PROMETHEUS, "prometheus is not installed: apt-get install prometheus"
    ask_claude(telemetry_router, stream=False)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: bundle-router\n"
        f"    static_configs: [{{targets: ['{telemetry_router.config['metrics_listen']}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    server = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        query = 'router_requests_total{route="refund-agent",version="v1.5",outcome="ok"}'
        result: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not result:
            time.sleep(0.5)
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}
                ).json()
            except httpx.HTTPError:
                continue
            result = answer.get("data", {}).get("result", [])
        assert result, (tmp_path / "prometheus.log").read_text()[-2000:]
        assert float(result[0]["value"][1]) == 1
        assert result[0]["metric"]["job"] == "bundle-router"
        # Every query of the Grafana dashboard is valid PromQL over these metrics.
        dashboard = json.loads((REPO / "deploy" / "grafana" / "bundle-router.json").read_text())
        for panel in dashboard["panels"]:
            expr = panel["targets"][0]["expr"].replace("$route", ".*")
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}
            ).json()
            assert answer["status"] == "success", (panel["title"], answer)
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()
