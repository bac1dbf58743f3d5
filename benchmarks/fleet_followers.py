"""Many sidecars' follow code in one process, for benchmarks/fleet.py.

    python -m benchmarks.fleet_followers --config SIDECAR.yaml --count 200 --folder DIR

Each of the `count` followers is assembled the way `bundle-router serve` assembles a sidecar
(router/server.py), minus its HTTP listeners and admin socket: the catalog (loaded once,
then given its own `state_dir` and `instance` per follower), its own live routes, its own
control plane (change core, durable store, audit log and guardrail watcher) on its own state
folder, and `router.fleet.follower.Follower` with its own two Redis connections and marker
file. Each then follows the fleet as a sidecar does: XREAD on the event stream, the `read`
script, `effective`, the core's durable commit and swap, the marker save, the acknowledgement
and a heartbeat every second. The upstreams are built once and shared (no traffic is sent).

It prints `ready N` once every follower has started, and runs until SIGTERM or SIGINT.
The Redis URL comes from the environment variable the config's fleet block names.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from pathlib import Path

from router import heap
from router.catalog import Catalog, load_catalog
from router.control.build import build_routes, build_upstreams
from router.control.notify import Notifier
from router.control.plane import ControlPlane
from router.fleet.build import make_fleet, with_fetched_bundles
from router.fleet.follower import Follower
from router.proxy.forward import Upstream
from router.server import build_control, build_notifier, run, stop_on_signals

STARTING_AT_ONCE = 20  # followers started together; more only queue on the disk


@dataclasses.dataclass
class Simulated:
    notifier: Notifier
    control: ControlPlane
    follower: Follower


def instance_name(i: int) -> str:
    return f"sim-{i:04d}"


def as_follower(base: Catalog, i: int, folder: Path) -> Catalog:
    """The catalog as follower `i` sees it: its own state folder and instance label."""
    config = base.config
    assert config.fleet is not None, "the config has no fleet: block"
    fleet = config.fleet.model_copy(update={"instance": instance_name(i)})
    state_dir = folder / instance_name(i)
    config = config.model_copy(update={"state_dir": state_dir, "fleet": fleet})
    return with_fetched_bundles(dataclasses.replace(base, config=config))


async def start_one(
    base: Catalog, upstreams: dict[str, Upstream], i: int, folder: Path
) -> Simulated:
    catalog = as_follower(base, i, folder)
    routes = build_routes(catalog, upstreams)
    notifier = build_notifier(catalog.config)
    control, restored = build_control(catalog, routes, notifier, follows_fleet=True)
    follower = make_fleet("sidecar", catalog, routes, upstreams, control)
    assert isinstance(follower, Follower)
    await notifier.start()
    await control.start(restored)
    await follower.start()
    return Simulated(notifier, control, follower)


async def simulate(config: Path, count: int, folder: Path) -> int:
    heap.building()
    base = load_catalog(config)
    upstreams = build_upstreams(base.config)
    simulated: list[Simulated] = []
    try:
        for first in range(0, count, STARTING_AT_ONCE):
            batch = range(first, min(count, first + STARTING_AT_ONCE))
            simulated += await asyncio.gather(
                *(start_one(base, upstreams, i, folder) for i in batch)
            )
        heap.built()  # as `serve` does once it is built
        print(f"ready {len(simulated)}", flush=True)
        await stop_on_signals().wait()
    finally:
        for one in simulated:
            await one.follower.close()
            await one.control.close()
            await one.notifier.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--folder", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    sys.exit(run(lambda: simulate(args.config, args.count, args.folder)))


if __name__ == "__main__":
    main()
