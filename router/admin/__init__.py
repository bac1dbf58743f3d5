"""Operator surfaces: how people and tools see and steer the router.

`api` is the admin HTTP API on the Unix socket, `client` the CLI's side of it, and `metrics`
serves /metrics (Prometheus) and the read-only views on the metrics listener.
"""
