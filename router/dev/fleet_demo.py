"""`bundle-router demo --fleet`: a canary, then a rolling release across a fleet of 20 sidecars
in four regions, a regression in one region, the halt and the reverse-roll; on this machine.

It starts, as child processes on free ports in a temporary folder: redis-server (in memory),
two fake providers, a fleet controller (`bundle-router control`) and 20 sidecars (`bundle-router
serve`), five in each of us-west, us-east, eu and apac. Simulated agents send every sidecar a
few multi-turn refund-agent sessions a second. `rollout start refund-agent` then runs one plan:
v1.5 as a canary at 50 % in the `canary` pool (two sidecars of us-west), then a rolling
release by region, us-west first, two sidecars a wave, each wave baking a few seconds.

The regression: us-east's sidecars use a provider of their own (as a region uses its own
endpoint). While us-west's last wave bakes, the demo makes that provider fail 80 % of v1.5's
model's answers; no us-east sidecar serves v1.5 yet. us-east's first wave meets it, the
controller's gauge for us-east halts the release before the next wave, and (auto_rollback
reverse) flips us-east back, then us-west. eu and apac never receive v1.5. `--halt-only`
halts without the reverse-roll; `--no-regression` rolls the whole fleet to v1.5.

At the end: what each region served (the X-Bundle-Version of every answer the agents got), the
blast radius over time (router_blast_radius_ratio on the controller, sampled every second,
next to the agents' own count), the controller's audit trail. Every process it started is
stopped, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
import redis.asyncio as aioredis
import yaml

from router.admin.client import AdminError, call, show_margin
from router.dev.demo import CANARY_MODEL, CONTROL_MODEL, EXAMPLE_BUNDLES
from router.dev.ports import free_port
from router.dev.stage import (
    USER_TURNS,
    Children,
    Screen,
    Webhook,
    router_command,
    wait_ready,
)

ROUTE, OLD, NEW = "refund-agent", "v1.4", "v1.5"
REGIONS = ("us-west", "us-east", "eu", "apac")  # the roll's order: one region done before us-east
BAD_REGION = "us-east"
POOLS = {"us-west": ("canary", "canary", "free", "paid", "enterprise")}
OTHER_POOLS = ("internal", "free", "paid", "paid", "enterprise")
CANARY_STEPS = [50, 100]  # in the canary pool: 2 sidecars of 20, so 5 % of the fleet's traffic
RATE = 3.0  # requests a second to each sidecar: 60 in all, light for 2 shared cores
REGRESSION = {"error_rate": 0.8, "error_kind": "500"}  # sure to be seen in the first wave
STORY_TIMEOUT = 120.0  # seconds from `rollout start` to the halt (or the promotion)
AFTER_THE_END = 3.0  # seconds of traffic after the halt, to see where it goes
REDIS_ENV = "BUNDLE_ROUTER_REDIS_URL"
BLAST = re.compile(
    r'^router_blast_radius_ratio\{(?=[^}]*route="refund-agent")(?=[^}]*version="v1\.5")[^}]*\}'
    r" (\S+)$",
    re.MULTILINE,
)
BARS = "▁▂▃▄▅▆▇█"
MARKS = {
    "rollout_start": "C",
    "waves_start": "W",
    "wave_start": "w",
    "wave_halt": "H",
    "wave_reverse": "R",
    "ramp_promote": "P",
    "trip": "T",
}
MARK_ORDER = "HTPRxCWw "  # where two events share a second, the first of these is shown
MISSING_REDIS = """bundle-router demo --fleet: redis-server is not on PATH.
The fleet keeps its state in Redis, so the demo starts a redis-server of its own (in memory,
on a free port, stopped at the end). Install it, then run the demo again:
  Debian, Ubuntu:  sudo apt-get install redis-server
  macOS:           brew install redis
