"""Keeping the garbage collector off the configuration's objects.

A full collection walks every object the collector tracks. With a thousand routes the router
holds a few hundred thousand long-lived ones (config models, bundles, routes, counters) that
are never garbage, and each full collection walked them all while the event loop waited:
50-150 ms at a time. So once they are built, at start and after a reload, `settle()` moves
them out of the collector's sight (`gc.freeze()`); a reload freezes its new objects every
few slices of its work (`router.pacing`), so no collection walks more than a few thousand.
Frozen objects are still freed when their last reference goes, by reference counting: that
is how an old config goes after a reload, since nothing in it refers back to itself
(tests/test_scale.py checks that). What a freeze catches in flight, a request being answered,
is freed the same way; only a reference cycle among such objects would stay, and answering
requests makes next to none (5,000 requests and 50 streams left 9 objects for the collector).

At start nothing is served yet, so the build runs with the collector off (a quarter of the
start time went to collections of a heap that was only growing).
"""

from __future__ import annotations

import gc


def building() -> None:
    """Stop collecting while the first config is built (call `settle()` after it)."""
    gc.disable()


def settle() -> None:
    """Collect what is garbage now, then freeze everything left: it is long-lived."""
    gc.collect()
    gc.freeze()
    gc.enable()
