"""Reading config and bundles again while serving: `reload`, and `deploy` of one version.

Everything is loaded and checked before anything changes. On any problem the router keeps
serving what it had and the caller gets the problems, as nginx does with a bad config. The
bundles are read and the new routes built in slices that let requests through
(`router.pacing`), so a reload of thousands of routes does not stall the proxy. Then every
route is swapped by one dict assignment, all in one step: a request in flight keeps the route
object it started with, the next one gets the new one. Versions whose bundle did not change
keep their counters, so the guardrails keep their evidence. Live weights never come from
the config: a route's weights change only through the change function.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from router import heap
from router.background import Background
from router.bundles import load_route_bundles
from router.catalog import Catalog, load_catalog_paced
from router.control.build import build_route, build_settings, build_upstreams, new_stats
from router.control.core import Change, starting_at
from router.control.durable import DurabilityError, StateError
from router.control.moves import RouteState, deploy
from router.control.plane import ControlPlane
from router.control.restore import digests_of, reconcile
from router.errors import BadRequest, ConfigError, NotFound, Refused, StateNotDurable
from router.pacing import SETTLE_EVERY, Pacer
from router.proxy.forward import Upstream
from router.proxy.live import LiveRoute

log = logging.getLogger("router.reload")
RETIRE_AFTER = 60.0  # seconds an old upstream pool stays open for requests still using it


def _problems(exc: ConfigError) -> BadRequest:
    lines = "\n".join(f"  {problem}" for problem in exc.problems)
    return BadRequest(
        f"the new configuration has {len(exc.problems)} problem(s); nothing was changed:\n{lines}",
        code="invalid_config",
    )


def _recorder(found: RouteState) -> Callable[[RouteState | None], RouteState]:
    """A move that records versions found on disk (weight 0), leaving the rest as it is."""

    def record(current: RouteState | None) -> RouteState:
        assert current is not None
        return dataclasses.replace(
            current,
            weights={**found.weights, **current.weights},
            digests={**found.digests, **current.digests},
        )

    return record


class Reloader:
    def __init__(
        self,
        config_path: Path,
        catalog: Catalog,
        routes: MutableMapping[str, LiveRoute],
        upstreams: MutableMapping[str, Upstream],
        control: ControlPlane,
    ) -> None:
        self.config_path = config_path
        self.catalog = catalog
        self.routes = routes
        self.upstreams = upstreams
        self.control = control
        self.core = control.core
        self.lock = asyncio.Lock()
        self.background = Background()
        self.retiring: list[Upstream] = []  # pools a reload replaced, closed after RETIRE_AFTER

    async def close(self) -> None:
        await self.background.stop()
        for upstream in self.retiring:  # a shutdown within RETIRE_AFTER of their reload
            await upstream.close()
        self.retiring.clear()

    async def reload(self, *, actor: str, reason: str) -> dict[str, Any]:
        async with self.lock:
            try:
                catalog = await load_catalog_paced(self.config_path)
            except ConfigError as exc:
                raise _problems(exc) from None
            return await self._apply(catalog, actor=actor, reason=reason)

    async def _apply(self, catalog: Catalog, *, actor: str, reason: str) -> dict[str, Any]:
        config, core = catalog.config, self.core
        # 1. Check everything against live state before touching anything.
        reconciled: dict[str, RouteState] = {}
        notes: list[str] = list(catalog.warnings)
        pacer = Pacer(settle_every=SETTLE_EVERY)
        for name, spec in catalog.routes.items():
            await pacer.pause()
            state = core.states.get(name)
            if state is None:
                continue
            try:
                reconciled[name], found, changed = reconcile(spec, state)
            except StateError as exc:
                raise Refused(f"{exc}; nothing was changed", code="version_missing") from None
            if changed:
                raise Refused("; ".join(changed) + "; nothing was changed", code="digest_changed")
            notes += found
        # 2. Build the new pieces (new upstream pools start just before the commit).
        old_upstreams = dict(self.upstreams)
        upstreams = build_upstreams(config, old_upstreams)
        started = [u for u in upstreams.values() if u not in old_upstreams.values()]
        routes: dict[str, LiveRoute] = {}
        for name, spec in catalog.routes.items():
            routes[name] = build_route(config, spec, upstreams, self.routes.get(name))
            await pacer.pause()
        retired = [u for u in old_upstreams.values() if u not in upstreams.values()]
        added = [n for n in routes if n not in self.routes]
        removed = [n for n in self.routes if n not in routes]
        settings = build_settings(catalog)
        # 3. The record: new routes start from their config, a route that comes back from
        # its kept live state (a canary tripped before it left stays tripped), new versions
        # are recorded at 0.
        changes = []
        for name in added:
            spec = catalog.routes[name]
            kept = core.kept(name)
            if kept is None:
                first = RouteState.from_config(spec.config, digests_of(spec))
                changes.append(
                    Change(
                        name, starting_at(first), "init", "reload: initial weights from the config"
                    )
                )
                continue
            try:
                back, found, changed = reconcile(spec, RouteState.from_dict(kept))
            except (StateError, ValueError, KeyError) as exc:
                raise Refused(f"{exc}; nothing was changed", code="version_missing") from None
            if changed:
                raise Refused("; ".join(changed) + "; nothing was changed", code="digest_changed")
            notes += found
            changes.append(
                Change(
                    name,
                    starting_at(back),
                    "restore",
                    "reload: the route is back in the config; its live state from before is kept",
                )
            )
        new_versions = {}
        for name, state in reconciled.items():
            fresh = sorted(set(state.digests) - set(core.states[name].digests))
            if fresh:
                new_versions[name] = fresh
                changes.append(
                    Change(
                        name,
                        _recorder(state),
                        "versions_added",
                        f"reload found {', '.join(fresh)} (weight 0)",
                    )
                )
        summary = {
            "routes_added": added,
            "routes_removed": removed,
            "versions_added": new_versions,
            "providers_replaced": sorted(u.name for u in retired),
            "notes": notes,
        }

        installed = False

        def install() -> None:
            """The swap, one assignment per name; runs once the record is durable, under
            the change lock, so no trip lands between reading a table and replacing it.
            The control plane is configured with the new routes in place (the watcher
            watches again where a route's rules or a watched version's counters changed)."""
            nonlocal installed
            installed = True  # from here the new pools may carry requests
            self.retiring += retired  # closed after RETIRE_AFTER, or at a stop before that
            for name, route in routes.items():
                if name in self.routes:
                    route.table = self.routes[name].table
            self.upstreams.update(upstreams)
            for name in [n for n in self.upstreams if n not in upstreams]:
                del self.upstreams[name]
            for name, route in routes.items():
                self.routes[name] = route
            for name in removed:
                del self.routes[name]
                core.forget(name)
            self.control.configure(settings)
            self.catalog = catalog

        # 4. Durable first, then in force: a full disk leaves the old config serving.
        note = {"action": "reload", "actor": actor, "route": None, "reason": reason}
        for upstream in started:
            await upstream.start()
        try:
            await core.commit(
                changes, actor=actor, install=install, note={**note, "details": summary}
            )
        except DurabilityError as exc:
            raise StateNotDurable(
                f"{exc}; the reload was not applied, the old configuration keeps serving",
                code="state_not_durable",
            ) from None
        finally:  # not installed (a full disk, a sidecar's refusal): the new pools close again
            if not installed:
                for upstream in started:
                    await upstream.close()
        heap.settle()  # so are the new routes; the old ones went by reference counting
        if retired:
            self.background.start(self._retire(retired), "retire-upstreams")
        for note_text in notes:
            log.warning("%s", note_text)
        return summary

    async def _retire(self, upstreams: list[Upstream]) -> None:
        await asyncio.sleep(RETIRE_AFTER)
        for upstream in upstreams:
            self.retiring.remove(upstream)
            await upstream.close()

    async def deploy(self, name: str, version: str, *, actor: str, reason: str) -> dict[str, Any]:
        """Load `version` from the route's bundle folder and make it the candidate at 0."""
        async with self.lock:
            spec = self.catalog.routes.get(name)
            route = self.routes.get(name)
            if spec is None or route is None:
                raise NotFound(
                    f"unknown route {name!r}; routes: {', '.join(self.routes)}",
                    code="unknown_route",
                )
            config = self.catalog.config
            try:
                bundles, _ = await asyncio.to_thread(
                    load_route_bundles, name, spec.config.bundles, config.environment
                )
            except ConfigError as exc:
                raise _problems(exc) from None
            bundle = bundles.get(version)
            if bundle is None:
                raise NotFound(
                    f"no bundle in {spec.config.bundles} declares version {version} (found: "
                    f"{', '.join(sorted(bundles))}); add {spec.config.bundles}/{version}/"
                    "bundle.yaml first",
                    code="unknown_version",
                )
            provider = config.providers.get(bundle.provider)
            if provider is None or provider.dialect != spec.dialect:
                raise BadRequest(
                    f"{version} uses provider {bundle.provider!r}, which is not a configured "
                    f"{spec.dialect} provider; route {name} speaks {spec.dialect}",
                    code="wrong_provider",
                )
            loaded = route.targets.get(version)
            if loaded is None:  # servable at weight 0 before the change makes it the candidate
                route.add_target(
                    bundle, self.upstreams[bundle.provider], new_stats(config, name, bundle)
                )
            try:
                record = await self.core.change(
                    name,
                    lambda state: deploy(state, version, bundle.digest),
                    actor=actor,
                    action="deploy",
                    reason=reason,
                    details={"version": version, "digest": bundle.digest, "model": bundle.model},
                )
            except Exception:  # refused, or not durable: the version is not left loaded
                if loaded is None:
                    del route.targets[version]
                raise
            if version not in spec.bundles:
                spec = dataclasses.replace(spec, bundles={**spec.bundles, version: bundle})
                routes = {**self.catalog.routes, name: spec}
                self.catalog = dataclasses.replace(self.catalog, routes=routes)
            return record
