"""Long work on the event loop, in slices, so that requests keep being answered.

A reload of a thousand routes or a scrape of four thousand versions is seconds of Python.
Run in one go on the loop it would hold every request for that long; run in a thread it
would fight the loop for the GIL. Instead the work calls `await pacer.pause()` between
small steps, and the pacer gives the loop back (one `sleep(0)`) each time a slice of
`slice_seconds` has run, so a request waits for at most about one slice per step it takes.

    pacer = Pacer()
    for route in routes:
        build(route)
        await pacer.pause()

Work that builds long-lived objects (a reload's new config) also freezes them out of the
garbage collector as it goes (`settle_every` slices, see `router.heap`), so that no
collection ever has more than a few slices' worth of them to walk.
"""

from __future__ import annotations

import asyncio
from time import perf_counter

from router import heap

SLICE_SECONDS = 0.002
SETTLE_EVERY = 10  # slices: what a collection then walks is about 20 ms of building


class Pacer:
    def __init__(self, slice_seconds: float = SLICE_SECONDS, *, settle_every: int = 0) -> None:
        self.slice_seconds = slice_seconds
        self.settle_every = settle_every
        self.slices = 0
        self.since = perf_counter()

    async def pause(self) -> None:
        """Let the loop run if this slice is used up; otherwise return at once."""
        if perf_counter() - self.since >= self.slice_seconds:
            self.slices += 1
            if self.settle_every and self.slices % self.settle_every == 0:
                heap.settle()
            await asyncio.sleep(0)
            self.since = perf_counter()
