"""What the compatibility tests share: the router and fake provider pair they drive, the
bundles' tools as an agent implements them, the structured output they ask for, and the check
that a multi-turn agent run stayed on one bundle version."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from testing.servers import ProviderProcess, Router

ROUTES = {"refund-agent": ("v1.4", "v1.5"), "support-agent": ("v2.0", "v2.1")}
MODELS = ("claude-sonnet-4-6-20260215", "claude-opus-4-7-20260108", "gpt-5.4-2026-03-05")
RUNS = 12  # multi-turn runs per framework; at 50/50 a run of 4 calls hops 7 times in 8
OPENINGS = [f"Where is my order A-{1000 + n}? I need it by Friday." for n in range(RUNS)]


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
    fake: ProviderProcess
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
