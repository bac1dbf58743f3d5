"""Routes as they are being served: each version ready to serve, and the route's weights.

A `LiveRoute`'s weight table is replaced by one assignment, never changed in place: a
request sees the old table or the new one. The data path reads these objects; the control
plane (rollouts, reload, admin, metrics) swaps their tables and adds versions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from router.bundles import Bundle
from router.catalog import RouteSpec
from router.config import SESSION_MEMORY
from router.patterns import compile_pattern
from router.proxy.dialects import DIALECTS, FAMILIES, Dialect, Injection
from router.proxy.dialects.base import Policy
from router.proxy.forward import Upstream
from router.proxy.routing import WeightTable
from router.proxy.sessions import SessionMemory
from router.proxy.telemetry import RouteCounters, VersionStats

BLAST_RADIUS_SECONDS = 60  # the share of requests each version served over this window


@dataclass(frozen=True, slots=True)
class Target:
    """One bundle version, ready to serve: what to inject, where to send it, what to count."""

    bundle: Bundle
    injections: Mapping[str, Injection]  # per endpoint dialect the route serves
    upstream: Upstream
    headers: Mapping[str, str]  # X-Bundle-Version and X-Bundle-Digest
    stats: VersionStats


class LiveRoute:
    """A route being served. `table` is swapped whole; counters are plain ints."""

    def __init__(
        self,
        spec: RouteSpec,
        upstreams: Mapping[str, Upstream],
        stats: Mapping[str, VersionStats],
        counters: RouteCounters | None = None,
        sessions: SessionMemory | None = None,
    ) -> None:
        config = spec.config
        self.name = spec.name
        self.dialect: Dialect = DIALECTS[spec.dialect]
        self.dialects = FAMILIES[spec.dialect]  # the endpoints this route serves
        self.targets: dict[str, Target] = {}
        for bundle in spec.bundles.values():
            self.add_target(bundle, upstreams[bundle.provider], stats[bundle.version])
        self.table = WeightTable.build(config.basis_points(), config.active, config.candidate)
        self.session_header = config.session_key.header
        self.session_field = (
            tuple(config.session_key.body_field.split("."))
            if config.session_key.body_field
            else None
        )
        self.session_source = "header" if self.session_header else "field"  # for the log
        self.reject_sessionless = config.session_key.missing == "reject"
        # `missing: reject` asks every client for a key of its own: no fallback stands in.
        fallback = () if self.reject_sessionless else config.session_key.fallback
        self.chain_sessions = "previous_response" in fallback
        self.fingerprint_sessions = "fingerprint" in fallback
        self.policy = Policy(spec.name, config.client_system, config.client_tools)
        self.allow_override = config.allow_version_override
        self.refusal_patterns = [compile_pattern(p) for p in config.refusal_patterns]  # RE2
        self.counters = counters or RouteCounters()
        # Sessions seen, for a rolling release's flip (read only when the table asks).
        self.sessions = sessions if sessions is not None else SessionMemory(SESSION_MEMORY)

    def add_target(self, bundle: Bundle, upstream: Upstream, stats: VersionStats) -> None:
        """Make a version servable (one dict assignment; weights decide if it gets traffic)."""
        self.targets[bundle.version] = Target(
            bundle,
            {dialect.name: dialect.prepare(bundle) for dialect in self.dialects},
            upstream,
            {"X-Bundle-Version": bundle.version, "X-Bundle-Digest": bundle.short_digest},
            stats,
        )

    def blast_radius(self, seconds: int = BLAST_RADIUS_SECONDS) -> dict[str, float]:
        """Each version's share of the route's requests over the last `seconds`: versions
        with weight or requests only, {} when none were served. On a fleet's controller the
        counts are the fleet's (router.fleet.pool), so this is the fleet's blast radius."""
        counts = {
            version: target.stats.requests_within(seconds)
            for version, target in list(self.targets.items())
        }
        total = sum(counts.values())
        if total == 0:
            return {}
        weights = self.table.weights
        return {v: n / total for v, n in counts.items() if n or weights.get(v, 0)}

    def session_key(self, request: web.Request, body: dict[str, Any]) -> str | None:
        if self.session_header:
            return request.headers.get(self.session_header) or None
        value: Any = body
        for part in self.session_field or ():
            value = value.get(part) if isinstance(value, dict) else None
        return str(value) if isinstance(value, str | int) and value != "" else None

    def held_target(self, table: WeightTable, key: str) -> Target | None:
        """For a table that tracks sessions (router/proxy/sessions.py): the held version's
        target when `table.hold` keeps this session on it, refreshing the session's last
        seen; else None, and an unflipped instance's table has the session remembered."""
        now = time.monotonic()
        hold = table.hold
        if hold is not None:
            if now < hold.until:
                seen = self.sessions.seen(key)
                target = self.targets.get(hold.version)
                if seen is not None and now - seen <= hold.idle and target is not None:
                    self.sessions.remember(key, now)
                    return target
        elif table.remember_sessions:
            self.sessions.remember(key, now)
        return None

    def describe_session_source(self) -> str:
        if self.session_header:
            return f"the {self.session_header} header"
        return f"the body field {'.'.join(self.session_field or ())}"
