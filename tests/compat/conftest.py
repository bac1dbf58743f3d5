"""The compatibility suite's stack: one fake provider and one router for the whole suite, the
example config with both routes at 50/50 between their two versions (so a conversation that
hopped would show), and no network for the frameworks.

Run it with the venv that has the `compat` extra: `.venv-compat/bin/pytest tests/compat`
(scripts/setup makes it; scripts/check runs it)."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from tests.servers import FakeProvider, Router, router_config

try:
    importlib.metadata.version("openai-agents")
except importlib.metadata.PackageNotFoundError:
    pytest.exit(
        "tests/compat needs the agent frameworks of the `compat` extra: run it with "
        ".venv-compat/bin/pytest tests/compat (scripts/setup makes .venv-compat)",
        returncode=4,
    )

# Before any framework is imported: no tracing, telemetry or downloads, at import or run time.
os.environ.update(
    {
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGSMITH_TRACING": "false",
        "DO_NOT_TRACK": "1",
    }
)

ROUTES = {"refund-agent": ("v1.4", "v1.5"), "support-agent": ("v2.0", "v2.1")}
MODELS = ("claude-sonnet-4-6-20260215", "claude-opus-4-7-20260108", "gpt-5.4-2026-03-05")
RUNS = 12  # multi-turn runs per framework; at 50/50 a run of 4 calls hops 7 times in 8
OPENINGS = [f"Where is my order A-{1000 + n}? I need it by Friday." for n in range(RUNS)]


def _no_network(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: a framework that reaches past 127.0.0.1 fails the test that made it."""
    if event != "socket.connect":
        return
    address = args[1]
    if isinstance(address, tuple) and address:
        try:
            remote = ipaddress.ip_address(address[0])
        except ValueError:
            remote = None
        if remote is None or not remote.is_loopback:
            raise RuntimeError(f"tests/compat must need no network: a connect to {address}")


sys.addaudithook(_no_network)


class Answer(BaseModel):
    """The structured output every framework asks for."""

    answer: str
    days: int


def search_help_center(query: str, limit: int = 3) -> str:
    """support-agent's bundle tool, as the agent implements it."""
    return f"Orders ship in 3 days ({query}, {limit} results)."


def lookup_order(order_id: str) -> str:
    """refund-agent's bundle tool, as the agent implements it."""
    return f"Order {order_id}: walking shoes, unused, paid by card."


def issue_refund(order_id: str, amount_cents: int, reason: str, note: str = "") -> str:
    """refund-agent's other bundle tool (v1.5 adds the note)."""
    return f"Refunded {amount_cents} cents on {order_id} ({reason}). {note}"


@dataclass
class Compat:
    fake: FakeProvider
    router: Router

    @property
    def openai_url(self) -> str:
        """base_url for OpenAI-style clients: the router's /v1."""
        return f"{self.router.url}/v1"

    @property
    def anthropic_url(self) -> str:
        """base_url for Anthropic-style clients: the router itself."""
        return self.router.url

    def call_tools(self) -> None:
        """Every model calls a tool whenever it may, and answers the tool results in text:
        each user turn of an agent run is then a tool round trip of two calls."""
        for model in MODELS:
            self.fake.behave(model, tool_call_rate=1.0)

    def sent(self, n: int = 1) -> list[dict[str, Any]]:
        """The bodies the provider got, oldest first."""
        return [logged["body"] for logged in self.fake.requests(n)]

    def tool_names(self) -> list[str]:
        """The tools offered in the provider's last request, in either OpenAI shape."""
        tools = self.sent()[0].get("tools") or []
        return [t.get("name") or t["function"]["name"] for t in tools]

    def samples(self, name: str) -> list[tuple[dict[str, str], int]]:
        """(labels, value) of each sample of one metric on the router's /metrics."""
        text = httpx.get(f"{self.router.metrics_url}/metrics", timeout=10).text
        return [
            (sample.labels, int(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name
        ]

    def served(self, route: str) -> Counter[str]:
        """Requests per version of `route`."""
        counts: Counter[str] = Counter()
        for labels, value in self.samples("router_requests_total"):
            if labels["route"] == route:
                counts[labels["version"]] += value
        return counts

    def failures(self) -> Counter[str]:
        """What the guardrails would hold against a version: requests that did not end ok,
        and tool calls the router found wrong."""
        counts: Counter[str] = Counter()
        for labels, value in self.samples("router_requests_total"):
            if labels["outcome"] != "ok":
                counts[labels["outcome"]] += value
        for labels, value in self.samples("router_tool_calls_total"):
            if labels["result"] not in ("valid", "client_tool"):
                counts[labels["result"]] += value
        return +counts

    def sticky_runs(self, route: str, run: Callable[[str], None]) -> list[Counter[str]]:
        """`RUNS` agent runs one after another, each with its own opening message and no
        session key; for each, the calls each version served."""
        runs = []
        for opening in OPENINGS:
            before = self.served(route)
            run(opening)
            runs.append(+(self.served(route) - before))
        return runs

    async def sticky_runs_async(
        self, route: str, run: Callable[[str], Awaitable[None]]
    ) -> list[Counter[str]]:
        """`sticky_runs` for a framework whose runs are coroutines."""
        runs = []
        for opening in OPENINGS:
            before = self.served(route)
            await run(opening)
            runs.append(+(self.served(route) - before))
        return runs


def assert_one_version_per_run(runs: list[Counter[str]], calls: int) -> None:
    """Every run made at least `calls` calls, all served by one version; the runs as a whole
    went to both versions (else the check could not have seen a hop)."""
    assert all(sum(run.values()) >= calls for run in runs), runs
    switched = [run for run in runs if len(run) != 1]
    assert switched == [], f"{len(switched)} of {len(runs)} runs switched versions: {switched}"
    assert len({version for run in runs for version in run}) == 2, runs


@pytest.fixture(scope="session")
def compat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    tmp = tmp_path_factory.mktemp("compat")
    fake = FakeProvider(tmp, profile={"default": {"answer_tool_results": True}})
    config = router_config(fake.url)
    for route, versions in ROUTES.items():
        config["routes"][route]["weights"] = dict.fromkeys(versions, 50)
        config["routes"][route]["guardrails"] = "off"  # nothing here should trip a canary
    try:
        router = Router(Path(tmp) / "router", config)
    except BaseException:
        fake.stop()
        raise
    yield Compat(fake, router)
    router.stop()
    fake.stop()


@pytest.fixture
def compat(compat_stack: Compat) -> Iterator[Compat]:
    """The suite's stack; the provider's behaviour is reset after each test. A framework's
    ordinary flow must leave nothing a guardrail would count against the version."""
    before = compat_stack.failures()
    yield compat_stack
    compat_stack.fake.reset()
    assert compat_stack.failures() == before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.compat)
