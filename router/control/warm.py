"""The warm window: previous actives stay warm (ready to roll back to) for `warm_window`
seconds, then move to archived. Checked every `CHECK_SECONDS`; each move is an `archive`
change through the change function."""

from __future__ import annotations

import asyncio
import logging
import time

from router.background import Background, count_failure
from router.control.core import ChangeCore, Component, Settings
from router.control.moves import RouteState, archive_expired

log = logging.getLogger("router.warm")
CHECK_SECONDS = 60.0


class WarmWindow(Component):
    def __init__(self, core: ChangeCore) -> None:
        self.core = core
        self.window = 0.0  # seconds; set by configure
        self.background = Background()

    def configure(self, settings: Settings) -> None:
        self.window = settings.warm_window

    def start(self) -> None:
        self.background.keep_running(self._loop, "warm-window")

    async def close(self) -> None:
        await self.background.stop()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            if self.core.decides():
                await self.archive()

    async def archive(self) -> None:
        """Warm versions past the window move to archived. One route's failure (a full
        disk, say) is logged and counted; it waits for the next round."""
        oldest = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - self.window))
        for name, state in list(self.core.states.items()):
            if archive_expired(state, oldest) is None:
                continue

            def expire(current: RouteState, oldest: str = oldest) -> RouteState:
                return archive_expired(current, oldest) or current

            try:
                await self.core.change(
                    name,
                    expire,
                    actor="router",
                    action="archive",
                    reason=f"warm for longer than the warm window ({self.window:g} s)",
                )
            except Exception:
                count_failure("warm-window")
                log.exception("warm window of route %s: archiving failed; retrying", name)
