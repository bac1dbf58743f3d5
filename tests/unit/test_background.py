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


async def test_a_cancel_that_came_out_as_another_error_is_still_seen() -> None:
    """A sidecar's first sync stops on it at a signal during start-up (router/fleet/follower.py)."""
    from router.background import cancel_requested

    seen: list[bool] = []

    async def send() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # as wait_for on Python 3.11 may, inside redis-py
            raise ConnectionError("Connection closed by server.") from None

    async def first_sync() -> None:
        try:
            await send()
        except ConnectionError:
            seen.append(cancel_requested())

    task = asyncio.create_task(first_sync())
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait([task])
    assert seen == [True]

    async def refused() -> bool:
        try:
            raise ConnectionError("Connection refused")
        except ConnectionError:
            return cancel_requested()

    assert await asyncio.create_task(refused()) is False
