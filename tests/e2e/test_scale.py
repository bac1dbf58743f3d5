"""A large configuration: a router with a few hundred routes starts, reloads and scrapes
correctly (that an old configuration leaves nothing behind for the garbage collector is in
tests/unit/test_build.py). No timings here: `python -m benchmarks.scale` measures them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.scale import PRICES, config, route_name, write_bundles, write_version
from router.admin.client import call
from testing.servers import ProviderProcess, Router

ROUTES = 300
FIRST = 250  # routes before the reload
ODD_MODEL = 'odd "model" \\ name'  # a label value that needs escaping (allowed in dev)
MODEL = "claude-sonnet-4-6-20260215"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(router: Router) -> Samples:
    """/metrics parsed, without the histograms' bucket lines (nine lines in ten; the parser
    takes seconds for them, and tests/e2e/admin/test_metrics.py reads buckets on a small config)."""
    text = httpx.get(f"{router.metrics_url}/metrics", timeout=30).text
    text = "\n".join(line for line in text.splitlines() if "_bucket{" not in line)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def rv(route: int, version: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"route": route_name(route), "version": version, **more}.items())


def ask(router: Router, route: int) -> None:
    """One small request; even routes speak Anthropic, odd ones OpenAI (write_bundles)."""
    path = "/v1/messages" if route % 2 == 0 else "/v1/chat/completions"
    body = {
        "model": route_name(route),
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    answer = httpx.post(f"{router.url}{path}", json=body, headers={"X-Session-Id": "s"})
    assert answer.status_code == 200, answer.text


def served(metrics: Samples, route: int) -> float:
    return sum(metrics[("router_requests_total", rv(route, v, outcome="ok"))] for v in ("v1", "v2"))


def models(router: Router) -> set[str]:
    return {model["id"] for model in httpx.get(f"{router.url}/v1/models").json()["data"]}


def test_a_few_hundred_routes_start_reload_and_scrape(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    bundles = tmp_path / "bundles"
    write_bundles(bundles, ROUTES, 2)
    write_version(bundles / route_name(2), route_name(2), "v2", ODD_MODEL, "[]\n", "anthropic")
    settings = {**config(tmp_path, fake.url, FIRST, PRICES), "environment": "dev"}
    router = start_router(settings)
    assert models(router) == {route_name(i) for i in range(FIRST)}
    for route in (0, 1, FIRST - 1):
        ask(router, route)
    metrics = scrape(router)
    for i in range(FIRST):
        for version, weight in (("v1", 0.95), ("v2", 0.05)):
            assert metrics[("router_weight_ratio", rv(i, version))] == weight, (i, version)
    assert served(metrics, 0) == served(metrics, 1) == served(metrics, FIRST - 1) == 1
    assert served(metrics, 2) == 0
    build = [dict(labels) for name, labels in metrics if name == "router_build_info"]
    assert {"route": route_name(2), "version": "v2", "model": ODD_MODEL}.items() <= next(
        b for b in build if b["route"] == route_name(2) and b["version"] == "v2"
    ).items()

    # Reload: 50 more routes, and a third version for route 0.
    write_version(bundles / route_name(0), route_name(0), "v3", MODEL, "[]\n")
    grown = {**settings, "routes": config(tmp_path, fake.url, ROUTES, PRICES)["routes"]}
    router.config_path.write_text(yaml.safe_dump(grown))
    summary = call(router.tmp / "run" / "admin.sock", "POST", "/reload", {"reason": "grow"})
    assert summary["routes_added"] == [route_name(i) for i in range(FIRST, ROUTES)]
    assert summary["versions_added"] == {route_name(0): ["v3"]}

    assert models(router) == {route_name(i) for i in range(ROUTES)}
    ask(router, ROUTES - 1)
    metrics = scrape(router)
    for i in range(ROUTES):
        for version, weight in (("v1", 0.95), ("v2", 0.05)):
            assert metrics[("router_weight_ratio", rv(i, version))] == weight, (i, version)
    assert metrics[("router_weight_ratio", rv(0, "v3"))] == 0.0
    # The counters of unchanged versions survived the reload.
    assert served(metrics, 0) == served(metrics, ROUTES - 1) == 1
