"""Background loops: one that fails is restarted, and its failures are counted."""

from __future__ import annotations

import asyncio


async def test_background_loops_are_restarted_and_counted() -> None:
    from router import background

    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")

    before = background.failures["flaky-test"]
    owner = background.Background()
    task = owner.keep_running(flaky, "flaky-test")
    await asyncio.wait_for(task, timeout=10)
    assert len(runs) == 3 and background.failures["flaky-test"] - before == 2
    await owner.stop()
