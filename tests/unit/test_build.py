"""Building what serves from a catalog: a replaced configuration leaves nothing behind for
the garbage collector."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from router.catalog import load_catalog
from router.control.build import build_routes, build_upstreams
from testing.servers import REPO


@pytest.fixture
def collector_saves_garbage() -> Iterator[None]:
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    yield
    gc.set_debug(0)
    gc.garbage.clear()


def test_an_old_config_goes_by_reference_counting(collector_saves_garbage: None) -> None:
    """router.heap freezes the config's objects out of the collector; that is only safe if a
    replaced config needs no collector to be freed, i.e. holds no reference cycle."""
    catalog = load_catalog(REPO / "config" / "router.yaml")
    routes = build_routes(catalog, build_upstreams(catalog.config))
    gc.collect()
    del catalog, routes
    gc.collect()
    ours = [obj for obj in gc.garbage if type(obj).__module__.startswith("router.")]
    assert ours == [], ours[:10]
