"""Background tasks that are never lost and never die in silence.

Each owner keeps its tasks and cancels them on shutdown (asyncio holds only weak references
to running tasks). A loop started with `keep_running` is restarted with backoff when it ends
with an exception; every failure is logged with its traceback and counted in
`router_background_failures_total{task}`. A loop that must not stop for one bad item (a
route whose check fails) counts the item with `count_failure` and goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("router.tasks")
T = TypeVar("T")

RESTART_DELAY = 0.5  # seconds before the first restart; doubles up to MAX_RESTART_DELAY
MAX_RESTART_DELAY = 30.0
HEALTHY_AFTER = 60.0  # a loop that ran this long before failing starts its backoff afresh

# Failures per task name, for the whole process (read by the metrics collector).
failures: Counter[str] = Counter()


def count_failure(task: str) -> None:
    failures[task] += 1


async def to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end even if the caller is cancelled meanwhile (a shutdown, a
    client that left): a change half made, its record written but its bookkeeping not done,
    would leave memory and the audit log disagreeing. The caller's cancellation is raised
    once the coroutine has finished."""
    task = asyncio.ensure_future(coroutine)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def cancel_requested() -> bool:
    """This task was cancelled, even if the cancellation came out as another error: on
    Python 3.11 `asyncio.wait_for` (which redis-py uses to send a command) can turn a cancel
    that lands as the send completes into the connection's own error. The request stays
    counted on the task, so a retry loop can still stop for it."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Background:
    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def start(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coroutine` once; if it fails, the failure is logged and counted."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def keep_running(
        self, loop: Callable[[], Coroutine[Any, Any, Any]], name: str
    ) -> asyncio.Task[Any]:
        """Run `loop()`, and run it again (after a growing delay) whenever it fails."""
        return self.start(self._supervise(loop, name), name)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        count_failure(task.get_name())
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def _supervise(self, loop: Callable[[], Coroutine[Any, Any, Any]], name: str) -> None:
        delay = RESTART_DELAY
        while True:
            started = time.monotonic()
            try:
                await loop()
                return  # the loop finished its work
            except Exception:
                count_failure(name)
                if time.monotonic() - started > HEALTHY_AFTER:
                    delay = RESTART_DELAY
                log.exception("background task %s failed; restarting it in %.1f s", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)

    async def stop(self) -> None:
        """Cancel every task and wait until each has finished."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # a failure was logged when the task ended
