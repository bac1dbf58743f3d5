"""What the fleet publishes: every route's state at an epoch, plus trips on top of it.

The controller publishes a snapshot (`body`): every route's `RouteState`, and the ids of the
trips it has already taken in. A sidecar's trip is written beside it, without the lease. What
a sidecar serves is `effective`: the snapshot with every trip it has not taken in yet applied
on top, so a trip drains the canary on every sidecar before the controller (maybe down) has
recorded it, and a controller that publishes a change made before it saw the trip cannot
undo it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from router.control.durable import utc_now
from router.control.moves import RouteState, drain_candidate
from router.fleet.scripts import TRIPS_KEPT, Read

INGESTED_KEPT = 2 * TRIPS_KEPT  # more than Redis keeps, so an old trip is never applied again


def encode(routes: Mapping[str, RouteState], ingested: Iterable[str], leader: str) -> bytes:
    """A snapshot's body: every route's state, the trips taken in, who published it."""
    return orjson.dumps(
        {
            "routes": {name: state.as_dict() for name, state in routes.items()},
            "ingested": list(ingested)[-INGESTED_KEPT:],
            "leader": leader,
            "at": utc_now(),
        }
    )


@dataclass(frozen=True, slots=True)
class Effective:
    """The state a sidecar should serve at `epoch`, and the trips applied on top."""

    epoch: int
    routes: dict[str, RouteState]
    trips: tuple[Mapping[str, Any], ...]
    leader: str | None


class InvalidSnapshot(ValueError):
    """The snapshot breaks the rules; the message says where."""


def ingested_ids(body: Mapping[str, Any]) -> list[str]:
    """The ids of the trips a snapshot's body lists as taken in, oldest first."""
    ingested = body.get("ingested")
    return [uid for uid in ingested if isinstance(uid, str)] if isinstance(ingested, list) else []


def taken_in(read: Read) -> set[str]:
    """The ids of the trips the snapshot in `read` has taken in."""
    return set(ingested_ids(read.body or {}))


def pending_trips(read: Read) -> list[tuple[int, dict[str, Any]]]:
    """The trips in `read` the snapshot has not taken in yet, oldest first."""
    taken = taken_in(read)
    return [(epoch, trip) for epoch, trip in read.trips if trip.get("uid") not in taken]


def with_trips(name: str, state: RouteState, trips: Iterable[Mapping[str, Any]]) -> RouteState:
    """`state` of route `name` with every trip in `trips` on its live canary applied: the
    canary drained, as the sidecar that tripped it did."""
    for trip in trips:
        if trip.get("route") != name or trip.get("version") != state.candidate:
            continue
        if state.canary_live:
            detail = trip.get("trip")
            state = drain_candidate(state, detail if isinstance(detail, dict) else {})
    return state


def effective(read: Read, local: Iterable[Mapping[str, Any]] = ()) -> Effective | None:
    """The state to serve, or None when Redis holds no snapshot (never "no config": the
    caller keeps what it has). `local` are this sidecar's own trips that the controller has
    not taken in: they apply too, so a newer snapshot cannot undo them. Raises
    InvalidSnapshot."""
    if read.problem is not None:
        raise InvalidSnapshot(read.problem)
    if read.epoch is None or read.body is None:
        return None
    routes_data = read.body.get("routes")
    if not isinstance(routes_data, dict):
        raise InvalidSnapshot("the snapshot has no routes object")
    routes: dict[str, RouteState] = {}
    for name, data in routes_data.items():
        try:
            routes[name] = RouteState.from_dict(data)
            routes[name].table()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidSnapshot(f"route {name}: {exc}") from None
    pending: list[Mapping[str, Any]] = [trip for _, trip in pending_trips(read)]
    written = {trip.get("uid") for trip in pending}
    taken = taken_in(read)
    pending += [t for t in local if t.get("uid") not in written and t.get("uid") not in taken]
    applied = []
    for trip in pending:
        name = trip.get("route")
        if isinstance(name, str) and name in routes:
            drained = with_trips(name, routes[name], [trip])
            if drained is not routes[name]:
                routes[name] = drained
                applied.append(trip)
    leader = read.body.get("leader")
    return Effective(
        read.latest, routes, tuple(applied), leader if isinstance(leader, str) else None
    )
