"""`bundle-router publish ROUTE VERSION`: load and check the version's bundle folder as the
router would, then upload it to the fleet's Redis by digest. Needs only the config and the
Redis URL in the environment, not a running controller, so a CI pipeline can publish."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from redis.exceptions import RedisError

from router.bundles import load_route_bundles
from router.config import load_config
from router.errors import ConfigError, Problem, Refused
from router.fleet.connect import connect, redacted, redis_url
from router.fleet.depot import publish
from router.fleet.keys import Keys


def publish_command(config_path: Path, route: str, version: str) -> int:
    config = load_config(config_path)
    if config.fleet is None:
        raise ConfigError(
            [
                Problem(
                    str(config_path),
                    "fleet",
                    "publish uploads to a fleet's Redis, and this config has no fleet: block",
                    "add fleet: {name: NAME} (docs/fleet.md)",
                )
            ]
        )
    spec = config.routes.get(route)
    if spec is None:
        print(
            f"bundle-router publish: no route {route!r} in {config_path}; routes: "
            f"{', '.join(config.routes)}",
            file=sys.stderr,
        )
        return 1
    bundles, warnings = load_route_bundles(route, spec.bundles, config.environment)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    bundle = bundles.get(version)
    if bundle is None:
        print(
            f"bundle-router publish: no bundle in {spec.bundles} declares version {version} "
            f"(found: {', '.join(sorted(bundles))})",
            file=sys.stderr,
        )
        return 1
    url = redis_url(config.fleet, str(config_path))
    keys = Keys(config.fleet.name)

    async def upload() -> bool:
        redis = connect(url)
        try:
            return await publish(redis, keys, bundle)
        finally:
            await redis.aclose()

    try:
        new = asyncio.run(upload())
    except Refused as exc:
        print(f"bundle-router publish: {exc}", file=sys.stderr)
        return 1
    except RedisError as exc:
        print(
            f"bundle-router publish: Redis at {redacted(url)} did not take it "
            f"({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 1
    what = "published" if new else "already published (same digest)"
    print(f"{route} {version} {what}: digest {bundle.short_digest}, fleet {config.fleet.name}")
    return 0
