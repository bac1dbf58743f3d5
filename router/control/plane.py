"""The control plane, assembled: the change core and the components built on it, in order.

    ChangeCore    the change core: live deploy state and the one change function
    Watcher     judges live canaries with their guardrails and trips them
    WarmWindow  archives previous actives once their warm window has passed
    Drills      timed rollback drills
    Rollouts       walks a candidate up its rollout plan

Each component gets the core and changes state only through `ChangeCore.change`. As
mitmproxy calls its `default_addons()` in their order, `ControlPlane` calls the components'
hooks in the order above (`close` in reverse): `configure` with the `Settings` from the
config, at start and after every reload; `start` once the core serves live state; `close`
at shutdown. The core tells the watcher of every change itself (`ChangeCore.on_change`).
Readers (admin, metrics, health) get this object and read what they need from its parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.control.core import ChangeCore, Component, Settings
from router.control.drill import Drills
from router.control.notify import Notifier
from router.control.restore import Restored
from router.control.rollout import Rollouts
from router.control.store import Store
from router.control.warm import WarmWindow
from router.control.watcher import Watcher
from router.proxy.live import LiveRoute


class ControlPlane:
    """`follows_fleet`: a sidecar in fleet mode runs only the watcher (its own guardrails,
    at alpha / `local_floor_split`: a floor under the controller's pooled judge); the
    controller of the fleet runs the warm window, drills and rollouts for everyone."""

    def __init__(
        self,
        routes: Mapping[str, LiveRoute],
        store: Store,
        notifier: Notifier,
        *,
        follows_fleet: bool = False,
        local_floor_split: int = 1,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.core = ChangeCore(routes, store, notifier)
        self.watcher = Watcher(self.core, routes)
        self.watcher.floor_split = local_floor_split
        self.warm = WarmWindow(self.core)
        self.drills = Drills(self.core, self.watcher)
        self.rollouts = Rollouts(self.core, self.watcher, routes)
        self.components: tuple[Component, ...] = (
            self.watcher,
            self.warm,
            self.drills,
            self.rollouts,
        )
        self.running = (self.watcher,) if follows_fleet else self.components
        self.core.on_change(self.watcher.changed)

    def configure(self, settings: Settings) -> None:
        """The one way settings come in (a reload calls it with the new routes in place)."""
        for component in self.components:
            component.configure(settings)

    async def start(self, restored: Restored) -> None:
        """Serve the restored live state, then start every component's background work."""
        await self.core.start(restored)
        for component in self.running:
            component.start()

    async def close(self) -> None:
        for component in reversed(self.running):
            await component.close()
        await self.core.close()

    def describe(self) -> dict[str, Any]:
        """Every route's live state and, for a watched canary, each rule's verdict."""
        view = {}
        for name, state in self.core.states.items():
            verdicts = self.watcher.verdicts(name) or []
            view[name] = {
                **state.as_dict(),
                "guarded": self.watcher.guarded(name),
                "verdicts": [v.as_dict() for v in verdicts],
                "last_change": self.core.last_change(name),
            }
        return view
