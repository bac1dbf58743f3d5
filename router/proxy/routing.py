"""Sticky weighted routing: immutable weight tables and the session hash.

A session key hashes (mmh3, unsigned, seed 0) with its route name to one of 10,000 buckets.
A weight table lays the versions out over the buckets: the candidate from bucket 0 upward,
any other version (say a warm one) at the top end, and the active (control) version in
between. Raising the candidate's weight therefore only moves buckets from the active version
to the candidate and leaves every other version's buckets where they were, so during a ramp
a session never flips candidate -> active -> candidate.

A table is never changed in place; a new one replaces it by one assignment, so a request
sees the old table or the new one, never a mix.

A table may also keep sessions where they were across a flip (a rolling release moving this
instance to the new version): `remember_sessions` has the handler remember each session it
routes, and a later table's `hold` sends the sessions remembered within `hold.idle` to
`hold.version` until `hold.until` (router/proxy/sessions.py keeps the memory).
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import mmh3

BASIS_POINTS = 10_000


def bucket_of(route: str, session_key: str) -> int:
    """The stable bucket 0..9999 of a session on a route."""
    return int(mmh3.hash(f"{route}\x00{session_key}", 0, False)) % BASIS_POINTS


def random_bucket() -> int:
    return random.randrange(BASIS_POINTS)


@dataclass(frozen=True, slots=True)
class SessionHold:
    """Sessions seen within `idle` seconds stay on `version` until `until` (a
    `time.monotonic()` deadline of this process); a session quiet for longer has ended."""

    version: str
    until: float
    idle: float


@dataclass(frozen=True, slots=True)
class WeightTable:
    """Versions laid out over the buckets. Build with `WeightTable.build`."""

    weights: Mapping[str, int]  # version -> basis points, in layout order
    order: tuple[str, ...]
    bounds: tuple[int, ...]  # exclusive upper bucket of each version in `order`
    # Versions an `X-Bundle-Version` override may pick: the active one and a live candidate.
    # It lives in the table so that a rollback cuts overrides off in the same swap.
    live: frozenset[str] = frozenset()
    hold: SessionHold | None = None  # a flipped instance: its earlier sessions stay put
    remember_sessions: bool = False  # an unflipped instance: remember sessions for a flip
    # Either of the two: the one attribute the handler reads on the hot path.
    tracks_sessions: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.hold is not None and self.remember_sessions:
            # Noting a new session under a hold would send its next turn to the held version.
            raise ValueError(
                "a weight table holds sessions (a flipped instance) or remembers them (an "
                "unflipped one), not both; build it with one of hold= and remember_sessions="
            )
        object.__setattr__(self, "tracks_sessions", self.hold is not None or self.remember_sessions)

    @classmethod
    def build(
        cls,
        weights: Mapping[str, int],
        active: str,
        candidate: str | None,
        *,
        candidate_live: bool = True,
        hold: SessionHold | None = None,
        remember_sessions: bool = False,
    ) -> WeightTable:
        if sum(weights.values()) != BASIS_POINTS:
            raise ValueError(f"weights sum to {sum(weights.values())} basis points, not 10000")
        if any(w < 0 for w in weights.values()):
            raise ValueError("a weight is negative")
        order = [candidate] if candidate is not None and candidate in weights else []
        if active in weights:
            order.append(active)
        order += sorted(v for v in weights if v not in (active, candidate))
        bounds, total = [], 0
        for version in order:
            total += weights[version]
            bounds.append(total)
        live = {active, candidate} if candidate is not None and candidate_live else {active}
        return cls(
            MappingProxyType({v: weights[v] for v in order}),
            tuple(order),
            tuple(bounds),
            frozenset(live),
            hold,
            remember_sessions,
        )

    def choose(self, bucket: int) -> str:
        return self.order[bisect_right(self.bounds, bucket)]

    def percent(self, version: str) -> float:
        return self.weights.get(version, 0) / 100
