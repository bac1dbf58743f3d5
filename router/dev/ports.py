"""Free TCP ports on 127.0.0.1 for the processes the demos and the tests start.

A port picked by binding port 0 and closing the socket comes from the kernel's ephemeral
range, the range its outgoing connections use too, and the kernel hands it out again: before
the child binds it, another pick, or any process's outgoing connection, may take it. A CI run
lost the fleet demo that way (two sidecars given the same port; 13 repeats in 500 picks here).
So ports come from below the ephemeral range, where outgoing connections never go, and one
process never hands out the same port twice.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 20000  # below this sit the well-known services of a developer's machine
ATTEMPTS = 200
LINUX_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_RANGE = (32768, 60999)  # Linux's default, when the file cannot be read

_given: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = (int(n) for n in LINUX_RANGE.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_RANGE
    return low, high


def free_port() -> int:
    """A port nobody listens on now, outside the ephemeral range when there is room below
    it, and never one this process handed out before."""
    low, _ = ephemeral_range()
    for _ in range(ATTEMPTS):
        port = random.randrange(LOWEST, low) if low - LOWEST >= 1000 else _kernel_pick()
        if port not in _given and _bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {ATTEMPTS} attempts")


def _kernel_pick() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
