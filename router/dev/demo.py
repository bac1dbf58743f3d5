"""`bundle-router demo`: a canary rollout from start to finish, on this machine alone.

It starts the fake provider and a router (as child processes, on free ports, in a temporary
folder), lets simulated agents talk to it in both dialects, starts a rollout of refund-agent
v1.5 and shows it ramping live. At 25 % it makes v1.5's model fail (the fake provider is
told to), and the guardrail trips and rolls the canary back within seconds. Then it prints
the announcement, the audit trail and where to look in /metrics, stops everything and
exits 0. `--no-regression` shows a healthy ramp through to promotion instead.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from router.admin.client import AdminError, call, show_money, show_percent, show_seconds
from router.dev.ports import free_port
from router.dev.stage import (
    USER_TURNS,
    Children,
    Screen,
    Webhook,
    router_command,
    wait_ready,
)

EXAMPLE_BUNDLES = Path(__file__).resolve().parents[2] / "config" / "bundles"  # the checkout's
CANARY_MODEL = "claude-opus-4-7-20260108"
CONTROL_MODEL = "claude-sonnet-4-6-20260215"
REGRESSION = {"error_rate": 0.3, "error_kind": "500", "latency_ms": 400}
REFUND_AGENTS = 24  # concurrent Anthropic-dialect sessions
SUPPORT_AGENTS = 6  # concurrent OpenAI-dialect sessions


class Demo:
    def __init__(self, folder: Path, bake: float, regression: bool) -> None:
        self.folder = folder
        self.bake = bake
        self.regression = regression
        self.screen = Screen()
        self.provider_port = free_port()
        self.listen = f"127.0.0.1:{free_port()}"
        self.metrics = f"127.0.0.1:{free_port()}"
        self.webhook = Webhook()
        self.socket = folder / "run" / "admin.sock"
        self.children = Children(folder)
        self.counts: dict[str, int] = {"requests": 0, "errors": 0, "tool_results": 0}
        self.stop_agents = asyncio.Event()

    # -- setting the stage -----------------------------------------------------------------

    def write_config(self) -> Path:
        if not EXAMPLE_BUNDLES.is_dir():
            raise SystemExit(
                f"bundle-router demo needs the example bundles in {EXAMPLE_BUNDLES}; run it "
                "from a checkout of the repository"
            )
        fast = {"min_samples": 10}
        config = {
            "environment": "prod",
            "listen": self.listen,
            "metrics_listen": self.metrics,
            "admin_socket": "run/admin.sock",
            "state_dir": "run/state",
            "providers": {
                "anthropic": {"dialect": "anthropic", "base_url": self._provider_url()},
                "openai": {"dialect": "openai", "base_url": f"{self._provider_url()}/v1"},
            },
            "prices": {
                CANARY_MODEL: {"input": 15.0, "output": 75.0, "cached_input": 1.5},
                CONTROL_MODEL: {"input": 3.0, "output": 15.0, "cached_input": 0.3},
                "gpt-5.4-2026-03-05": {"input": 1.25, "output": 10.0, "cached_input": 0.125},
            },
            "notify": {"webhook_url": self.webhook.url},
            "routes": {
                "refund-agent": {
                    "bundles": str(EXAMPLE_BUNDLES / "refund-agent"),
                    "active": "v1.4",
                    "candidate": "v1.5",
                    "weights": {"v1.4": 100, "v1.5": 0},
                    "guardrails": {
                        "error_rate": {"max": "2%", **fast},
                        "p95_latency": {"max_over_control": "200ms", "min_samples": 20},
                        "cost_per_request": {"max_ratio": 8, "min_samples": 20},
                        "tool_call_failure_rate": {"max_over_control": "5%", **fast},
                        "refusal_rate": {"max_over_control": "5%", **fast},
                    },
                    "rollout": {
                        "steps": [1, 5, 25, 50, 100],
                        "bake": [f"{self.bake}s"],
                        "min_samples": 20,
                    },
                },
                "support-agent": {
                    "bundles": str(EXAMPLE_BUNDLES / "support-agent"),
                    "session_key": {"body_field": "user"},
                    "active": "v2.0",
                    "candidate": "v2.1",
                    "weights": {"v2.0": 90, "v2.1": 10},
                    "client_system": "append",
                },
            },
        }
        path = self.folder / "router.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        profile = {
            "seed": 7,
            "default": {"latency_ms": 40, "latency_jitter_ms": 20, "tool_call_rate": 0.3},
        }
        (self.folder / "profile.yaml").write_text(yaml.safe_dump(profile))
        return path

    def _provider_url(self) -> str:
        return f"http://127.0.0.1:{self.provider_port}"

    # -- the agents ------------------------------------------------------------------------

    async def refund_agent(self, session: aiohttp.ClientSession, ids: itertools.count[int]) -> None:
        """Multi-turn Anthropic sessions, sticky on X-Session-Id, answering tool calls."""
        url = f"http://{self.listen}/v1/messages"
        while not self.stop_agents.is_set():
            headers = {"X-Session-Id": f"refund-{next(ids)}"}
            messages: list[dict[str, Any]] = []
            for turn in USER_TURNS[: random.randint(2, len(USER_TURNS))]:
                messages.append({"role": "user", "content": turn})
                body = {"model": "refund-agent", "max_tokens": 256, "messages": messages}
                answer = await self._ask(session, url, body, headers)
                if answer is None or self.stop_agents.is_set():
                    break
                messages.append({"role": "assistant", "content": answer["content"]})
                calls = [b for b in answer["content"] if b.get("type") == "tool_use"]
                if calls:  # the agent runs the tool and reports back in the next turn
                    self.counts["tool_results"] += 1
                    results = [
                        {"type": "tool_result", "tool_use_id": c["id"], "content": "ok"}
                        for c in calls
                    ]
                    messages.append({"role": "user", "content": results})
                    follow = {"model": "refund-agent", "max_tokens": 256, "messages": messages}
                    answer = await self._ask(session, url, follow, headers)
                    if answer is None:
                        break
                    messages.append({"role": "assistant", "content": answer["content"]})

    async def support_agent(
        self, session: aiohttp.ClientSession, ids: itertools.count[int]
    ) -> None:
        """Multi-turn OpenAI sessions, sticky on the `user` field, streamed half the time."""
        url = f"http://{self.listen}/v1/chat/completions"
        while not self.stop_agents.is_set():
            user = f"customer-{next(ids)}"
            messages: list[dict[str, Any]] = []
            for turn in USER_TURNS[: random.randint(2, 4)]:
                messages.append({"role": "user", "content": turn})
                body: dict[str, Any] = {
                    "model": "support-agent",
                    "user": user,
                    "messages": messages,
                }
                if random.random() < 0.5:
                    body["stream"] = True
                answer = await self._ask(session, url, body, {})
                if answer is None or self.stop_agents.is_set():
                    break
                messages.append({"role": "assistant", "content": "(answered)"})

    async def _ask(
        self,
        session: aiohttp.ClientSession,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
    ) -> dict[str, Any] | None:
        try:
            async with session.post(url, json=body, headers=headers) as answer:
                data = await answer.read()
                self.counts["requests"] += 1
                if answer.status != 200:
                    self.counts["errors"] += 1
                    return None
                if body.get("stream"):
                    return {}
                parsed: dict[str, Any] = orjson.loads(data)
                return parsed
        except (aiohttp.ClientError, TimeoutError):
            self.counts["errors"] += 1
            await asyncio.sleep(0.1)
            return None

    # -- the story -------------------------------------------------------------------------

    async def admin(self, method: str, target: str, body: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(call, self.socket, method, target, body, "demo")

    async def run(self) -> int:
        say = self.screen.say
        config = self.write_config()
        say("bundle-router demo: a canary rollout of refund-agent v1.4 -> v1.5, on this machine")
        say(f"  workspace        {self.folder}")
        self.children.start(
            router_command(
                "fake-provider",
                "--port",
                str(self.provider_port),
                "--profile",
                str(self.folder / "profile.yaml"),
            ),
            log="fake-provider.log",
        )
        self.children.start(router_command("serve", "--config", str(config)), log="router.log")
        await self.webhook.start()
        connector = aiohttp.TCPConnector(limit=REFUND_AGENTS + SUPPORT_AGENTS + 4)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            profile_url = f"{self._provider_url()}/_fake/profile"
            await wait_ready(session, profile_url, "fake provider", self.children)
            await wait_ready(session, f"http://{self.metrics}/readyz", "router", self.children)
            say(f"  fake provider    {self._provider_url()}  (both dialects, 40 +- 20 ms)")
            say(f"  router           http://{self.listen}  metrics http://{self.metrics}/metrics")
            say(
                f"  agents           {REFUND_AGENTS} refund-agent sessions (Anthropic Messages "
                f"API, tool calls) + {SUPPORT_AGENTS} support-agent sessions (OpenAI, streaming)"
            )
            ids = itertools.count()
            agents = [
                asyncio.create_task(self.refund_agent(session, ids)) for _ in range(REFUND_AGENTS)
            ]
            agents += [
                asyncio.create_task(self.support_agent(session, ids)) for _ in range(SUPPORT_AGENTS)
            ]
            try:
                return await self.story(session)
            finally:
                self.stop_agents.set()
                await asyncio.gather(*agents, return_exceptions=True)
                await self.webhook.stop()

    async def story(self, session: aiohttp.ClientSession) -> int:
        say = self.screen.say
        await asyncio.sleep(2)  # some traffic on the control first
        say("")
        say("$ bundle-router rollout start refund-agent")
        await self.admin("POST", "/rollout", {"route": "refund-agent", "action": "start"})
        say("  the canary starts at 1%; each step bakes, and moves up only when every guardrail")
        say("  has enough samples and passes")
        say("")
        injected_at: float | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = (await self.admin("GET", "/status"))["routes"]["refund-agent"]
            self.screen.draw(self.render(status))
            ramp = status.get("rollout") or {}
            if self.regression and injected_at is None and ramp.get("percent") == 25:
                await self.inject(session)
                injected_at = time.monotonic()
            if status["candidate_state"] == "rolled_back" or ramp.get("status") == "promoted":
                return await self.ending(session, status, injected_at)
            await asyncio.sleep(0.5)
        say("the story did not finish within 120 s; see the router log in the workspace")
        return 1

    async def inject(self, session: aiohttp.ClientSession) -> None:
        self.screen.say("")
        self.screen.say(
            f">>> injecting a regression: {CANARY_MODEL} (v1.5) now fails 30% of its answers "
            "and takes 400 ms longer"
        )
        self.screen.say("")
        change = {"model": CANARY_MODEL, "behaviour": REGRESSION}
        async with session.post(f"{self._provider_url()}/_fake/profile", json=change) as answer:
            answer.raise_for_status()

    def render(self, status: dict[str, Any]) -> str:
        ramp = status.get("rollout") or {}
        steps = ramp.get("steps", [])
        marks = []
        for i, step in enumerate(steps):
            if i < ramp.get("step", 0) or ramp.get("status") == "promoted":
                marks.append(f"[{step:g}% ok]")
            elif i == ramp.get("step", 0):
                marks.append(f"[{step:g}% <-]")
            else:
                marks.append(f" {step:g}% ")
        lines = [f"rollout {ramp.get('status', '-')}: " + " -> ".join(marks)]
        if ramp.get("status") == "running":
            bake = ramp.get("bake") or 1
            done = min(1.0, ramp["baked"] / bake)
            bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
            gate = ramp.get("waiting_for") or "baking; the gates are judged when the bake ends"
            lines.append(f"  bake [{bar}] {ramp['baked']:.1f}s of {bake:.0f}s   {gate}")
        lines.append(
            f"  {'version':<9}{'role':<12}{'weight':>8}{'req/60s':>9}{'errors':>8}{'p95':>8}"
            f"{'$/req':>9}"
        )
        for v in status["versions"]:
            w = v["window"]
            lines.append(
                f"  {v['version']:<9}{v['role']:<12}{v['weight_percent']:>7.1f}%"
                f"{w['requests']:>9}{show_percent(w['error_rate']):>8}"
                f"{show_seconds(w['p95_seconds']):>8}{show_money(w['cost_per_request_usd']):>9}"
            )
        return "\n".join(lines)

    async def ending(
        self, session: aiohttp.ClientSession, status: dict[str, Any], injected_at: float | None
    ) -> int:
        say = self.screen.say
        say("")
        if status["candidate_state"] == "rolled_back":
            trip = status["trip"] or {}
            delay = ""
            if injected_at is not None:
                delay = f" {time.monotonic() - injected_at:.1f} s after the regression began"
            say(f"TRIPPED{delay}: {trip.get('description')}")
            say("  the canary was drained to 0% in one swap; v1.4 serves every session again")
        else:
            say("PROMOTED: v1.5 passed every step and is now active at 100%; v1.4 stays warm")
        await asyncio.sleep(1.0)  # the announcement goes out off the data path
        say("")
        say("the webhook received (Slack-compatible):")
        for message in self.webhook.received:
            if message.get("action") in ("trip", "ramp_promote"):
                say(f"  {message['text']}")
        say("")
        say("$ bundle-router audit --route refund-agent")
        for record in await self.admin("GET", "/audit?route=refund-agent"):
            say(
                f"  {record['seq']:>3} {record['at'][11:23]}Z {record['action']:<14} "
                f"by {record['actor']}: {record['reason']}"
            )
        say("")
        say(f"where to look in http://{self.metrics}/metrics:")
        async with session.get(f"http://{self.metrics}/metrics") as answer:
            text = await answer.text()
        wanted = (
            "router_guardrail_trips_total{",
            "router_candidate_rolled_back{",
            'router_weight_ratio{route="refund-agent"',
            'router_requests_total{outcome="provider_5xx",route="refund-agent"',
        )
        for line in text.splitlines():
            if line.startswith(wanted):
                say(f"  {line}")
        say("")
        say(
            f"agents sent {self.counts['requests']} requests ({self.counts['errors']} answered "
            f"with an error), {self.counts['tool_results']} tool results"
        )
        say("stopping the router and the fake provider")
        return 0


def run_demo(bake: float, regression: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="bundle-router-demo-") as tmp:
        demo = Demo(Path(tmp), bake, regression)
        try:
            return asyncio.run(demo.run())
        except AdminError as exc:
            print(f"bundle-router demo: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            demo.children.stop()
