"""Keeping the garbage collector off the configuration's objects.

A full collection walks every object the collector tracks. With a thousand routes the router
holds a few hundred thousand long-lived ones (config models, bundles, routes, counters) that
are never garbage, and each full collection walked them all while the event loop waited:
50-360 ms at a time with 1,000 routes of 4 versions. So once they are built, at start and
after a reload, they are moved out of the collector's sight (`gc.freeze()`); a reload freezes
its new objects every few slices of its work (`router.pacing`), so no collection walks more
than a few thousand. Frozen objects are still freed when their last reference goes, by
reference counting: that is how an old config goes after a reload, since nothing in it refers
back to itself (tests/unit/test_build.py checks that). What a freeze catches in flight, a request
being answered, is freed the same way; only a reference cycle among such objects would stay,
and answering requests makes next to none (5,000 requests and 50 streams left 9 objects for
the collector).

At start nothing is served yet, so while the first config is built only the young generations
are collected (they free the parsers' garbage as it goes); full collections of a heap that is
only growing took a quarter of the start time. A handful of cyclic objects that reached the old
generation are frozen with the rest, once.
"""

from __future__ import annotations

import gc

_THRESHOLDS = gc.get_threshold()


def building() -> None:
    """While the first config is built: young collections only (call `built()` after)."""
    gc.set_threshold(_THRESHOLDS[0], _THRESHOLDS[1], 1 << 30)


def built() -> None:
    """The first config is built: freeze it, and collect as usual again."""
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(*_THRESHOLDS)


def settle() -> None:
    """Collect what is garbage now, then freeze everything left: it is long-lived."""
    gc.collect()
    gc.freeze()
