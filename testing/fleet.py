"""A fleet on this machine for the tests and the benchmarks: controllers and sidecars as real
`bundle-router` processes, all on one fake provider and one Redis (testing.redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from router.admin.client import call
from testing.servers import EXAMPLE_BUNDLES, Router, router_config

REDIS_ENV = "BUNDLE_ROUTER_REDIS_URL"


def fleet_block(name: str, instance: str, region: str, pool: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "instance": instance, "region": region, "pool": pool, **more}


class Member:
    """One process of the fleet: a `Router` plus the admin calls the tests make."""

    def __init__(self, router: Router, name: str) -> None:
        self.router = router
        self.name = name

    @property
    def socket(self) -> Path:
        return self.router.tmp / "run" / "admin.sock"

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return call(self.socket, method, path, body, actor="test")

    def answer(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """The HTTP status and JSON of one admin call, refusals included (`admin` raises
        on a refusal with its message only; this keeps its code)."""
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://admin", timeout=60) as client:
            response = client.request(method, path, json=body, headers={"X-Actor": "test"})
        return response.status_code, response.json()

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("GET", "/status")
        return result

    def epoch(self) -> int:
        return int(self.status()["fleet"]["epoch"])

    def served(self, route: str, n: int = 20, path: str = "/v1/messages") -> set[str]:
        """The versions that answered `n` requests, each with a new session."""
        seen = set()
        with httpx.Client(base_url=self.router.url, timeout=10) as client:
            for _ in range(n):
                answer = client.post(
                    path,
                    json={
                        "model": route,
                        "max_tokens": 16,
                        "messages": [{"role": "user", "content": "hello"}],
                    },
                    headers={"X-Session-Id": uuid.uuid4().hex},
                )
                answer.raise_for_status()
                seen.add(answer.headers["X-Bundle-Version"])
        return seen


class Fleet:
    """`controllers` controllers and one sidecar per entry of `sidecars` ((region, pool)
    each), on `redis_url`. Extra keys of the fleet block go in `fleet`; top-level config
    keys in `config`, and in `controller_config` those for the controllers only (such as
    `routes` whose bundle folder has versions the sidecars must fetch). `env` is added to
    every process's environment (such as provider keys). `redis_urls` gives a member (by
    name: "control-0", "sidecar-2") a Redis URL of its own, such as a Partition's in front
    of the same Redis; `provider_urls` a provider of its own (a regression in one region)."""

    def __init__(
        self,
        tmp: Path,
        provider_url: str,
        redis_url: str,
        sidecars: list[tuple[str, str]],
        *,
        controllers: int = 1,
        name: str = "test",
        fleet: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        controller_config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        log_level: str = "INFO",
        redis_urls: dict[str, str] | None = None,
        provider_urls: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.name = name
        self.env = {**(env or {}), REDIS_ENV: redis_url}
        self.provider_url = provider_url
        self.extra_fleet = fleet or {}
        self.extra_config = config or {}
        self.controller_config = controller_config or {}
        self.log_level = log_level
        self.redis_urls = redis_urls or {}
        self.provider_urls = provider_urls or {}
        self.controllers: list[Member] = []
        self.sidecars: list[Member] = []
        try:
            for i in range(controllers):
                self.controllers.append(
                    self._start(f"control-{i}", "control", "control", "control")
                )
            for i, (region, pool) in enumerate(sidecars):
                self.sidecars.append(self._start(f"sidecar-{i}", "serve", region, pool))
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, command: str, region: str, pool: str) -> Member:
        block = fleet_block(self.name, name, region, pool, **self.extra_fleet)
        provider = self.provider_urls.get(name, self.provider_url)
        config = router_config(provider, fleet=block, **self.extra_config)
        if command == "control":
            config.update(self.controller_config)
        env = {**self.env, REDIS_ENV: self.redis_urls.get(name, self.env[REDIS_ENV])}
        router = Router(self.tmp / name, config, env, self.log_level, command)
        return Member(router, name)

    def add_sidecar(self, region: str, pool: str) -> Member:
        """One more sidecar, started now, named after the ones before it."""
        member = self._start(f"sidecar-{len(self.sidecars)}", "serve", region, pool)
        self.sidecars.append(member)
        return member

    @property
    def controller(self) -> Member:
        return self.controllers[0]

    def stop(self) -> None:
        for member in [*self.sidecars, *self.controllers]:
            member.router.stop()


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll `check` until it is true; the seconds it took. Fails naming `what`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout}s")


NEW, OLD = "v1.5", "v1.4"  # refund-agent's candidate and active in the example


def rolling_routes(**waves: Any) -> dict[str, Any]:
    """refund-agent with v1.5 deployed at 0 %, rolled out in waves only (no canary steps),
    with guardrails that judge on few answers (light test traffic)."""
    example = yaml.safe_load((EXAMPLE_BUNDLES.parent / "router.yaml").read_text())
    route = example["routes"]["refund-agent"]
    route["bundles"] = str(EXAMPLE_BUNDLES / "refund-agent")
    route["weights"] = {OLD: 100, NEW: 0}
    route["guardrails"] = {
        "error_rate": {"max": "5%", "min_samples": 5},
        "p95_latency": "off",
        "cost_per_request": "off",
        "tool_call_failure_rate": "off",
        "refusal_rate": "off",
    }
    route["rollout"] = {
        "steps": [100],
        "waves": {
            "order": "region",
            "groups": ["us-east", "us-west", "eu"],
            "size": 1,
            "bake": "1s",
            "min_samples": 5,
            **waves,
        },
    }
    support = example["routes"]["support-agent"]
    support["bundles"] = str(EXAMPLE_BUNDLES / "support-agent")
    return {"refund-agent": route, "support-agent": support}
