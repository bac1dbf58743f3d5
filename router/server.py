"""Composition root: build the apps, bind the sites, run on uvloop, drain on a signal.

Two listeners: the proxy (`listen`) and the operator side (`metrics_listen`: /metrics,
/windows, /healthz, /readyz and the fleet view page, /ui). On SIGTERM or SIGINT the router
first reports unready, then stops accepting and gives in-flight requests and streams up to
DRAIN_TIMEOUT s to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web

from router import heap
from router.admin.api import Admin, AdminSocket, prepare_socket, unreachable
from router.admin.metrics import ConnectionCollector, FleetCollector, MetricsEndpoints
from router.admin.page import Page
from router.catalog import Catalog, load_catalog
from router.config import Limits, RouterConfig, split_address
from router.control.build import build_routes, build_settings, build_upstreams
from router.control.notify import Notifier
from router.control.plane import ControlPlane
from router.control.reload import Reloader
from router.control.restore import Restored, restore
from router.control.store import LocalStore, Store
from router.errors import ConfigError, Problem
from router.fleet.build import FleetPart, Role, make_fleet, with_fetched_bundles
from router.proxy import access_log
from router.proxy.access_log import AccessLog
from router.proxy.connection import ConnectionStats, ProxyRunner
from router.proxy.feedback import RecentRequests
from router.proxy.forward import Upstream
from router.proxy.handler import Proxy
from router.proxy.listener import ListenerSite
from router.proxy.live import LiveRoute

log = logging.getLogger("router")
Extra = tuple[str, web.Application, str]  # name, app, HOST:PORT
DRAIN_TIMEOUT = 30.0
FD_RESERVE = 256  # files, the metrics listener's clients, the admin socket, state files


class Health:
    """/healthz answers while the process runs; /readyz only while it takes traffic.

    Both say when durability is degraded (a change in force that the disk has not taken).
    Such a router still routes correctly, so it stays ready; but a restart would lose what
    is only in memory, so it is for alerts (`router_state_degraded`), not for probes that
    restart or drain it."""

    def __init__(self, store: Store, fleet: FleetPart | None = None) -> None:
        self.ready = False
        self.store = store
        self.fleet = fleet

    def _durability(self) -> dict[str, object]:
        # In a fleet, a sidecar that lost Redis serves its last-known-good and stays ready:
        # taking it out of rotation would turn a Redis outage into an agent outage.
        fleet = {"fleet": self.fleet.describe()} if self.fleet is not None else {}
        if not self.store.degraded:
            return {"durability": "ok", **fleet}
        return {
            "durability": "degraded",
            "durability_detail": self.store.durability(),
            **fleet,
        }

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self._durability()})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.json_response({"status": "ready", **self._durability()})
        return web.json_response({"status": "not ready", **self._durability()}, status=503)


def build_proxy_app(
    catalog: Catalog, routes: dict[str, LiveRoute], upstreams: dict[str, Upstream]
) -> web.Application:
    telemetry, limits = catalog.config.telemetry, catalog.config.limits
    recent = RecentRequests(telemetry.feedback_capacity, telemetry.feedback_ttl)
    proxy = Proxy(
        routes,
        limits.max_body_bytes,
        recent,
        max_in_flight=limits.max_concurrent_per_route,
        retry_after=limits.retry_after,
        body_timeout=limits.body_timeout,
        access=AccessLog(catalog.config.access_log),
    )
    app = web.Application(client_max_size=limits.max_body_bytes)
    proxy.add_routes(app)

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        writer = access_log.start() if proxy.access.enabled else None
        for upstream in upstreams.values():
            await upstream.start()
        yield
        for upstream in upstreams.values():
            await upstream.close()
        if writer is not None:
            writer.stop()  # writes the lines still queued

    app.cleanup_ctx.append(lifecycle)
    return app


def build_metrics_app(
    config: RouterConfig,
    health: Health,
    routes: dict[str, LiveRoute],
    control: ControlPlane,
    connections: list[ConnectionStats] | None = None,
    fleet: FleetPart | None = None,
) -> web.Application:
    """/metrics, /windows, /rollouts, the health checks and the fleet view page (/ui)."""
    app = web.Application()
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    endpoints = MetricsEndpoints(routes, control)
    endpoints.registry.register(ConnectionCollector(connections or []))
    if fleet is not None:
        endpoints.registry.register(FleetCollector(fleet))
    endpoints.add_routes(app)
    Page(config, routes, control, fleet).add_routes(app)
    return app


def build_notifier(config: RouterConfig) -> Notifier:
    notify = config.notify
    url = notify.webhook_url
    if notify.webhook_url_env:
        url = os.environ.get(notify.webhook_url_env) or url
        if not url:
            log.warning(
                "notify.webhook_url_env names %s, which is not set: changes are only logged",
                notify.webhook_url_env,
            )
    return Notifier(url, timeout=notify.timeout, attempts=notify.attempts)


def build_control(
    catalog: Catalog,
    routes: dict[str, LiveRoute],
    notifier: Notifier,
    *,
    follows_fleet: bool = False,
) -> tuple[ControlPlane, Restored]:
    """The control plane on live state restored from `state_dir` (raises StateError when
    that state cannot be trusted), configured, not yet started."""
    store = LocalStore(catalog.config.state_dir, notifier)
    restored = restore(catalog, store)
    for note in restored.notes:
        log.warning("%s", note)
    settings = build_settings(catalog)
    for name, spec in catalog.routes.items():
        if settings.guards[name] is None and spec.config.candidate:
            log.warning("route %s: the canary is unguarded (guardrails: off)", name)
    fleet = catalog.config.fleet
    split = fleet.local_floor_split if follows_fleet and fleet is not None else 1
    control = ControlPlane(
        routes, store, notifier, follows_fleet=follows_fleet, local_floor_split=split
    )
    control.configure(settings)
    return control, restored


async def _start(
    app: web.Application,
    address: str,
    limits: Limits | None = None,
    stats: ConnectionStats | None = None,
    *,
    capped: bool = False,
) -> web.AppRunner:
    """Serve `app` on `address`; `capped`: at most `limits.max_connections` connections."""
    limits = limits or Limits()
    runner = ProxyRunner(
        app,
        stats=stats or ConnectionStats(address),
        max_connections=limits.max_connections if capped else None,
        retry_after=limits.retry_after,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=DRAIN_TIMEOUT,
        keepalive_timeout=limits.keepalive_timeout,
        header_timeout=limits.header_timeout,
        send_timeout=limits.send_timeout,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=limits.max_headers,
    )
    await runner.setup()
    host, port = split_address(address)
    try:
        await ListenerSite(runner, host, port).start()
    except BaseException:  # taken, or a signal during start-up: the app's pools close again
        await runner.cleanup()
        raise
    return runner


def raise_open_file_limit(config: RouterConfig) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a soft 1024 is common and far too
    few for a proxy), and warn when the connection cap does not fit under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit over nr_open
            log.warning("open-file limit (RLIMIT_NOFILE) stays at %d: %s", soft, exc)
        else:
            log.info("open-file limit (RLIMIT_NOFILE) raised from %d to %d", soft, hard)
            soft = hard
    else:
        log.info("open-file limit (RLIMIT_NOFILE) is %d", soft)
    clients = config.limits.max_connections
    upstream = sum(provider.max_connections for provider in config.providers.values())
    needed = clients + upstream + FD_RESERVE
    if soft != resource.RLIM_INFINITY and needed > soft:
        log.warning(
            "limits.max_connections (%d) + provider pools (%d) + %d for the router itself "
            "need %d open files, over the open-file limit of %d: clients would meet "
            "'too many open files' before the connection cap. Raise the limit (ulimit -n, "
            "LimitNOFILE, the container's nofile) or lower limits.max_connections",
            clients,
            upstream,
            FD_RESERVE,
            needed,
            soft,
        )


async def _start_unix(admin: Admin, bound: AdminSocket) -> web.AppRunner:
    """The admin app on its socket, bound by `prepare_socket`; the socket file is removed
    on the way out if it is still the one made here."""
    for problem in unreachable(bound.path, admin.allowed):
        log.warning("%s", problem)
    app = admin.app()

    async def remove_socket(app: web.Application) -> None:
        bound.remove()

    app.on_cleanup.append(remove_socket)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    await web.SockSite(runner, bound.sock).start()
    return runner


async def serve(config_path: Path, *, also: Sequence[Extra] = (), controller: bool = False) -> int:
    """Run until SIGTERM/SIGINT. `also` are other apps to run in this process, such as the
    fake provider for trying the router with no keys and no network (`serve --fake-provider`).
    With a `fleet:` block this is a sidecar of the fleet, or with `controller` its controller
    (`bundle-router control`)."""
    heap.building()
    stop = stop_on_signals()  # from here on: a signal during start-up stops it cleanly too
    catalog = load_catalog(config_path)
    fleet_role: Role | None = None
    if catalog.config.fleet is not None:
        fleet_role = "controller" if controller else "sidecar"
    elif controller:
        raise ConfigError(
            [
                Problem(
                    str(config_path),
                    "fleet",
                    "bundle-router control leads a fleet, and this config has no fleet: block",
                    "add fleet: {name: NAME} (docs/fleet.md), or run bundle-router serve",
                )
            ]
        )
    if fleet_role == "sidecar":
        catalog = with_fetched_bundles(catalog)
    for warning in catalog.warnings:
        log.warning("%s", warning)
    # Whatever starts is stopped again in reverse order, on a signal or when a later part
    # fails to start: the fleet's loops and the upstream pools must not outlive a start-up
    # that failed (a sidecar whose port was taken hung there, its follow loop still running).
    async with contextlib.AsyncExitStack() as started:
        starting = asyncio.ensure_future(
            _start_all(config_path, catalog, fleet_role, also, started)
        )
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait([starting, signalled], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():  # e.g. a pod deleted while its sidecar waits for Redis
            log.info("a signal came during start-up: stopping what has started")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            log.info("stopped during start-up")
            return 0
        signalled.cancel()
        health = starting.result()  # a start-up that failed raises here: the stack unwinds
        await stop.wait()
        log.info("draining: unready, then finishing in-flight requests")
        health.ready = False
    log.info("stopped")
    return 0


async def _start_all(
    config_path: Path,
    catalog: Catalog,
    fleet_role: Role | None,
    also: Sequence[Extra],
    started: contextlib.AsyncExitStack,
) -> Health:
    """Start every part of the router, each registered in `started` to be stopped; the
    health the probes read, ready once the listeners are up."""
    # First: another router on this socket is refused before anything else is touched, and
    # the socket's folder, when missing, is made private before state_dir makes it public.
    admin_socket = prepare_socket(catalog.config)
    admin_runner: web.AppRunner | None = None

    def release_unserved_socket() -> None:
        """A start-up that failed before the admin app took the socket: close and remove it.
        Once served, the app's cleanup removes it first thing at shutdown; removing it again
        at the end could hit the socket of a router started meanwhile (a reused inode)."""
        if admin_runner is None:
            admin_socket.sock.close()
            admin_socket.remove()

    started.callback(release_unserved_socket)
    raise_open_file_limit(catalog.config)
    for name, app, address in also:
        await _listen(started, "the command line", f"the {name}'s address", app, address)
        log.info("%s on http://%s", name, address)
    upstreams = build_upstreams(catalog.config)
    config = catalog.config
    routes = build_routes(catalog, upstreams)
    notifier = build_notifier(config)
    control, restored = build_control(
        catalog, routes, notifier, follows_fleet=fleet_role == "sidecar"
    )
    fleet = make_fleet(fleet_role, catalog, routes, upstreams, control) if fleet_role else None
    health = Health(control.store, fleet)
    await notifier.start()
    started.push_async_callback(notifier.close)
    await control.start(restored)
    started.push_async_callback(control.close)
    if fleet is not None:
        started.push_async_callback(fleet.close)  # before start: it may fail half way
        await fleet.start()  # a sidecar with no last-known-good syncs first
    reloader = Reloader(config_path, catalog, routes, upstreams, control)
    started.push_async_callback(reloader.close)
    proxy_app = build_proxy_app(catalog, routes, upstreams)
    # Two listeners, two connection budgets: a proxy at its cap still answers /healthz. The
    # health listener starts first so that it stops last: while the proxy drains, probes
    # read "not ready" and Prometheus takes its last scrape.
    proxy_conns, metrics_conns = ConnectionStats("proxy"), ConnectionStats("metrics")
    metrics_app = build_metrics_app(
        config, health, routes, control, [proxy_conns, metrics_conns], fleet
    )
    await _listen(
        started,
        str(config_path),
        "metrics_listen",
        metrics_app,
        config.metrics_listen,
        config.limits,
        metrics_conns,
    )
    await _listen(
        started,
        str(config_path),
        "listen",
        proxy_app,
        config.listen,
        config.limits,
        proxy_conns,
        capped=True,
    )
    admin = Admin(config, routes, control, reloader, fleet)
    admin_runner = await _start_unix(admin, admin_socket)
    started.push_async_callback(admin_runner.cleanup)
    heap.built()
    health.ready = True
    log.info(
        "bundle-router serving %s on http://%s (health on http://%s, admin on %s)",
        ", ".join(catalog.routes),
        config.listen,
        config.metrics_listen,
        config.admin_socket,
    )
    return health


async def _listen(
    started: contextlib.AsyncExitStack,
    where: str,
    key: str,
    app: web.Application,
    address: str,
    limits: Limits | None = None,
    stats: ConnectionStats | None = None,
    *,
    capped: bool = False,
) -> None:
    """`_start`, with an address that cannot be bound told as a problem of `key` in `where`
    (the config file, or the command line), and the runner registered in `started`."""
    try:
        runner = await _start(app, address, limits, stats, capped=capped)
    except OSError as exc:
        raise ConfigError([_cannot_listen(where, key, address, exc)]) from None
    started.push_async_callback(runner.cleanup)


def _cannot_listen(where: str, key: str, address: str, exc: OSError) -> Problem:
    if exc.errno == errno.EADDRINUSE:
        return Problem(
            where,
            key,
            f"{address} is in use by another process",
            f"stop the process that listens there, or choose a free address for {key}",
        )
    return Problem(
        where,
        key,
        f"cannot listen on {address}: {exc.strerror or exc}",
        f"choose for {key} an address of this machine that this user may bind "
        "(ports under 1024 need privileges)",
    )


async def serve_app(name: str, app: web.Application, address: str) -> int:
    """Run one app alone until SIGTERM/SIGINT (`bundle-router fake-provider`)."""
    runner = await _start(app, address)
    print(f"{name} on http://{address}", flush=True)
    await stop_on_signals().wait()
    await runner.cleanup()
    return 0


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM or SIGINT, from now on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def run(main: Callable[[], Awaitable[int]]) -> int:
    """Run a coroutine on uvloop where it is available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(main())  # type: ignore[arg-type]
    if sys.version_info >= (3, 12):
        return uvloop.run(main())  # type: ignore[no-any-return]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())  # type: ignore[arg-type]
