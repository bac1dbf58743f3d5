"""Rollback drills: a real rollback on the live path, timed, then rolled forward.

`bundle-router drill ROUTE` proves that a rollback works and says how long it takes: from
the command to the first request the previous version serves. Both moves go through the
change function (`drill` and `drill_forward` records); the canary's guardrail evidence
survives the drill.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from router.control.core import ChangeCore, Component
from router.control.durable import DurabilityError, utc_now
from router.control.moves import RouteState, rollback, with_drill
from router.control.watcher import Watcher
from router.errors import RouterError, StateNotDurable
from router.proxy.telemetry import LATENCY_BOUNDS, Histogram


class Drills(Component):
    def __init__(self, core: ChangeCore, watcher: Watcher) -> None:
        self.core = core
        self.watcher = watcher
        self.durations: dict[str, Histogram] = {}  # route -> command to first request

    async def drill(
        self, name: str, probe: Callable[[], Awaitable[str]], *, actor: str, started: float
    ) -> dict[str, Any]:
        """`probe` sends one real request through the proxy and returns the version that
        served it; `started` is when the command arrived (perf_counter)."""
        with self.watcher.evidence_kept(name):
            return await self._drill(name, probe, actor, started)

    async def _drill(
        self, name: str, probe: Callable[[], Awaitable[str]], actor: str, started: float
    ) -> dict[str, Any]:
        now = utc_now()
        previous: dict[str, RouteState] = {}

        def roll_back(state: RouteState) -> RouteState:
            previous["state"] = state
            return rollback(state, now)[0]

        record = await self.core.change(
            name, roll_back, actor=actor, action="drill", reason="rollback drill", decided=started
        )
        timing = self.core.last_change(name)
        assert timing is not None
        expected = record["after"]["active"]
        served = await probe()
        first_request = time.perf_counter() - started
        if served != expected:
            raise RouterError(
                f"the drill's probe was served by {served}, not {expected}; the rollback did "
                "not take effect on the live path",
                code="drill_failed",
            )
        result = {
            "route": name,
            "rolled_back_to": expected,
            "command_to_swap_seconds": timing["decision_to_swap_seconds"],
            "command_to_durable_seconds": timing["decision_to_durable_seconds"],
            "command_to_first_request_seconds": first_request,
        }
        before = previous["state"]
        self.durations.setdefault(name, Histogram(LATENCY_BOUNDS)).observe(first_request)
        try:
            await self.core.change(
                name,
                lambda _: with_drill(before, now, first_request),
                actor=actor,
                action="drill_forward",
                reason=f"rolled forward after the drill (rollback took {first_request:.3f} s)",
                details={"drill": result},
            )
        except DurabilityError as exc:
            raise StateNotDurable(
                f"the drill rolled {name} back, but rolling forward could not be made durable "
                f"({exc}); the route stays rolled back, which is safe. Once the disk has room, "
                f"restore the weights with bundle-router weights {name} ...",
                code="state_not_durable",
            ) from None
        return result
