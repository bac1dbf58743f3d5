"""The old home of the process harness, which now lives in testing/servers.py (shared with the
benchmarks). New tests import from `testing.servers`; this keeps `tests.servers` working."""

from __future__ import annotations

from testing.servers import (
    EXAMPLE_BUNDLES,
    REPO,
    START_TIMEOUT,
    Process,
    ProviderProcess,
    Router,
    free_port,
    router_config,
)
from tests.e2e.traffic import leave_mid_stream

__all__ = [
    "EXAMPLE_BUNDLES",
    "REPO",
    "START_TIMEOUT",
    "Process",
    "ProviderProcess",
    "Router",
    "free_port",
    "leave_mid_stream",
    "router_config",
]
