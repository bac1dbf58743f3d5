"""What the demos share: their child processes, free ports, the screen, the agents' words and a
webhook inbox.

Every child runs in a process group of its own, so that a Ctrl-C on the terminal reaches the
demo alone, which then stops its children in order (the routers drain, Redis exits), and so
that `Children.stop` can end a child and anything it started with one signal to its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from router.dev.ports import free_port

START_TIMEOUT = 30.0  # seconds for a child to answer; 20 routers starting at once on 2 cores
STOP_TIMEOUT = 15.0  # seconds for every child to exit after SIGTERM, before SIGKILL
USER_TURNS = [
    "My order A-1234 arrived damaged. Can I get a refund?",
    "It was the blue kettle, the lid is cracked.",
    "Yes, the full amount please.",
    "Thanks. How long until I see the money?",
    "One more thing: can you email me the confirmation?",
]


def router_command(*args: str) -> list[str]:
    """`bundle-router ARGS` as this interpreter runs it."""
    return [sys.executable, "-m", "router", *args]


class Children:
    """The processes a demo started, each in its own process group, with its output in a log
    file of the workspace. Provider keys are not passed on: the demos need none."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, str] = {}  # pid -> its log, in the workspace

    def start(self, command: list[str], log: str, env: dict[str, str] | None = None) -> int:
        """Start `command`; its pid."""
        base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        with (self.folder / log).open("wb") as output:  # the child keeps its own handle
            process = subprocess.Popen(  # noqa: S603 - our own commands, our own arguments
                command,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**base, **(env or {})},
                start_new_session=True,
            )
        self.processes.append(process)
        self.logs[process.pid] = log
        return process.pid

    def exited(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is not None]

    def first_exit(self) -> str | None:
        """The first child that exited and the last lines it wrote, or None while all run."""
        for process in self.exited():
            log = self.folder / self.logs[process.pid]
            lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            last = "\n".join(f"    {line}" for line in lines[-3:])
            return f"the process logging to {log} exited with code {process.returncode}:\n{last}"
        return None

    def stop(self) -> None:
        """SIGTERM to every child's group (the last started first), then SIGKILL to a group
        whose child is still there after STOP_TIMEOUT. Safe to call twice."""
        for process in reversed(self.processes):
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # the group still has its leader: kill both
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def wait_ready(
    session: aiohttp.ClientSession, url: str, what: str, children: Children
) -> None:
    """Poll `url` until it answers 200, for at most START_TIMEOUT; SystemExit naming `what`
    and the workspace if not, at once when one of the children has exited."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        ended = children.first_exit()
        if ended is not None:
            raise SystemExit(f"stopped waiting for the {what}: {ended}")
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as answer:
                if answer.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(
        f"the {what} did not start within {START_TIMEOUT:g} s; see its log in {children.folder}"
    )


class Screen:
    """Redraws a block in place on a terminal; elsewhere prints only what changed."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.drawn = 0
        self.last = ""

    def say(self, text: str = "") -> None:
        self.drawn = 0
        print(text, flush=True)

    def draw(self, block: str) -> None:
        if self.tty:
            up = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            print(up + block, flush=True)
            self.drawn = block.count("\n") + 1
        elif block.splitlines()[0] != self.last:  # in a log: one block per step change
            self.last = block.splitlines()[0]
            print(block, flush=True)


class Webhook:
    """A Slack-compatible incoming webhook on 127.0.0.1 that keeps what it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hooks/demo"
        self.received: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        self.received.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/demo", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
