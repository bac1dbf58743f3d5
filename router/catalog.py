"""The checked whole: the config plus every route's bundles, cross-checked.

`load_catalog` is what `validate`, `serve` and (later) `reload` call. It collects every
problem it can find before raising, so one run of `bundle-router validate` shows them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from router.bundles import Bundle, load_route_bundles
from router.config import Route, RouterConfig, load_config
from router.errors import ConfigError, DialectName, Problem


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
    config = load_config(path)
    file = str(config.source)
    problems: list[Problem] = []
    warnings: list[str] = []
    routes: dict[str, RouteSpec] = {}

    for name, provider in config.providers.items():
        if provider.api_key_env and not os.environ.get(provider.api_key_env):
            warnings.append(
                f"{file}: providers.{name}.api_key_env: ${provider.api_key_env} is not set; "
                "requests to this provider go without a key"
            )

    for name, route in config.routes.items():
        key = f"routes.{name}"
        try:
            bundles, found = load_route_bundles(name, route.bundles, config.environment)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
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
            routes[name] = RouteSpec(name, route, bundles, next(iter(dialects)))

    if problems:
        raise ConfigError(problems)
    return Catalog(config, routes, tuple(warnings))
