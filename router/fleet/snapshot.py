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


def pending_trips(read: Read) -> list[tuple[int, dict[str, Any]]]:
    """The trips in `read` the snapshot has not taken in yet, oldest first."""
    taken = set((read.body or {}).get("ingested") or ())
    return [(epoch, trip) for epoch, trip in read.trips if trip.get("uid") not in taken]


def effective(read: Read, local: Iterable[Mapping[str, Any]] = ()) -> Effective | None:
    """The state to serve, or None when Redis holds no snapshot (never "no config": the
    caller keeps what it has). `local` are this sidecar's own trips that have not reached
    Redis yet: they apply too, so a newer snapshot cannot undo them. Raises InvalidSnapshot."""
    if read.epoch is None or read.body is None:
        return None
    routes: dict[str, RouteState] = {}
    for name, data in (read.body.get("routes") or {}).items():
        try:
            routes[name] = RouteState.from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidSnapshot(f"route {name}: {exc}") from None
    applied = []
    pending: list[Mapping[str, Any]] = [trip for _, trip in pending_trips(read)]
    written = {trip.get("uid") for trip in pending}
    taken = set(read.body.get("ingested") or ())
    pending += [t for t in local if t.get("uid") not in written and t.get("uid") not in taken]
    for trip in pending:
        state = routes.get(str(trip.get("route")))
        if state is not None and state.candidate == trip.get("version") and state.canary_live:
            routes[trip["route"]] = drain_candidate(state, trip.get("trip") or {})
            applied.append(trip)
    return Effective(read.latest, routes, tuple(applied), read.body.get("leader"))
