"""The page's fleet grid: one cell per instance, with its epoch, lag, mark and, per route,
the weights it serves, whether it flipped in a rolling release, and its wave.

On a fleet's controller the cells are the sidecars as Redis shows them (`fleet_view`: their
heartbeats and acknowledgements). `watch` reads them once a second and calls `changed` when
any cell's (instance, epoch, mark, flipped) differs from the last read, so the page hears of
an acknowledgement or a flip without polling. A sidecar, and a router outside a fleet, is a
fleet of one: its grid is one cell, itself, read from memory.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from redis.exceptions import RedisError

from router.control.moves import RouteState
from router.control.plane import ControlPlane
from router.fleet.build import FleetPart
from router.fleet.controller import Controller
from router.fleet.follower import Follower
from router.fleet.status import fleet_view
from router.fleet.view import flipped
from router.proxy.live import LiveRoute

log = logging.getLogger("router.page")
POLL_SECONDS = 1.0
Cell = dict[str, Any]


def wave_of(state: RouteState | None, instance: str) -> int | None:
    """The wave (from 1) that flips `instance` in the route's rolling release, or None."""
    ramp = state.ramp if state is not None else None
    if ramp is None or not ramp.active or ramp.waves is None:
        return None
    for number, (_, instances) in enumerate(ramp.waves.plan, start=1):
        if instance in instances:
            return number
    return None


def signature(cells: list[Cell]) -> Hashable:
    """What a change of the grid is: an instance's epoch, mark or flips."""
    return tuple(
        (
            cell["instance"],
            cell["epoch"],
            cell["mark"],
            tuple(sorted((name, r["flipped"]) for name, r in cell["routes"].items())),
        )
        for cell in cells
    )


class Grid:
    def __init__(
        self,
        routes: Mapping[str, LiveRoute],
        control: ControlPlane,
        fleet: FleetPart | None,
        changed: Callable[[], None],
        watched: Callable[[], bool] = lambda: True,
    ) -> None:
        self.routes = routes
        self.states = control.core.states
        self.fleet = fleet
        self.changed = changed
        self.watched = watched  # whether any page listens: no page, no reads
        self.hostname = socket.gethostname()
        self._cells: list[Cell] = []
        self._read_at = -POLL_SECONDS  # monotonic time of the last read from Redis
        self._reading = asyncio.Lock()

    @property
    def polls(self) -> bool:
        """Whether the grid is read from Redis (a fleet's controller), and `watch` runs."""
        return isinstance(self.fleet, Controller)

    async def cells(self) -> list[Cell]:
        if not self.polls:
            return [self.own_cell()]
        if time.monotonic() - self._read_at >= POLL_SECONDS:
            await self._read()
        return self._cells

    async def watch(self) -> None:
        """The controller's loop: read the grid every second, tell of any change."""
        last: Hashable = None
        while True:
            if not self.watched():
                last = None  # a page that opens gets a fresh signal
                await asyncio.sleep(POLL_SECONDS)
                continue
            await self._read()
            now = signature(self._cells)
            if now != last:
                last = now
                self.changed()
            await asyncio.sleep(POLL_SECONDS)

    async def _read(self) -> None:
        """The sidecars from Redis; when Redis does not answer, the last grid read stays."""
        fleet = self.fleet
        assert isinstance(fleet, Controller)
        async with self._reading:
            if time.monotonic() - self._read_at < POLL_SECONDS / 2:
                return  # another reader just did it
            try:
                view = await fleet_view(fleet.redis, fleet.keys, fleet.fleet.heartbeat)
            except RedisError as exc:
                log.debug("the page's grid: Redis did not answer (%s)", type(exc).__name__)
                return
            finally:
                self._read_at = time.monotonic()
            self._cells = [self._sidecar_cell(s) for s in view["sidecars"]]

    def _sidecar_cell(self, sidecar: Mapping[str, Any]) -> Cell:
        instance = str(sidecar["instance"])
        beat_routes = sidecar.get("routes") or {}
        routes = {}
        for name, seen in beat_routes.items() if isinstance(beat_routes, Mapping) else ():
            seen = seen if isinstance(seen, Mapping) else {}
            routes[str(name)] = {
                "served": dict(seen.get("served") or {}),
                "flipped": seen.get("flipped"),
                "wave": wave_of(self.states.get(name), instance),
            }
        return {
            "instance": instance,
            "region": sidecar.get("region"),
            "pool": sidecar.get("pool"),
            "epoch": sidecar.get("epoch"),
            "behind_by": sidecar.get("behind_by"),
            "lag_seconds": sidecar.get("lag_seconds"),
            "mark": sidecar.get("mark"),
            "refused": sidecar.get("refused"),
            "heartbeat_age_seconds": sidecar.get("heartbeat_age_seconds"),
            "routes": routes,
        }

    def own_cell(self) -> Cell:
        """This process as the one cell of its grid."""
        instance, region, pool = self.hostname, None, None
        epoch = behind_by = lag = refused = None
        mark = "ok"
        if isinstance(self.fleet, Follower):
            seen = self.fleet.describe()
            instance, region, pool = self.fleet.instance, seen["region"], seen["pool"]
            epoch, lag, refused = seen["epoch"], seen["lag_seconds"], seen["refused"]
            latest = seen["latest_seen"]
            behind_by = max(0, latest - epoch) if latest is not None else None
            mark = "refused" if refused else "behind" if behind_by else "ok"
        routes = {}
        for name, route in list(self.routes.items()):
            state = self.states.get(name)
            routes[name] = {
                "served": dict(route.table.weights),
                "flipped": flipped(state, instance) if state and self.fleet else None,
                "wave": wave_of(state, instance) if self.fleet else None,
            }
        return {
            "instance": instance,
            "region": region,
            "pool": pool,
            "epoch": epoch,
            "behind_by": behind_by,
            "lag_seconds": lag,
            "mark": mark,
            "refused": refused,
            "heartbeat_age_seconds": None,
            "routes": routes,
        }
