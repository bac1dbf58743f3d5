"""The page's reading of the audit log: which version a record concerns, and why a version
was rolled back."""

from __future__ import annotations

import orjson

from router.admin.trail import concerned, digest


def state(
    active: str, candidate: str | None, weights: dict[str, int], **more: object
) -> dict[str, object]:
    return {"active": active, "candidate": candidate, "weights": weights, **more}


def test_a_drain_concerns_the_candidate_not_the_active_version() -> None:
    before = state("v1", "v2", {"v1": 9500, "v2": 500})
    after = state("v1", "v2", {"v1": 10000, "v2": 0})
    assert concerned(before, after) == "v2"


def test_a_deploy_keeps_the_trip_of_the_candidate_it_moves_aside() -> None:
    trip = {"rule": "error_rate", "description": "error_rate (40% > 2%)", "at": "t1"}
    before = state("v1", "v2", {"v1": 10000, "v2": 0}, candidate_state="rolled_back", trip=trip)
    after = state("v1", "v3", {"v1": 10000, "v3": 0}, rolled_back=["v2"])
    record = {"seq": 9, "at": "t2", "route": "r", "action": "deploy", "reason": "ship v3"}
    read = digest([orjson.dumps({**record, "before": before, "after": after})])
    assert read.rolled_back == [("r", "v2", trip)]
