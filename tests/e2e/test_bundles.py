"""Hostile bundles against the running router: a schema pattern that would stall a
backtracking engine, and a new version whose prompt reads outside its folder (loading itself
is tested in process in tests/unit/test_bundles.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from testing.bundles import new_version, own_bundles, set_pattern, with_bundles
from testing.servers import ProviderProcess, Router, router_config
from tests.e2e.admin.test_api import cli
from tests.e2e.admin.test_metrics import scrape, value
from tests.unit.test_bundles import CANARY, edit


async def test_a_backtracking_pattern_cannot_stall_the_router(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    """The issue's attack, through the real router: the model picks an argument that takes a
    backtracking engine 2**40 steps. Requests running beside it complete, and both verdicts
    are RE2's."""
    folder = own_bundles(tmp_path)
    set_pattern(folder / "refund-agent" / "v1.5", "^(a+)+$", example="a" * 40 + "!")
    set_pattern(folder / "refund-agent" / "v1.4", r"^\d+$", example="١٢٣٤")
    config = with_bundles(router_config(fake.url), folder)
    config["routes"]["refund-agent"]["allow_version_override"] = True
    router = start_router(config)
    fake.behave(tool_call_rate=1.0, tool_pick="first")  # the tool with the pattern

    async def ask(client: httpx.AsyncClient, route: str, version: str) -> int:
        body = {"model": route, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
        path = "/v1/messages" if route == "refund-agent" else "/v1/chat/completions"
        answer = await client.post(path, json=body, headers={"X-Bundle-Version": version})
        return answer.status_code

    async with httpx.AsyncClient(base_url=router.url, timeout=20) as client:
        statuses = await asyncio.gather(
            ask(client, "refund-agent", "v1.5"),
            ask(client, "refund-agent", "v1.4"),
            ask(client, "support-agent", "v2.1"),
        )
    assert list(statuses) == [200, 200, 200]  # gather answers a list; typeshed says tuple
    metrics = scrape(router)
    for version in ("v1.5", "v1.4"):
        labels = {"route": "refund-agent", "version": version}
        assert value(metrics, "router_tool_calls_total", **labels, result="invalid_arguments") == 1
        assert value(metrics, "router_tool_calls_total", **labels, result="valid") == 0


def test_deploy_and_reload_refuse_a_bundle_that_reads_outside_its_folder(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    """The issue's attack on the running router: a new version whose prompt is the router's
    own environment. Refused, and nothing of it ever goes upstream."""
    folder = own_bundles(tmp_path)
    config = with_bundles(router_config(fake.url), folder)
    config["routes"]["refund-agent"]["allow_version_override"] = True
    router = start_router(config, env={"BUNDLE_CANARY": CANARY})
    new_version(folder, "refund-agent", "v1.5", "v1.6")
    edit(folder / "refund-agent" / "v1.6" / "bundle.yaml", prompt="/proc/self/environ")
    for command in (["reload"], ["deploy", "refund-agent", "v1.6"]):
        done = cli(router, *command)
        assert done.returncode == 1, done.stdout
        assert f"{folder}/refund-agent/v1.6/bundle.yaml: prompt" in done.stderr
        assert "nothing was changed" in done.stderr and CANARY not in done.stderr
    httpx.post(
        f"{router.url}/v1/messages",
        json={
            "model": "refund-agent",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"X-Bundle-Version": "v1.6"},
        timeout=10,
    )
    assert not any(CANARY in str(request) for request in fake.requests(100))
