"""The checked whole: the config plus every route's bundles, cross-checked.

`load_catalog` is what `validate` and `serve` call, `load_catalog_paced` what `reload` calls.
Both collect every problem they can find before raising, so one run of `bundle-router
validate` shows them all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from router.bundles import Bundle, load_route_bundles
from router.config import Route, RouterConfig, load_config
from router.errors import ConfigError, DialectName, Problem
from router.pacing import SETTLE_EVERY, Pacer


@dataclass(frozen=True, slots=True)
class RouteSpec:
    name: str
    config: Route
    bundles: Mapping[str, Bundle]
    dialect: DialectName


@dataclass(frozen=True, slots=True)
class Catalog:
    config: RouterConfig
    routes: Mapping[str, RouteSpec]
    warnings: tuple[str, ...]


def load_catalog(path: str | Path) -> Catalog:
    catalog = _Catalog(load_config(path))
    environment = catalog.config.environment
    for name, route in catalog.config.routes.items():
        try:
            bundles, found = load_route_bundles(name, route.bundles, environment)
        except ConfigError as exc:
            catalog.problems.extend(exc.problems)
            continue
        catalog.add(name, route, bundles, found)
    return catalog.result()


async def load_catalog_paced(path: str | Path) -> Catalog:
    """`load_catalog` for a router that is serving. The files are read in a worker thread a
    few routes at a time (a few milliseconds of work), and the event loop answers requests
    in between. One thread call for the whole catalog would hold the GIL against the loop for
    seconds; reading on the loop would stall it on a slow disk."""
    catalog = _Catalog(await asyncio.to_thread(load_config, path))
    environment = catalog.config.environment
    pacer = Pacer(settle_every=SETTLE_EVERY)
    routes = list(catalog.config.routes.items())
    for start in range(0, len(routes), ROUTES_PER_READ):
        batch = routes[start : start + ROUTES_PER_READ]
        for (name, route), loaded in zip(
            batch, await asyncio.to_thread(_load_bundles, batch, environment), strict=True
        ):
            if isinstance(loaded, ConfigError):
                catalog.problems.extend(loaded.problems)
            else:
                catalog.add(name, route, *loaded)
        await pacer.pause()
    return catalog.result()


ROUTES_PER_READ = 4  # about 5 ms of reading and checking bundles


def _load_bundles(
    routes: list[tuple[str, Route]], environment: str
) -> list[tuple[dict[str, Bundle], list[str]] | ConfigError]:
    loaded: list[tuple[dict[str, Bundle], list[str]] | ConfigError] = []
    for name, route in routes:
        try:
            loaded.append(load_route_bundles(name, route.bundles, environment))
        except ConfigError as exc:
            loaded.append(exc)
    return loaded


class _Catalog:
    """A catalog being checked, one route at a time."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.file = str(config.source)
        self.problems: list[Problem] = []
        self.warnings: list[str] = []
        self.routes: dict[str, RouteSpec] = {}
        for name, provider in config.providers.items():
            if provider.api_key_env and not os.environ.get(provider.api_key_env):
                self.warnings.append(
                    f"{self.file}: providers.{name}.api_key_env: ${provider.api_key_env} is not "
                    "set; requests to this provider go without a key"
                )

    def result(self) -> Catalog:
        if self.problems:
            raise ConfigError(self.problems)
        return Catalog(self.config, self.routes, tuple(self.warnings))

    def add(self, name: str, route: Route, bundles: dict[str, Bundle], found: list[str]) -> None:
        """Check one route against its loaded bundles."""
        config, file, problems, warnings = self.config, self.file, self.problems, self.warnings
        key = f"routes.{name}"
        warnings.extend(found)
        known = ", ".join(sorted(bundles)) or "none"
        named = [("active", route.active)]
        if route.candidate:
            named.append(("candidate", route.candidate))
        named += [(f"weights.{v}", v) for v in route.basis_points()]
        for field, version in named:
            if version not in bundles:
                problems.append(
                    Problem(
                        file,
                        f"{key}.{field}",
                        f"version {version!r} has no bundle in {route.bundles} (found: {known})",
                        f"add {route.bundles}/{version}/bundle.yaml or name a found version",
                    )
                )
        dialects: dict[DialectName, list[str]] = {}
        for bundle in bundles.values():
            found_provider = config.providers.get(bundle.provider)
            if found_provider is None:
                problems.append(
                    Problem(
                        str(bundle.folder / "bundle.yaml"),
                        "provider",
                        f"provider {bundle.provider!r} is not configured "
                        f"(configured: {', '.join(config.providers)})",
                        f"add providers.{bundle.provider} to {file} or fix the name",
                    )
                )
                continue
            dialects.setdefault(found_provider.dialect, []).append(bundle.version)
            if bundle.model not in config.prices:
                warnings.append(
                    f"{file}: prices: no price for {bundle.model} ({name}/{bundle.version}); "
                    "its cost will be reported as unknown"
                )
        if len(dialects) > 1:
            split = "; ".join(f"{d}: {', '.join(v)}" for d, v in sorted(dialects.items()))
            problems.append(
                Problem(
                    file,
                    key,
                    f"the bundles of route {name} speak different API dialects ({split})",
                    "clients call one endpoint per route: give every bundle of a route a "
                    "provider of the same dialect, or split it into two routes",
                )
            )
        if not problems and dialects:
            self.routes[name] = RouteSpec(name, route, bundles, next(iter(dialects)))
