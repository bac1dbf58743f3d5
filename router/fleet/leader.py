"""The controller's leadership: a lease in Redis, and the fencing token that comes with it.

One controller holds `leader` (its id, with the lease as the key's TTL) and renews it every
third of the lease. Taking the lease raises `fence`; the leader's every write carries its
token, and the publish script refuses any token but the current one. A leader counts its
lease from *before* it asked Redis, so it stops believing it leads a little early rather
than late; and a controller paused past its lease (a GC pause, SIGSTOP, a partition) that
wakes with a write in flight is refused by the token, whatever it believes.
"""

from __future__ import annotations

import logging
import time

from router.fleet.scripts import Scripts

log = logging.getLogger("router.fleet")


class Lease:
    def __init__(self, scripts: Scripts, owner: str, ttl: float) -> None:
        self.scripts = scripts
        self.owner = owner
        self.ttl = ttl
        self.token: int | None = None
        self.highest_token = 0  # never take a token at or below one seen before
        self.until = 0.0  # monotonic time the lease is held until, by our own count

    @property
    def leading(self) -> bool:
        return self.token is not None and time.monotonic() < self.until

    async def tick(self) -> bool:
        """Renew the lease, or try to take it; True when this controller just became the
        leader. Raises Redis errors (the lease then runs out on its own)."""
        asked = time.monotonic()
        if self.token is not None:
            if await self.scripts.renew(self.owner, self.ttl):
                self.until = asked + self.ttl
                return False
            self.lose("the lease was taken or expired in Redis")
        token = await self.scripts.acquire(self.owner, self.ttl, self.highest_token)
        if token is None:
            return False
        self.token, self.highest_token = token, max(token, self.highest_token)
        self.until = asked + self.ttl
        log.warning("leading fleet writes as %s with fencing token %d", self.owner, token)
        return True

    def lose(self, why: str) -> None:
        if self.token is not None:
            log.error(
                "%s is no longer the leader (fencing token %d): %s", self.owner, self.token, why
            )
        self.token = None