More on fleet mode and Redis: docs/fleet.md"""


@dataclass(slots=True)
class Sidecar:
    name: str
    region: str
    pool: str
    url: str
    metrics: str  # host:port


@dataclass(slots=True)
class Answer:
    at: float  # time.time()
    sidecar: Sidecar
    version: str | None  # X-Bundle-Version
    ok: bool


@dataclass(slots=True)
class Sample:
    at: float  # time.time()
    metric: float | None  # router_blast_radius_ratio of v1.5 on the controller (last 60 s)
    agents: float | None  # v1.5's share of the agents' answers in the last second


@dataclass(slots=True)
class Story:
    """What happened, for the ending."""

    started: float = 0.0  # time.time() of `rollout start`
    injected: float | None = None
    outcome: str = ""  # halted, rolled_back or promoted
    samples: list[Sample] = field(default_factory=list)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


class FleetDemo:
    def __init__(self, folder: Path, bake: float, regression: bool, halt_only: bool) -> None:
        self.folder = folder
        self.bake = bake
        self.regression = regression
        self.halt_only = halt_only
        self.screen = Screen()
        self.children = Children(folder)
        self.webhook = Webhook()
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.provider = f"http://127.0.0.1:{free_port()}"
        self.bad_provider = f"http://127.0.0.1:{free_port()}"  # us-east's own
        self.controller_metrics = f"127.0.0.1:{free_port()}"
        self.socket = folder / "controller" / "run" / "admin.sock"
        self.sidecars = [
            self._sidecar(region, i, pool)
            for region in REGIONS
            for i, pool in enumerate(POOLS.get(region, OTHER_POOLS), start=1)
        ]
        self.answers: list[Answer] = []
        self.story = Story()
        self.stop_agents = asyncio.Event()

    def _sidecar(self, region: str, i: int, pool: str) -> Sidecar:
        name = f"{region}-{i}"
        return Sidecar(
            name,
            region,
            pool,
            f"http://127.0.0.1:{free_port()}",
            f"127.0.0.1:{free_port()}",
        )

    # -- setting the stage -----------------------------------------------------------------

    def route(self, floor: bool) -> dict[str, Any]:
        """refund-agent: v1.5 deployed at 0 %, one plan of a canary and waves. The sidecars'
        own guardrails (`floor`) wait for more answers than the controller's pooled gauge,
        so that the gauge of the region is what decides here (docs/fleet.md, the floor)."""
        if not EXAMPLE_BUNDLES.is_dir():
            raise SystemExit(
                f"bundle-router demo needs the example bundles in {EXAMPLE_BUNDLES}; run it "
                "from a checkout of the repository"
            )
        bake = f"{self.bake:g}s"
        return {
            "bundles": str(EXAMPLE_BUNDLES / ROUTE),
            "session_key": {"header": "X-Session-Id", "missing": "random"},
            "active": OLD,
            "candidate": NEW,
            "weights": {OLD: 100, NEW: 0},
            "guardrails": {
                "error_rate": {"max": "5%", "min_samples": 30 if floor else 10},
                "p95_latency": "off",  # one machine's 2 cores are too noisy a clock
                "cost_per_request": "off",  # Opus costs more: known and accepted
                "tool_call_failure_rate": "off",
                "refusal_rate": "off",
            },
            "rollout": {
                "steps": CANARY_STEPS,
                "bake": [bake],
                "min_samples": 10,
                "canary_pool": "canary",
                "waves": {
                    "order": "region",
                    "groups": list(REGIONS),
                    "size": 2,
                    "bake": bake,
                    "min_samples": 10,
                    "auto_rollback": "halt" if self.halt_only else "reverse",
                },
            },
        }

    def config(self, name: str, region: str, pool: str, provider: str, listen: str) -> Path:
        """The config of the controller or a sidecar `name`, in its own folder."""
        controller = name == "controller"
        folder = self.folder / name
        config: dict[str, Any] = {
            "environment": "prod",
            "listen": listen,
            "metrics_listen": self.controller_metrics if controller else self.sidecar(name).metrics,
            "admin_socket": "run/admin.sock",
            "state_dir": "run/state",
            "providers": {"anthropic": {"dialect": "anthropic", "base_url": provider}},
            "prices": {
                CANARY_MODEL: {"input": 15.0, "output": 75.0, "cached_input": 1.5},
                CONTROL_MODEL: {"input": 3.0, "output": 15.0, "cached_input": 0.3},
            },
            "fleet": {
                "name": "demo",
                "redis_url_env": REDIS_ENV,
                "region": region,
                "pool": pool,
                "instance": name,
            },
            "routes": {ROUTE: self.route(floor=not controller)},
        }
        if controller:
            config["notify"] = {"webhook_url": self.webhook.url}
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "router.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start_redis(self) -> None:
        binary = redis_server_binary()
        assert binary is not None
        (self.folder / "redis").mkdir()
        self.children.start(
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder / "redis"),
            ],
            log="redis/redis.log",
        )

    async def wait_redis(self) -> None:
        client = aioredis.Redis.from_url(self.redis_url, socket_timeout=1)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if await client.ping():
                        return
                except (aioredis.ConnectionError, aioredis.TimeoutError):
                    await asyncio.sleep(0.05)
            raise SystemExit(f"redis-server did not start; see {self.folder}/redis/redis.log")
        finally:
            await client.aclose()

    def start_provider(self, url: str, name: str) -> None:
        profile = self.folder / f"{name}.yaml"
        profile.write_text(
            yaml.safe_dump({"seed": 7, "default": {"latency_ms": 40, "latency_jitter_ms": 20}})
        )
        port = url.rsplit(":", 1)[1]
        command = router_command("fake-provider", "--port", port, "--profile", str(profile))
        self.children.start(command, log=f"{name}.log")

    def sidecar(self, name: str) -> Sidecar:
        return next(s for s in self.sidecars if s.name == name)

    def start_router(
        self, command: str, name: str, region: str, pool: str, provider: str, listen: str
    ) -> None:
        config = self.config(name, region, pool, provider, listen)
        self.children.start(
            router_command(command, "--config", str(config)),
            log=f"{name}/router.log",
            env={REDIS_ENV: self.redis_url},
        )

    async def set_the_stage(self, session: aiohttp.ClientSession) -> None:
        say = self.screen.say
        began = time.monotonic()
        self.start_redis()
        self.start_provider(self.provider, "fake-provider")
        self.start_provider(self.bad_provider, "fake-provider-us-east")
        await self.wait_redis()
        for url in (self.provider, self.bad_provider):
            await wait_ready(session, f"{url}/_fake/profile", "fake provider", self.children)
        await self.webhook.start()
        listen = f"127.0.0.1:{free_port()}"  # the controller's proxy listener stays idle
        self.start_router("control", "controller", "control", "control", self.provider, listen)
        await wait_ready(
            session, f"http://{self.controller_metrics}/readyz", "controller", self.children
        )
        say(f"  redis-server     {self.redis_url} (in memory)")
        say(f"  controller       metrics http://{self.controller_metrics}/metrics")
        say(f"                   admin socket {self.socket}")
        # The sidecars start all at once: one after the other takes four times as long here.
        for s in self.sidecars:
            provider = self.bad_provider if s.region == BAD_REGION else self.provider
            listen = s.url.removeprefix("http://")
            self.start_router("serve", s.name, s.region, s.pool, provider, listen)
        await asyncio.gather(
            *(
                wait_ready(
                    session, f"http://{s.metrics}/readyz", f"sidecar {s.name}", self.children
                )
                for s in self.sidecars
            )
        )
        await self.wait_reporting()
        for region in REGIONS:
            mine = [s for s in self.sidecars if s.region == region]
            pools = ", ".join(f"{s.name} {s.pool}" for s in mine)
            provider = self.bad_provider if region == BAD_REGION else self.provider
            say(f"  {region:<8} 5 sidecars  {pools}; provider {provider}")
        say(
            f"  {len(self.children.processes)} processes up in "
            f"{time.monotonic() - began:.1f} s (the sidecars started in parallel)"
        )

    async def wait_reporting(self) -> None:
        """Until every sidecar reports to the fleet (not missing): the waves are planned from
        the sidecars that report when the canary has passed."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            fleet = await self.admin("GET", "/fleet")
            live = [s for s in fleet["sidecars"] if s["mark"] != "missing"]
            if len(live) >= len(self.sidecars):
                return
            await asyncio.sleep(0.2)
        raise SystemExit(f"not every sidecar reported to the controller; see {self.folder}")

    async def admin(self, method: str, target: str, body: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(call, self.socket, method, target, body, "demo")

    # -- the agents ------------------------------------------------------------------------

    async def agent(self, session: aiohttp.ClientSession, sidecar: Sidecar) -> None:
        """Sessions of one to three turns (sticky by X-Session-Id), RATE requests a second."""
        ids = itertools.count(1)
        await asyncio.sleep(random.random() / RATE)  # the agents do not all ask at once
        next_at = time.monotonic()
        while not self.stop_agents.is_set():
            headers = {"X-Session-Id": f"{sidecar.name}-{next(ids)}"}
            messages: list[dict[str, Any]] = []
            for turn in USER_TURNS[: random.randint(1, 3)]:
                messages.append({"role": "user", "content": turn})
                content = await self.ask(session, sidecar, messages, headers)
                next_at = max(next_at + 1 / RATE, time.monotonic() - 1)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                if content is None or self.stop_agents.is_set():
                    break
                messages.append({"role": "assistant", "content": content})

    async def ask(
        self,
        session: aiohttp.ClientSession,
        sidecar: Sidecar,
        messages: list[dict[str, Any]],
        headers: dict[str, str],
    ) -> Any:
        body = {"model": ROUTE, "max_tokens": 128, "messages": messages}
        try:
            async with session.post(
                f"{sidecar.url}/v1/messages", json=body, headers=headers
            ) as answer:
                data = await answer.json(content_type=None) if answer.status == 200 else None
                version = answer.headers.get("X-Bundle-Version")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.answers.append(Answer(time.time(), sidecar, None, ok=False))
            return None
        self.answers.append(Answer(time.time(), sidecar, version, ok=data is not None))
        return data["content"] if data is not None else None

    def agents_share(self, seconds: float = 1.0) -> float | None:
        """v1.5's share of the agents' answers in the last `seconds`."""
        since = time.time() - seconds
        recent = [a for a in itertools.islice(reversed(self.answers), 2000) if a.at >= since]
        versioned = [a for a in recent if a.version]
        if not versioned:
            return None
        return sum(a.version == NEW for a in versioned) / len(versioned)

    async def sample_blast_radius(self, session: aiohttp.ClientSession) -> None:
        """Every second: router_blast_radius_ratio of v1.5 on the controller, and the agents'."""
        url = f"http://{self.controller_metrics}/metrics"
        while True:
            metric = None
            try:
                async with session.get(url) as answer:
                    found = BLAST.search(await answer.text())
                    metric = float(found.group(1)) if found else 0.0
            except (aiohttp.ClientError, TimeoutError):
                pass
            self.story.samples.append(Sample(time.time(), metric, self.agents_share()))
            await asyncio.sleep(1.0)

    # -- the story -------------------------------------------------------------------------

    async def run(self) -> int:
        say = self.screen.say
        say(
            "bundle-router demo --fleet: a canary, then a rolling release of refund-agent "
            f"{OLD} -> {NEW} across 20 sidecars in 4 regions, on this machine"
        )
        say(f"  workspace        {self.folder}")
        connector = aiohttp.TCPConnector(limit=len(self.sidecars) * 2)
        timeout = aiohttp.ClientTimeout(total=20)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            background: list[asyncio.Task[None]] = []
            try:
                await self.set_the_stage(session)
                say(
                    f"  agents           one per sidecar, {RATE:g} requests a second each "
                    "(Anthropic Messages API, sessions of 1-3 turns sticky by X-Session-Id)"
                )
                background = [asyncio.create_task(self.agent(session, s)) for s in self.sidecars]
                await asyncio.sleep(2)  # some traffic on v1.4 first
                background.append(asyncio.create_task(self.sample_blast_radius(session)))
                if not await self.play(session):
                    return 1
                await asyncio.sleep(AFTER_THE_END)  # where the traffic goes after the end
                self.stop_agents.set()
                await self.ending()
                return 0
            finally:
                self.stop_agents.set()
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                await self.webhook.stop()

    async def play(self, session: aiohttp.ClientSession) -> bool:
        say = self.screen.say
        waves = "halt, then reverse-roll" if not self.halt_only else "halt only"
        say("")
        say("the plan (routes.refund-agent.rollout in the controller's config):")
        canary = sum(s.pool == "canary" for s in self.sidecars)
        share = CANARY_STEPS[0] * canary / len(self.sidecars)
        say(
            f"  canary   steps {CANARY_STEPS} in pool canary ({canary} of the "
            f"{len(self.sidecars)} sidecars: {share:g}% of the fleet's traffic), bake "
            f"{self.bake:g}s and 10 answers"
        )
        say(
            f"  waves    by region {' -> '.join(REGIONS)}, 2 sidecars a wave, bake "
            f"{self.bake:g}s and 10 answers each; auto_rollback: {waves}"
        )
        say("  gauges   error_rate at most 5%, judged per region on the fleet's pooled answers")
        say("")
        say(f"$ bundle-router rollout start {ROUTE}")
        self.story.started = time.time()
        await self.admin("POST", "/rollout", {"route": ROUTE, "action": "start"})
        deadline = time.monotonic() + STORY_TIMEOUT
        while time.monotonic() < deadline:
            route = (await self.admin("GET", "/status"))["routes"][ROUTE]
            self.screen.draw(self.render(route))
            waves_now = route.get("waves") or {}
            if self.regression and self.story.injected is None and self.us_west_done(waves_now):
                await self.inject(session)
            outcome = self.outcome(route)
            if outcome:
                self.story.outcome = outcome
                self.screen.draw(self.render(route))
                return True
            await asyncio.sleep(0.5)
        say(f"the story did not end within {STORY_TIMEOUT:g} s; see the logs in {self.folder}")
        return False

    @staticmethod
    def us_west_done(waves: dict[str, Any]) -> bool:
        """us-west's last wave has flipped: us-east is next."""
        group = (waves.get("groups") or {}).get(REGIONS[0]) or {}
        return bool(group) and group["flipped"] == group["planned"]

    @staticmethod
    def outcome(route: dict[str, Any]) -> str:
        ramp = route.get("rollout") or {}
        if route["active"] == NEW:
            return "promoted"
        if route["candidate_state"] == "rolled_back":
            return "rolled_back"
        if ramp.get("status") == "halted":
            return "halted"
        return ""

    async def inject(self, session: aiohttp.ClientSession) -> None:
        self.story.injected = time.time()
        change = {"model": CANARY_MODEL, "behaviour": REGRESSION}
        async with session.post(f"{self.bad_provider}/_fake/profile", json=change) as answer:
            answer.raise_for_status()
        self.screen.say("")
        self.screen.say(
            f">>> injecting a regression in {BAD_REGION}: its provider now fails "
            f"{REGRESSION['error_rate']:.0%} of {CANARY_MODEL} ({NEW}) answers with a 500."
        )
        self.screen.say(
            f"    {NEW} stays healthy in us-west; no {BAD_REGION} sidecar serves it until its "
            "first wave flips"
        )
        self.screen.say("")

    def render(self, route: dict[str, Any]) -> str:
        ramp = route.get("rollout") or {}
        waves = route.get("waves")
        blast = self.blast_line()
        if not waves:
            status = ramp.get("status", "-")
            canary = [s.name for s in self.sidecars if s.pool == "canary"]
            lines = [
                f"canary {status}: {NEW} at {ramp.get('percent', 0):g}% in pool canary "
                f"({', '.join(canary)}); every other sidecar serves {OLD}"
            ]
            if status == "running":
                note = ramp.get("waiting_for") or "the gates are judged when the bake ends"
                lines.append(
                    f"  baked {ramp.get('baked', 0):.1f}s of {ramp.get('bake') or 0:g}s; {note}"
                )
            return "\n".join([*lines, blast])
        where = f" ({waves['group']})" if waves.get("group") else ""
        head = f"waves {waves['status']}: wave {waves['wave']}/{waves['waves']}{where}"
        if waves.get("halted_group"):
            head += f"; HALTED in {waves['halted_group']}"
        if route["candidate_state"] == "rolled_back":
            head += f"; reverse-rolled: every sidecar is back on {OLD}"
        lines = [head]
        flipped = set(waves.get("flipped") or ())
        for region in REGIONS:
            mine = sorted(s.name for s in self.sidecars if s.region == region)
            grid = "".join("#" if name in flipped else "." for name in mine)
            group = (waves.get("groups") or {}).get(region) or {}
            health = "healthy" if group.get("healthy", True) else "BREACHED"
            margins = "; ".join(
                show_margin(v) for v in group.get("verdicts", []) if not v.get("silent")
            )
            lines.append(
                f"  {region:<8} [{grid}] {sum(n in flipped for n in mine)}/5 on {NEW}  {health}"
                + (f"  {margins}" if margins else "")
            )
        if waves["status"] == "running":
            note = f"; {waves['waiting_for']}" if waves.get("waiting_for") else ""
            lines.append(f"  bake {waves['baked']:.1f}s of {waves['bake']:g}s{note}")
        return "\n".join([*lines, blast])

    def blast_line(self) -> str:
        last = self.story.samples[-1] if self.story.samples else None
        metric = _percent(last.metric if last else None)
        agents = _percent(self.agents_share())
        return (
            f"  blast radius of {NEW}: {metric} of the fleet's requests over 60 s "
            f"(router_blast_radius_ratio), {agents} in the agents' last second"
        )

    # -- the ending ------------------------------------------------------------------------

    async def ending(self) -> None:
        say = self.screen.say
        records = await self.admin("GET", f"/audit?route={ROUTE}")
        mine = [r for r in records if _wall(r["at"]) >= self.story.started - 1]
        say("")
        halt = next((r for r in mine if r["action"] == "wave_halt"), None)
        if halt is not None:
            say(f"HALTED in {halt['details']['group']}: {halt['reason']}")
            reverse = [r for r in mine if r["action"] == "wave_reverse"]
            if reverse:
                took = _wall(reverse[-1]["at"]) - _wall(halt["at"])
                say(
                    f"  reverse-rolled in {took * 1000:.0f} ms: {halt['details']['group']} "
                    f"first, then every other flipped sidecar; {NEW} is rolled back"
                )
            else:
                say("  halt only: the flipped sidecars stay flipped until a person decides:")
                say(f"  bundle-router rollback {ROUTE}   or   bundle-router rollout resume {ROUTE}")
        elif self.story.outcome == "promoted":
            say(f"PROMOTED: every wave baked; {NEW} is active on all 20 sidecars")
        else:
            trip = next((r for r in mine if r["action"] == "trip"), None)
            say(f"ROLLED BACK: {trip['reason'] if trip else self.story.outcome}")
        self.print_unplanned(mine)
        self.print_regions(halt)
        self.print_blast_radius(mine)
        say("")
        say("the webhook received (Slack-compatible):")
        for message in self.webhook.received:
            if message.get("action") in ("wave_halt", "wave_reverse", "ramp_promote", "trip"):
                say(f"  {message['text']}")
        say("")
        say(f"$ bundle-router audit --route {ROUTE}        (the controller's log)")
        for record in mine:
            say(
                f"  {record['seq']:>3} {record['at'][11:23]}Z {record['action']:<13} "
                f"by {record['actor']}: {record['reason']}"
            )

    def print_unplanned(self, records: list[dict[str, Any]]) -> None:
        """A sidecar whose heartbeat was missing when the waves were planned is in no wave: it
        stays on the old version until the release is promoted (router/fleet/waves.py)."""
        plan = next((r for r in records if r["action"] == "waves_start"), None)
        if plan is None:
            return
        planned = {i for wave in plan["details"]["plan"] for i in wave["instances"]}
        left_out = [s.name for s in self.sidecars if s.name not in planned]
        if left_out:
            self.screen.say(
                f"  not in any wave (no heartbeat for 3 s when the waves were planned, so they "
                f"stay on {OLD} until a promotion): {', '.join(left_out)}"
            )

    def print_regions(self, halt: dict[str, Any] | None) -> None:
        say = self.screen.say
        say("")
        say("what each region served (the X-Bundle-Version of every answer the agents got):")
        never = []
        for region in REGIONS:
            answers = [a for a in self.answers if a.sidecar.region == region]
            versions = Counter(a.version for a in answers if a.version)
            on_new = {a.sidecar.name for a in answers if a.version == NEW}
            failed = sum(not a.ok for a in answers if a.version == NEW)
            last = {a.sidecar.name: a.version for a in answers if a.version}
            now_new = sorted(name for name, version in last.items() if version == NEW)
            errors = f"({failed} failed)" if failed else ""
            line = f"  {region:<8} {OLD} {versions[OLD]:>5}   {NEW} {versions[NEW]:>5} {errors:<12}"
            if not on_new:
                never.append(region)
                line += f"never received {NEW}"
            else:
                line += f"{len(on_new)}/5 sidecars served {NEW}"
                line += (
                    f"; now on {NEW}: {', '.join(now_new)}" if now_new else f"; all back on {OLD}"
                )
            say(line)
        if never:
            say(f"never received {NEW}: {', '.join(never)}")
        if halt is not None and self.story.injected is not None:
            group = halt["details"]["group"]
            first = next(
                (a.at for a in self.answers if a.sidecar.region == group and a.version == NEW),
                None,
            )
            if first is not None:
                say(
                    f"  from {group}'s first {NEW} answer to the halt: "
                    f"{_wall(halt['at']) - first:.1f} s"
                )

    def print_blast_radius(self, records: list[dict[str, Any]]) -> None:
        say = self.screen.say
        samples = self.story.samples
        if not samples:
            return
        start = samples[0].at
        events = [  # (when, mark, what)
            (_wall(r["at"]), MARKS[r["action"]], r["action"], r.get("details", {}).get("group"))
            for r in records
            if r["action"] in MARKS
        ]
        if self.story.injected is not None:
            events.append((self.story.injected, "x", "regression", BAD_REGION))
        events.sort(key=lambda e: e[0])
        row = [" "] * len(samples)
        for when, mark, _, _ in events:  # one mark a second: the rarer event wins
            i = int(when - start)
            if 0 <= i < len(row) and MARK_ORDER.index(mark) < MARK_ORDER.index(row[i]):
                row[i] = mark
        metric = [s.metric for s in samples]
        agents = [s.agents for s in samples]
        top = max(_peak(metric) or 0.0, _peak(agents) or 0.0) or 1.0
        ruler = "".join(  # a label every 10 s, where it fits whole
            f"{t}s".ljust(10)
            for t in range(0, len(samples), 10)
            if t + len(f"{t}s") <= len(samples)
        )
        say("")
        say(f"the blast radius of {NEW} (its share of the fleet's requests), one sample a second:")
        say(f"  seconds                 {ruler}")
        say(f"  events                  {''.join(row)}")
        say(f"  controller, last 60 s   {_sparkline(metric, top)}  peak {_percent(_peak(metric))}")
        say(f"  agents, last second     {_sparkline(agents, top)}  peak {_percent(_peak(agents))}")
        say(
            "  (C canary starts, W waves start, w a wave flips, x regression injected, H halt, "
            "R reverse-roll, P promoted, T trip;"
        )
        say(
            "   the controller's router_blast_radius_ratio is the share over the last 60 s, "
            "the agents' line the share right now)"
        )
        say(f"  {'t':>5}  {'event':<13} {'controller':>10} {'agents':>7}")
        for when, _, what, group in events:
            i = min(len(samples) - 1, max(0, int(when - start) + 1))  # the sample just after
            say(
                f"  {max(0.0, when - start):>4.0f}s  {what:<13} {_percent(samples[i].metric):>10} "
                f"{_percent(samples[i].agents):>7}  {group or ''}"
            )


def _wall(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _peak(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _sparkline(values: list[float | None], top: float) -> str:
    """One character a value, `top` the highest bar; ' ' where there was none."""
    return "".join(
        " " if v is None else BARS[min(len(BARS) - 1, int(v / top * (len(BARS) - 1) + 0.5))]
        for v in values
    )


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def run_fleet_demo(bake: float, regression: bool, halt_only: bool) -> int:
    if redis_server_binary() is None:
        print(MISSING_REDIS, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    folder = Path(tempfile.mkdtemp(prefix="bundle-router-fleet-demo-"))
    demo = FleetDemo(folder, bake, regression, halt_only)
    code = 1
    try:
        code = asyncio.run(demo.run())
    except AdminError as exc:
        print(f"bundle-router demo --fleet: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        code = 130
    finally:
        started = len(demo.children.processes)
        print(f"stopping the {started} processes the demo started", flush=True)
        demo.children.stop()
        left = [p.pid for p in demo.children.processes if p.poll() is None]
        print(f"all {started} stopped" if not left else f"still running: {left}", flush=True)
        if code in (0, 130):
            shutil.rmtree(folder, ignore_errors=True)
        else:  # the logs say what went wrong
            print(f"the workspace is kept for its logs: {folder}", file=sys.stderr)
    return code
