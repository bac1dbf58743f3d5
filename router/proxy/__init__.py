"""The data plane: answers requests.

A request goes `connection` -> `handler.Proxy` (one `exchange.Exchange` each) -> `routing`
(choose a version of a `live.LiveRoute`) -> `dialects` (rewrite for the bundle) -> `forward`
(the provider) -> relay (`sse` for streams) -> `telemetry` and `access_log` (record). It reads
weight tables and updates counters; it never waits for the control plane.
"""
