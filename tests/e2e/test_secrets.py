"""Secrets: keys put anywhere a client or operator might put them never show up in a log
line (at DEBUG, with the access log on for every request), a metric, the audit log, the
state file or an error body; a client's key never reaches the provider; a client-supplied
host never changes the upstream."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_api import cli
from tests.e2e.proxy.test_malformed import exchange, head

ROUTER_KEY = "sk-ant-CANARY-router-key-0001"
CLIENT_KEY = "sk-ant-CANARY-client-key-0002"
QUERY_KEY = "sk-CANARY-query-key-0003"
WEBHOOK_TOKEN = "CANARY-webhook-token-0004"  # noqa: S105 - a canary, not a secret
CANARIES = (ROUTER_KEY, CLIENT_KEY, QUERY_KEY, WEBHOOK_TOKEN)
BODY = {"model": "refund-agent", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_keys_appear_nowhere_they_should_not(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url, access_log="all")  # a line for every request below
    config["notify"] = {"webhook_url_env": "TEST_HOOK", "attempts": 1, "timeout": "1s"}
    router = start_router(
        config,
        env={
            "ANTHROPIC_API_KEY": ROUTER_KEY,
            "TEST_HOOK": f"http://127.0.0.1:9/services/{WEBHOOK_TOKEN}",  # nothing listens
        },
        log_level="DEBUG",
    )
    client_headers = {
        "Authorization": f"Bearer {CLIENT_KEY}",
        "x-api-key": CLIENT_KEY,
        "Host": "evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Session-Id": "s-secrets",
    }
    bodies: list[str] = []
    with httpx.Client(base_url=router.url, headers=client_headers) as client:
        for body in (BODY, {**BODY, "stream": True}, {**BODY, "api_key": CLIENT_KEY}):
            answer = client.post(f"/v1/messages?key={QUERY_KEY}", json=body)
            assert answer.status_code == 200
        fake.behave(error_rate=1.0, error_kind="400")
        bodies.append(client.post("/v1/messages", json=BODY).text)  # the provider's 4xx
        fake.behave(error_rate=1.0, error_kind="401")
        refused = client.post("/v1/messages", json=BODY)  # the provider refuses the router's key
        assert refused.status_code == 401
        bodies.append(refused.text)
        fake.behave(error_rate=1.0, error_kind="reset")
        bodies.append(client.post("/v1/messages", json=BODY).text)  # a broken connection
        bodies.append(client.post(f"/v1/nope?key={QUERY_KEY}", json=BODY).text)
        # A key in the path: the 404 names the path back to its own client; no log may.
        assert client.post(f"/v1/{CLIENT_KEY}/messages", json=BODY).status_code == 404
        bodies.append(client.post("/v1/messages", content=f"{{{CLIENT_KEY}").text)  # bad JSON
        bodies.append(client.post("/v1/messages", json={**BODY, "model": "x"}).text)
        for malformed in (  # the parser's own errors would quote these bytes
            head(b"Authorization: Bearer " + CLIENT_KEY.encode() + b"k" * 9000),
            head(b"X-Note: a\nx-api-key: " + CLIENT_KEY.encode()),
        ):
            bodies.append(exchange(router, malformed).body.decode())
        metrics = client.get(f"{router.metrics_url}/metrics").text
        windows = client.get(f"{router.metrics_url}/windows").text
        rollouts = client.get(f"{router.metrics_url}/rollouts").text
    cli(router, "rollback", "refund-agent", "--reason", "secrets test")  # audited + announced
    status = cli(router, "status", "--json").stdout

    upstream = fake.requests(20)
    for request in upstream:
        headers = request["headers"]
        assert CLIENT_KEY not in str(headers), "a client key reached the provider"
        assert headers.get("host", "").startswith("127.0.0.1"), headers.get("host")
        assert "x-forwarded-host" not in headers
    assert any(r["headers"].get("x-api-key") == ROUTER_KEY for r in upstream)  # where it belongs

    router.stop()  # flush the log
    seen = {
        "router log": router.process.output(),
        "metrics": metrics,
        "windows": windows,
        "rollouts": rollouts,
        "status": status,
        "audit log": (router.state_dir / "audit.jsonl").read_text(),
        "state file": (router.state_dir / "state.json").read_text(),
        "error bodies": "\n".join(bodies),
    }
    assert "DEBUG" in seen["router log"]  # the log really was at DEBUG
    assert '"path":"/v1/messages"' in seen["router log"]  # and the access log was on
    assert "webhook to 127.0.0.1:9 failed" in seen["router log"]  # named by host only
    for where, text in seen.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} appears in the {where}"
