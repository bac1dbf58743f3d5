"""The page's time series: what one step's point says, from two readings of real counters."""

from __future__ import annotations

import math

from router.admin.series import FIELDS, Reading, Ring, point
from router.proxy.telemetry import Outcome, TokenPrice, Usage, VersionStats

PRICE = TokenPrice(input=1e-6, output=2e-6, cache_read=0.0, cache_write=0.0)


def test_a_point_is_the_rates_of_what_happened_between_two_readings() -> None:
    stats = VersionStats("r", "v1", PRICE, 60)
    for _ in range(10):  # before the first reading: not in the point
        stats.record_request(Outcome.PROVIDER_5XX, 5.0, 0.001)
    first = Reading.of(stats, at=100.0)
    for i in range(20):
        stats.record_request(Outcome.OK if i % 4 else Outcome.PROVIDER_5XX, 0.2, 0.001)
        stats.record_usage(Usage(input=100, output=50))
    stats.record_refusal()
    stats.record_tool_call("valid")
    stats.record_tool_call("invalid_json")
    stats.record_tool_call("client_tool")  # the client's own tool: not judged
    stats.record_feedback(True, None)
    fields = dict(zip(FIELDS, point(Reading.of(stats, at=110.0), first), strict=True))
    assert fields["request_rate"] == 2.0
    assert fields["error_rate"] == 5 / 20
    assert 0.18 < fields["p95_seconds"] < 0.22  # the earlier 5 s answers are not in it
    assert math.isnan(fields["ttft_p95_seconds"])  # no stream: unknown, not 0
    assert math.isclose(fields["cost_per_request"], 100e-6 + 100e-6)
    assert fields["tool_failure_rate"] == 0.5
    assert fields["refusal_rate"] == 1 / 20
    assert fields["eval_pass_rate"] == 1.0


def test_a_ring_keeps_the_newest_points_in_order_and_unknowns_as_none() -> None:
    ring = Ring(3)
    nan = float("nan")
    for t in range(5):
        ring.add(1000.0 + t, (float(t), nan, 0.5, nan, nan, nan, nan, nan))
    columns = ring.columns(since=0.0)
    assert columns["t"] == [1002.0, 1003.0, 1004.0]
    assert columns["request_rate"] == [2.0, 3.0, 4.0]
    assert columns["error_rate"] == [None, None, None]
    assert ring.columns(since=1003.5)["t"] == [1004.0]
