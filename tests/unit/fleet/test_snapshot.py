"""What a sidecar serves: the published snapshot with the trips it has not taken in yet on top."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.control.moves import ROLLED_BACK, RouteState
from router.fleet.scripts import Read
from router.fleet.snapshot import InvalidSnapshot, effective, encode

CANARY = RouteState(
    active="v1",
    candidate="v2",
    weights={"v1": 9000, "v2": 1000},
    candidate_state="live",
    digests={"v1": "a" * 64, "v2": "b" * 64},
)


def trip(uid: str, version: str = "v2", route: str = "r") -> dict[str, Any]:
    return {
        "uid": uid,
        "route": route,
        "version": version,
        "trip": {"rule": "error_rate", "description": "error_rate 40% > 2%"},
        "instance": "s1",
    }


def read(epoch: int, trips: list[tuple[int, dict[str, Any]]], ingested: list[str]) -> Read:
    body = orjson.loads(encode({"r": CANARY}, ingested, "ctl-1"))
    return Read(epoch, body, trips)


def test_no_snapshot_is_never_no_config() -> None:
    assert effective(Read(None, None, [(3, trip("t1"))])) is None


def test_a_trip_not_taken_in_drains_the_canary_and_sets_the_epoch() -> None:
    seen = effective(read(5, [(6, trip("t1"))], ingested=[]))
    assert seen is not None
    assert seen.epoch == 6
    state = seen.routes["r"]
    assert state.weights == {"v1": 10000, "v2": 0}
    assert state.candidate_state == ROLLED_BACK
    assert state.trip is not None and state.trip["rule"] == "error_rate"
    assert [t["uid"] for t in seen.trips] == ["t1"]
    assert seen.leader == "ctl-1"


def test_a_trip_the_controller_took_in_is_not_applied_again() -> None:
    """The controller drained it and a person re-enabled the canary since: the old trip
    must not drain it a second time."""
    seen = effective(read(9, [(6, trip("t1"))], ingested=["t1"]))
    assert seen is not None
    assert seen.routes["r"].weights == {"v1": 9000, "v2": 1000}
    assert seen.trips == ()
    assert seen.epoch == 9


def test_a_trip_on_another_version_or_route_changes_nothing() -> None:
    seen = effective(read(5, [(6, trip("t1", version="v9")), (7, trip("t2", route="x"))], []))
    assert seen is not None
    assert seen.routes["r"] == CANARY
    assert seen.epoch == 7


def test_a_local_trip_not_yet_in_redis_applies_on_top_of_a_newer_snapshot() -> None:
    """While Redis was unreachable this sidecar tripped; a snapshot it reads meanwhile
    (published before the trip) cannot give the canary its weight back."""
    seen = effective(read(12, [], []), local=[trip("mine")])
    assert seen is not None
    assert seen.routes["r"].weights["v2"] == 0
    assert effective(read(12, [(13, trip("mine"))], []), local=[trip("mine")]) is not None


def test_a_snapshot_that_breaks_the_rules_is_refused_with_the_route_named() -> None:
    body = {"routes": {"r": {**CANARY.as_dict(), "weights": {"v1": 5000, "v2": 10}}}}
    with pytest.raises(InvalidSnapshot, match=r"route r: .*5010 basis points"):
        effective(Read(3, body, []))


def test_a_snapshot_that_is_not_the_fleets_json_is_refused_not_raised_as_anything_else() -> None:
    with pytest.raises(InvalidSnapshot, match="not JSON"):
        effective(Read(None, None, [], "the snapshot in Redis is not JSON"))
    with pytest.raises(InvalidSnapshot, match="no routes object"):
        effective(Read(3, {"routes": []}, []))
    hostile = {"routes": {"r": {**CANARY.as_dict(), "weights": "all"}}, "ingested": 3}
    with pytest.raises(InvalidSnapshot, match="route r"):
        effective(Read(3, hostile, []))
    odd_trip = {**trip("t1"), "trip": "not a verdict"}  # drained with no details
    seen = effective(Read(3, {"routes": {"r": CANARY.as_dict()}, "ingested": 3}, [(4, odd_trip)]))
    assert seen is not None and seen.routes["r"].weights["v2"] == 0
