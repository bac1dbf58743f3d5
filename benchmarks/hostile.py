"""What hostile bundles used to cost, and cost now: regexes, formats, YAML alias bombs.

    python -m benchmarks.hostile [--max-a 24] [--router-a 40]

1. `^(a+)+$` against "a"*n + "!" (no match): Python's backtracking `re` against RE2, for
   growing n. Python's time doubles with each `a`; RE2's does not move.
2. fastjsonschema's `email` format regex against ours, on "a.." * n: its look-ahead makes
   Python's quadratic in the value.
3. The YAML alias check: time to refuse a 10**8 and a 10**30 "billion laughs" bomb, and what
   the old path (safe_load, then orjson walking the values, as the digest did) spends on a
   10**6 one that the check refuses.
4. The real router: a tool call whose argument is "a"*40 + "!" against `^(a+)+$` (2**40
   steps for a backtracking engine), and a request to another route sent beside it
   (`--router-a 22` makes it finite on a router that still backtracks).

Numbers are this machine's; the ratios are what to compare. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from fastjsonschema.draft2019 import CodeGeneratorDraft2019

from router.files import MAX_YAML_DEPTH, MAX_YAML_NODES, BoundedLoader, FileRefused
from router.patterns import compile_pattern
from router.schemas import FORMATS
from testing.bundles import alias_bomb, own_bundles, set_pattern, with_bundles
from testing.servers import ProviderProcess, Router, router_config


def seconds(work: Callable[[str], object], text: str) -> float:
    started = time.perf_counter()
    work(text)
    return time.perf_counter() - started


def regexes(max_a: int) -> None:
    print("| a's | Python re | RE2 | ratio |\n|---|---|---|---|")
    python, linear = re.compile(r"^(a+)+$"), compile_pattern(r"^(a+)+$")
    for n in range(16, max_a + 1, 2):
        text = "a" * n + "!"
        slow, fast = seconds(python.search, text), seconds(linear.search, text)
        print(f"| {n} | {slow * 1000:.1f} ms | {fast * 1e6:.1f} us | {slow / fast:,.0f}x |")
    for n in (40, 1_000_000):
        text = "a" * n + "!"
        print(f"| {n:,} | (2**{n} steps) | {seconds(linear.search, text) * 1e6:.1f} us | |")


def emails() -> None:
    print("\n| 'a..' * n | fastjsonschema email | ours (RE2) | ratio |\n|---|---|---|---|")
    python = re.compile(CodeGeneratorDraft2019.FORMAT_REGEXS["email"])
    for n in (10_000, 20_000, 40_000):
        text = "a.." * n
        slow, fast = seconds(python.match, text), seconds(FORMATS["email"], text)
        print(f"| {n:,} | {slow * 1000:.1f} ms | {fast * 1000:.3f} ms | {slow / fast:,.0f}x |")


def bombs() -> None:
    print(
        "\n| YAML | refused by the alias check in | old path: safe_load + orjson |\n|---|---|---|"
    )
    for levels in (6, 8, 30):
        text = "bomb:\n" + alias_bomb(levels)

        def check(text: str) -> None:
            try:
                BoundedLoader(text, MAX_YAML_NODES, MAX_YAML_DEPTH).get_single_data()
            except FileRefused:
                return
            raise AssertionError("not refused")

        old = ""
        if levels == 6:
            tracemalloc.start()
            took = seconds(lambda text: orjson.dumps(yaml.safe_load(text)), text)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            old = f"{took * 1000:.0f} ms, {peak / 2**20:.0f} MiB peak"
        elif levels == 8:
            old = "(the issue: 6.8 s and 1.3 GB a reload)"
        else:
            old = "(never ends)"
        refused = seconds(check, text) * 1000
        print(f"| 10**{levels} leaves, {len(text)} bytes | {refused:.2f} ms | {old} |")


async def router_side_by_side(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fake = ProviderProcess(Path(tmp))
        router: Router | None = None
        try:
            folder = own_bundles(Path(tmp))
            set_pattern(folder / "refund-agent" / "v1.5", "^(a+)+$", example="a" * n + "!")
            config: dict[str, Any] = with_bundles(router_config(fake.url), folder)
            config["routes"]["refund-agent"]["allow_version_override"] = True
            router = Router(Path(tmp) / "router", config)
            fake.behave(tool_call_rate=1.0)
            body = {"max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}

            async def timed(client: httpx.AsyncClient, path: str, **extra: Any) -> float:
                started = time.perf_counter()
                answer = await client.post(path, **extra)
                answer.raise_for_status()
                return time.perf_counter() - started

            async with httpx.AsyncClient(base_url=router.url, timeout=60) as client:
                rounds = [
                    await asyncio.gather(
                        timed(
                            client,
                            "/v1/messages",
                            json={"model": "refund-agent", **body},
                            headers={"X-Bundle-Version": "v1.5"},
                        ),
                        timed(
                            client, "/v1/chat/completions", json={"model": "support-agent", **body}
                        ),
                    )
                    for _ in range(20)
                ]
            tool = sorted(r[0] for r in rounds)[len(rounds) // 2]
            other = sorted(r[1] for r in rounds)[len(rounds) // 2]
            print(
                "\n| real router, 20 rounds | median |\n|---|---|\n"
                f"| tool call, argument 'a'*{n}+'!' against ^(a+)+$ | {tool * 1000:.1f} ms |\n"
                f"| a support-agent request sent beside it | {other * 1000:.1f} ms |"
            )
        finally:  # the provider too when the router failed to start
            if router is not None:
                router.stop()
            fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-a", type=int, default=24, help="longest run of a's for Python")
    parser.add_argument("--router-a", type=int, default=40, help="a's in the router's tool call")
    args = parser.parse_args()
    regexes(args.max_a)
    emails()
    bombs()
    asyncio.run(router_side_by_side(args.router_a))


if __name__ == "__main__":
    main()
