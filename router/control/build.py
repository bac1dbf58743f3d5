"""Turning a checked catalog into what serves traffic: upstreams, live routes and the
control plane's settings.

Used at start and again by `reload` and `deploy`, which pass the live routes they replace so
that every version whose bundle is unchanged keeps its counters (and so its guardrail
evidence) across the swap.
"""

from __future__ import annotations

from collections.abc import Mapping

from router.bundles import Bundle
from router.catalog import Catalog, RouteSpec
from router.config import RouterConfig
from router.control.core import Settings
from router.control.guardrails import Guard
from router.proxy.dialects import DIALECTS
from router.proxy.forward import Upstream
from router.proxy.live import LiveRoute
from router.proxy.sessions import SessionMemory
from router.proxy.telemetry import NullStats, TokenPrice, VersionStats


def build_upstreams(
    config: RouterConfig, previous: Mapping[str, Upstream] | None = None
) -> dict[str, Upstream]:
    """One upstream per provider; a provider whose settings did not change keeps its pool."""
    upstreams = {}
    for name, provider in config.providers.items():
        old = (previous or {}).get(name)
        if old is not None and old.provider == provider:
            upstreams[name] = old
        else:
            upstreams[name] = Upstream(name, provider, DIALECTS[provider.dialect])
    return upstreams


def price_of(config: RouterConfig, model: str) -> TokenPrice | None:
    """USD per token; unset cache prices fall back to the input price."""
    price = config.prices.get(model)
    if price is None:
        return None
    per_token = 1e-6
    return TokenPrice(
        input=price.input * per_token,
        output=price.output * per_token,
        cache_read=(price.cached_input if price.cached_input is not None else price.input)
        * per_token,
        cache_write=(price.cache_write if price.cache_write is not None else price.input)
        * per_token,
    )


def new_stats(config: RouterConfig, route: str, bundle: Bundle) -> VersionStats:
    kind = VersionStats if config.telemetry.enabled else NullStats
    return kind(route, bundle.version, price_of(config, bundle.model), int(config.telemetry.window))


def build_route(
    config: RouterConfig,
    spec: RouteSpec,
    upstreams: Mapping[str, Upstream],
    previous: LiveRoute | None = None,
) -> LiveRoute:
    """A live route for `spec`. Versions that `previous` served with the same digest keep
    their counters, and the route its remembered sessions; the weight table is the caller's
    to set (from live state)."""
    stats = {}
    for version, bundle in spec.bundles.items():
        old = previous.targets.get(version) if previous else None
        same = old is not None and old.bundle.digest == bundle.digest
        if old is not None and same and old.stats.price == price_of(config, bundle.model):
            stats[version] = old.stats
        else:
            stats[version] = new_stats(config, spec.name, bundle)
    capacity = config.limits.session_memory
    if previous is None:
        route = LiveRoute(spec, upstreams, stats, sessions=SessionMemory(capacity))
    else:  # the sessions it remembered hold across a reload like its counters
        sessions = previous.sessions
        if sessions.capacity != capacity:
            sessions.resize(capacity)
        route = LiveRoute(spec, upstreams, stats, previous.counters, sessions)
        route.table = previous.table
    return route


def build_routes(catalog: Catalog, upstreams: Mapping[str, Upstream]) -> dict[str, LiveRoute]:
    return {
        name: build_route(catalog.config, spec, upstreams) for name, spec in catalog.routes.items()
    }


def build_guards(catalog: Catalog) -> tuple[dict[str, Guard | None], float]:
    """Each route's guard (None for `guardrails: off`) and the shortest check interval."""
    guards: dict[str, Guard | None] = {}
    intervals = []
    for name, spec in catalog.routes.items():
        rules = spec.config.guardrails
        if rules == "off":
            guards[name] = None
        else:
            guards[name] = Guard(rules)
            intervals.append(rules.check_interval)
    return guards, min(intervals, default=0.1)


def build_settings(catalog: Catalog) -> Settings:
    """The control plane's settings from the config (`ControlPlane.configure` takes them)."""
    guards, check_interval = build_guards(catalog)
    plans = {name: spec.config.rollout for name, spec in catalog.routes.items()}
    return Settings(guards, check_interval, plans, catalog.config.warm_window)
