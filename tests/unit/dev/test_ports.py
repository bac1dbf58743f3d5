"""The ports the demos and the tests hand to the processes they start (router/dev/ports.py).

CI lost a fleet demo to two sidecars given the same port: a port picked by binding port 0
was freed, then handed out again by the kernel before the first child bound it."""

from __future__ import annotations

import pytest

from router.dev.ports import LOWEST, ephemeral_range, free_port


def test_one_process_never_gets_the_same_port_twice() -> None:
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_ports_come_from_below_the_range_outgoing_connections_use() -> None:
    low, _ = ephemeral_range()
    if low - LOWEST < 1000:
        pytest.skip(f"the ephemeral range starts at {low}: no room below it, the kernel picks")
    assert all(free_port() < low for _ in range(200))
