"""Fleet mode, assembled for `serve` (a sidecar) and `control` (the controller).

`start_fleet` connects to Redis (URL from the environment), and makes the `Follower` or the
`Controller` that hooks into the change core. Nothing here runs without a `fleet:` block.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

from router.catalog import Catalog
from router.control.plane import ControlPlane
from router.errors import ConfigError, Problem
from router.fleet.connect import connect, redacted, redis_url
from router.fleet.controller import Controller
from router.fleet.depot import cached
from router.fleet.follower import BLOCK_SECONDS, Follower, labels
from router.fleet.keys import Keys
from router.fleet.lkg import Marker
from router.proxy.forward import Upstream
from router.proxy.live import LiveRoute

log = logging.getLogger("router.fleet")
Role = Literal["sidecar", "controller"]
FleetPart = Follower | Controller


def bundle_cache(catalog: Catalog) -> Path:
    return catalog.config.state_dir / "bundles"


def with_fetched_bundles(catalog: Catalog) -> Catalog:
    """The catalog plus the bundles this sidecar fetched from the fleet before, so a
    last-known-good that names one can be served again after a restart."""
    cache, environment = bundle_cache(catalog), catalog.config.environment
    routes = {}
    for name, spec in catalog.routes.items():
        fetched = {
            v: b for v, b in cached(cache, name, environment).items() if v not in spec.bundles
        }
        routes[name] = (
            dataclasses.replace(spec, bundles={**spec.bundles, **fetched}) if fetched else spec
        )
    return dataclasses.replace(catalog, routes=routes)


def clients(catalog: Catalog) -> tuple[Redis, Redis, str]:
    """Two clients (one for requests, one that blocks on the event stream) and the URL as
    it may be logged."""
    fleet = catalog.config.fleet
    assert fleet is not None
    url = redis_url(fleet, str(catalog.config.source))
    return connect(url), connect(url, read_timeout=BLOCK_SECONDS + 2.0), redacted(url)


def make_fleet(
    role: Role,
    catalog: Catalog,
    routes: MutableMapping[str, LiveRoute],
    upstreams: Mapping[str, Upstream],
    control: ControlPlane,
) -> FleetPart:
    fleet = catalog.config.fleet
    assert fleet is not None
    redis, blocking, shown = clients(catalog)
    keys = Keys(fleet.name)
    marker = Marker(catalog.config.state_dir)
    try:
        identity = labels(fleet.region, fleet.pool, fleet.instance)
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]  # "fleet.region is ..."
        raise ConfigError(
            [Problem(str(catalog.config.source), name, str(exc), "set the variable")]
        ) from None
    log.info(
        "fleet %s as %s %s (%s/%s) on %s",
        fleet.name,
        role,
        identity["instance"],
        identity["region"],
        identity["pool"],
        shown,
    )
    if role == "controller":
        owner = f"{identity['instance']}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        return Controller(catalog, control, redis, blocking, keys, marker, owner, routes)
    return Follower(
        catalog,
        routes,
        upstreams,
        control,
        redis,
        blocking,
        keys,
        marker,
        bundle_cache(catalog),
        identity,
    )
