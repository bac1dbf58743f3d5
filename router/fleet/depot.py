"""Bundles that travel with the fleet: published to Redis by digest, fetched and verified by
every sidecar before a version can get weight, and cached on the sidecar's disk.

`publish` uploads a bundle folder that loaded and validated (`bundle-router publish`); a
version already published with other content is refused: bump the version. `fetch` writes
the files into the sidecar's cache and loads them with the same loader as the config's
bundles, then checks the digest: a bundle whose content does not hash to the published
digest is never served. `cached` lists the cache at start, so a last-known-good that names
a fetched version can be restored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis

from router.bundles import Bundle, load_bundle
from router.control.durable import DurabilityError, write_durably
from router.errors import ConfigError, Refused
from router.fleet.keys import Keys

MAX_BUNDLE_BYTES = 8 * 1024 * 1024  # all the files of one bundle, together


class Unavailable(Exception):
    """A version the fleet asks for cannot be served here; the message says why."""


def _files(folder: Path) -> dict[str, bytes]:
    files, total = {}, 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            total += len(data)
            if total > MAX_BUNDLE_BYTES:
                raise Refused(
                    f"{folder} holds more than {MAX_BUNDLE_BYTES // 2**20} MiB; a bundle is a "
                    "prompt and tool schemas, so move anything else out of its folder",
                    code="bundle_too_large",
                )
            files[path.relative_to(folder).as_posix()] = data
    return files


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _data(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


async def published_digest(redis: Redis, keys: Keys, route: str, version: str) -> str | None:
    value = await redis.hget(keys.published, f"{route}/{version}")
    return _text(value) if value is not None else None


async def publish(redis: Redis, keys: Keys, bundle: Bundle) -> bool:
    """Upload `bundle`'s folder; False when that exact version was already published and
    Redis still holds these very files (a bundle evicted, deleted or changed in Redis is
    uploaded again: what a sidecar that refused it asks for). Raises Refused when the
    version was published with other content."""
    route, version = bundle.route, bundle.version
    known = await published_digest(redis, keys, route, version)
    if known is not None and known != bundle.digest:
        raise Refused(
            f"{route} {version} is already published with digest {known[:12]}, and this "
            f"folder's digest is {bundle.short_digest}: a version never changes; publish it "
            "under a new version number",
            code="digest_changed",
        )
    files = await asyncio.to_thread(_files, bundle.folder)
    key = keys.bundle(route, version, bundle.digest)
    if known is not None:
        stored = await redis.hgetall(key)
        if {_text(name): _data(data) for name, data in stored.items()} == files:
            return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)  # a copy changed in Redis may hold files this folder does not
        pipe.hset(key, mapping=cast("dict[Any, Any]", files))  # str -> bytes, as Redis takes
        pipe.hset(keys.published, f"{route}/{version}", bundle.digest)
        await pipe.execute()
    return True


def cache_folder(cache: Path, route: str, version: str, digest: str) -> Path:
    return cache / route / f"{version}@{digest[:12]}"


async def fetch(
    redis: Redis, keys: Keys, cache: Path, route: str, version: str, digest: str, environment: str
) -> Bundle:
    """The bundle for `version` with `digest`, from the cache or from Redis, verified.
    Raises Unavailable."""
    folder = cache_folder(cache, route, version, digest)
    if folder.is_dir():
        bundle = await asyncio.to_thread(
            _load_verified, folder, route, version, digest, environment
        )
        if bundle is not None:
            return bundle
    stored = await redis.hgetall(keys.bundle(route, version, digest))
    files = {_text(name): _data(data) for name, data in stored.items()}
    if not files:
        raise Unavailable(
            f"{route} {version} (digest {digest[:12]}) is not published and not on this "
            f"sidecar: run bundle-router publish {route} {version}"
        )
    return await asyncio.to_thread(_store, files, folder, route, version, digest, environment)


def _store(
    files: dict[str, bytes],
    folder: Path,
    route: str,
    version: str,
    digest: str,
    environment: str,
) -> Bundle:
    temp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    for name, data in files.items():
        path = (temp / name).resolve()
        if not path.is_relative_to(temp.resolve()):
            raise Unavailable(f"{route} {version}: the published file {name!r} leaves its folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(path, data)  # a last-known-good may name it after a crash
    bundle = _load_verified(temp, route, version, digest, environment)
    if bundle is None:
        shutil.rmtree(temp, ignore_errors=True)
        raise Unavailable(
            f"{route} {version}: the published files do not hash to digest {digest[:12]}; "
            "they were changed in Redis. Publish the version again from its folder"
        )
    shutil.rmtree(folder, ignore_errors=True)
    temp.rename(folder)
    try:
        write_durably(folder.parent / ".fetched", folder.name.encode())  # fsyncs the folder
    except DurabilityError as exc:
        raise Unavailable(f"{route} {version}: could not cache it on disk: {exc}") from None
    return dataclasses.replace(bundle, folder=folder)  # loaded and verified above, in `temp`


def _load_verified(
    folder: Path, route: str, version: str, digest: str, environment: str
) -> Bundle | None:
    try:
        bundle, _ = load_bundle(folder, route, environment)
    except ConfigError as exc:
        raise Unavailable(f"{route} {version}: the published bundle does not load: {exc}") from None
    if bundle.version != version or bundle.digest != digest:
        return None
    return bundle


def cached(cache: Path, route: str, environment: str) -> dict[str, Bundle]:
    """The bundles of `route` in the cache that still load and match their digest."""
    found: dict[str, Bundle] = {}
    home = cache / route
    if not home.is_dir():
        return found
    for folder in sorted(home.iterdir()):
        version, _, short = folder.name.rpartition("@")
        if not version or folder.name.startswith("."):
            continue
        try:
            bundle, _ = load_bundle(folder, route, environment)
        except ConfigError:
            continue
        if bundle.version == version and bundle.digest.startswith(short):
            found[version] = bundle
    return found
