"""Sticky sessions across a flip: which sessions a route saw, and when it last saw each.

In a rolling release an unflipped instance serves the old version and remembers every
session it routes (its table's `remember_sessions`). When the instance flips to the new
version, its new table holds (`SessionHold`) the sessions it saw within `idle` on the old
version until the hold's deadline, refreshing each one it serves; every other session goes to
the new version at once. The memory keeps no version: a session it holds is taken to have
been on `hold.version`, which is true when the table that remembered it sent every session
there. The handler's `choose` (router/proxy/handler.py) asks this memory only when the table
says so, so a route outside a rolling release pays one attribute check.

No lock, as for the telemetry (router/proxy/telemetry.py): one event loop runs the whole
process and nothing runs between two awaits, so a request's `seen` and `remember` run whole.

Bounded: at most `capacity` sessions (`limits.session_memory`), the least recently seen
dropped first. An OrderedDict and not a plain dict: dropping the oldest of a plain dict
(`next(iter(d))`) scans the holes earlier drops left at its front, about 10 us a drop at
100,000 sessions on this project's machine against 0.2 us here. A session is kept as its
`hash()` (64 bits: two of 100,000 sessions share one with a chance under 1 in 10^9), because a
key can be long: a fingerprint is a conversation's whole first message.
"""

from __future__ import annotations

from collections import OrderedDict


class SessionMemory:
    """Session key -> when this process last saw it (time.monotonic()), the newest last."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a session memory holds at least 1 session, not {capacity}")
        self.capacity = capacity
        self._last_seen: OrderedDict[int, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last_seen)

    def seen(self, key: str) -> float | None:
        """When the session was last noted, or None if it never was (or was dropped)."""
        return self._last_seen.get(hash(key))

    def remember(self, key: str, now: float) -> None:
        """The session was seen at `now`: it becomes the newest; past capacity the oldest goes."""
        last_seen = self._last_seen
        digest = hash(key)
        if digest in last_seen:
            last_seen.move_to_end(digest)
            last_seen[digest] = now
            return
        last_seen[digest] = now
        if len(last_seen) > self.capacity:
            last_seen.popitem(last=False)

    def resize(self, capacity: int) -> None:
        """A reload changed `limits.session_memory`: keep the newest `capacity` sessions."""
        if capacity < 1:
            raise ValueError(f"a session memory holds at least 1 session, not {capacity}")
        self.capacity = capacity
        while len(self._last_seen) > capacity:
            self._last_seen.popitem(last=False)
