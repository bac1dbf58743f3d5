"""Fleet mode keeps secrets (issue 16): the Redis password and the provider keys never show up
in a process's log (at DEBUG, access log on), its /metrics, /readyz, status or status --fleet,
its files, nor in any value stored in Redis, through a change, a publish and a trip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from testing.fleet import Fleet, Member, wait_for
from testing.redis import RedisServer, require_redis
from testing.servers import ProviderProcess
from tests.e2e.fleet.test_propagation import (
    APPLIED_WITHIN,
    CANARY_MODEL,
    ROUTE,
    cli,
    publish,
    stack,
    trip_on,
)

REDIS_PASSWORD = "CANARY-redis-password-0005"  # noqa: S105 - a canary, not a secret
ANTHROPIC_KEY = "sk-ant-CANARY-fleet-key-0006"
OPENAI_KEY = "sk-CANARY-fleet-key-0007"
CANARIES = (REDIS_PASSWORD, ANTHROPIC_KEY, OPENAI_KEY)


def every_value(client: redis.Redis) -> dict[str, str]:
    """Every key in Redis with its value as text, whatever its type."""
    found: dict[str, str] = {}
    for key in client.scan_iter(count=1000):
        assert isinstance(key, str)  # the harness's client decodes
        kind = str(client.type(key))
        value: Any
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            raise AssertionError(f"{key} is a Redis {kind}, which this test does not read")
        found[f"redis {kind} {key}"] = str(value)
    return found


def seen_over_http(member: Member) -> dict[str, str]:
    metrics_url = member.router.metrics_url
    return {
        f"{member.name} /metrics": httpx.get(f"{metrics_url}/metrics", timeout=5).text,
        f"{member.name} /readyz": httpx.get(f"{metrics_url}/readyz", timeout=5).text,
        f"{member.name} status": cli(member.router.config_path, "status", "--json").stdout,
        f"{member.name} status --fleet": cli(
            member.router.config_path, "status", "--fleet", "--json"
        ).stdout,
    }


def files_of(member: Member) -> dict[str, str]:
    """Every file the process wrote: its logs, state, audit log, fleet marker, bundle cache."""
    return {
        f"{member.name} {path.relative_to(member.router.tmp)}": path.read_text(errors="replace")
        for path in sorted(member.router.tmp.rglob("*"))
        if path.is_file()
    }


def test_no_secret_appears_in_any_log_metric_status_or_redis_value(
    tmp_path: Path, provider: ProviderProcess
) -> None:
    require_redis()
    server = RedisServer(tmp_path, password=REDIS_PASSWORD)
    fleet: Fleet | None = None
    try:
        fleet = Fleet(
            tmp_path / "fleet",
            provider.url,
            server.url,
            [("us-east", "paid"), ("eu-west", "free")],
            env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY, "OPENAI_API_KEY": OPENAI_KEY},
            log_level="DEBUG",
            config={"access_log": "all"},
        )
        controller, tripping, other = fleet.controller, *fleet.sidecars
        seen: dict[str, str] = {}

        # A change and a publish from the CLI, requests on both providers' routes, a trip.
        weights = cli(controller.router.config_path, "weights", ROUTE, "v1.4=50", "v1.5=50")
        assert weights.returncode == 0, weights.stderr
        again = publish(fleet, "v1.5")
        assert again.returncode == 0 and "already published" in again.stdout, again
        seen["CLI output"] = weights.stdout + weights.stderr + again.stdout + again.stderr
        for sidecar in fleet.sidecars:

            def applied(sidecar: Member = sidecar) -> bool:
                return stack(sidecar.status()) == stack(controller.status())

            wait_for(f"{sidecar.name} applies the change", applied, APPLIED_WITHIN)
            answer = httpx.post(
                f"{sidecar.router.url}/v1/chat/completions",
                json={
                    "model": "support-agent",
                    "user": "s-1",
                    "messages": [{"role": "user", "content": "hi"}],
                },
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        provider.behave(model=CANARY_MODEL, error_rate=1.0)
        trip_on(tripping)

        def recorded() -> bool:
            records = controller.admin("GET", f"/audit?route={ROUTE}")
            return any(r["action"] == "trip" for r in records)

        wait_for("the controller records the trip", recorded, APPLIED_WITHIN)
        wait_for(
            f"{other.name} drains the canary",
            lambda: stack(other.status())["candidate_state"] == "rolled_back",
            APPLIED_WITHIN,
        )

        for member in [controller, *fleet.sidecars]:
            seen.update(seen_over_http(member))
        stored = every_value(server.client())
        for name in ("state", "events", "sidecars", "published", "bundle:"):
            assert any(f"}}:{name}" in key for key in stored), (name, sorted(stored))
        seen.update(stored)
        with pytest.raises(redis.AuthenticationError):  # the password was really needed
            redis.Redis(host="127.0.0.1", port=server.port).ping()
    finally:
        if fleet is not None:
            fleet.stop()  # the logs are complete once the processes are gone
        server.stop()
    for member in [fleet.controller, *fleet.sidecars]:
        seen.update(files_of(member))
    seen["redis log"] = server.log.read_text()

    # The canaries were really in play: the keys reached the provider, and the logs are at
    # DEBUG with a line for every request, and name Redis (its URL redacted).
    upstream = [r["headers"] for r in provider.requests(200)]
    assert any(h.get("x-api-key") == ANTHROPIC_KEY for h in upstream)
    assert any(h.get("authorization") == f"Bearer {OPENAI_KEY}" for h in upstream)
    log = seen[f"{fleet.sidecars[0].name} router.log"]
    assert " DEBUG " in log and '"path":"/v1/messages"' in log, log[-2000:]
    assert "redis://:***@127.0.0.1" in log
    for where, text in seen.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} appears in {where}"
