"""The fleet view page, on the metrics listener: read-only, the same exposure as /metrics.

    GET /                      redirects to /ui
    GET /ui                    the page (router/admin/ui/static/index.html)
    GET /ui/static/FILE        its scripts, styles and the vendored chart library
    GET /ui/state              everything the page shows but the time series, as JSON
    GET /ui/series?route=NAME  each version's time series over the last hour, and the marks
    GET /ui/events             server-sent events: `change` whenever the served state
                               changes, `ping` when quiet (router.admin.events)

It takes no action: changes stay on the admin socket. Every answer under /ui carries a
strict Content-Security-Policy (no inline script or style anywhere) and `nosniff`. Nothing
secret is in the data: no provider key, Redis URL or webhook URL is ever read here, and of a
bundle only its version, digest, model and metadata are shown (never its prompt or tools).

The controller serves the fleet (its grid is every sidecar; its series are the fleet's pooled
counters); a sidecar, or a router outside a fleet, serves itself as a fleet of one.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from router.admin import views
from router.admin.events import Changes
from router.admin.grid import Grid, signature
from router.admin.series import HOUR, SeriesRecorder
from router.admin.trail import AuditTrail
from router.background import Background
from router.config import RouterConfig
from router.control.durable import AUDIT_FILE, utc_now
from router.control.moves import ROLLED_BACK, RouteState
from router.control.plane import ControlPlane
from router.errors import BadRequest, NotFound, RouterError, error_response
from router.fleet.build import FleetPart
from router.fleet.controller import Controller
from router.fleet.follower import Follower
from router.pacing import Pacer
from router.proxy.live import LiveRoute

STATIC = Path(__file__).resolve().parent / "ui" / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
# Each part of a static path: no dot files, so no "..", and nothing but these characters.
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
AUDIT_SHOWN = 50
WATCH_SECONDS = 1.0  # how often the process's own status is compared while a page listens
ROLLOUT_KEYS = (
    "phase",
    "status",
    "step",
    "steps",
    "percent",
    "baked",
    "bake",
    "waiting_for",
    "note",
)


def _json(data: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _text(value: Any) -> str:
    """Metadata as the page shows it: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else orjson.dumps(value, default=str).decode()


def _is_page(path: str) -> bool:
    return path in ("/", "/ui") or path.startswith("/ui/")


async def _page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of the page, errors included, carries the CSP and nosniff."""
    if _is_page(request.path):
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"


class Page:
    def __init__(
        self,
        config: RouterConfig,
        routes: Mapping[str, LiveRoute],
        control: ControlPlane,
        fleet: FleetPart | None = None,
        static: Path = STATIC,
    ) -> None:
        self.routes = routes
        self.control = control
        self.fleet = fleet
        self.static = static
        self.hostname = socket.gethostname()
        self.changes = Changes()
        self.series = SeriesRecorder(routes, config.telemetry.series_step)
        self.trail = AuditTrail(config.state_dir / AUDIT_FILE)
        self.grid = Grid(
            routes, control, fleet, self.changes.signal, lambda: bool(self.changes.streams)
        )
        self.background = Background()
        # The core calls these under its change lock: `signal` only numbers the change and
        # queues it for each open stream.
        control.core.on_change(lambda route, before, after: self.changes.signal())
        control.core.on_record(lambda record: self.changes.signal())

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.root)
        app.router.add_get("/ui", self.index)
        app.router.add_get("/ui/static/{name:.+}", self.static_file)  # vendor/uplot/ too
        app.router.add_get("/ui/state", self.state)
        app.router.add_get("/ui/series", self.series_of)
        app.router.add_get("/ui/events", self.changes.handle)
        app.on_response_prepare.append(_page_headers)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._end_streams)
        app.on_cleanup.append(self._stop)

    # -- lifecycle ----------------------------------------------------------------------------

    async def _start(self, app: web.Application) -> None:
        self.background.keep_running(self.series.run, "page-series")
        self.background.keep_running(self._watch_process, "page-process")
        if self.grid.polls:
            self.background.keep_running(self.grid.watch, "page-grid")
        self.background.start(self.trail.refresh(), "page-audit")  # the first, long read

    async def _watch_process(self) -> None:
        """Once a second while a page listens, tell of what changes with no change record:
        the disk taking back what it refused, the lead moving, Redis lost or back, this
        sidecar refusing a snapshot or falling behind."""
        last: Hashable = None
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if not self.changes.streams:
                last = None  # a page that opens is sent the state on connect
                continue
            now = self._process_signature()
            if last is not None and now != last:
                self.changes.signal()
            last = now

    def _process_signature(self) -> Hashable:
        durability = orjson.dumps(self.control.store.durability(), option=orjson.OPT_SORT_KEYS)
        process = tuple(sorted(self._process().items()))
        own = None if self.grid.polls else signature([self.grid.own_cell()])
        return durability, process, own

    async def _end_streams(self, app: web.Application) -> None:
        self.changes.close()

    async def _stop(self, app: web.Application) -> None:
        await self.background.stop()
        await self.trail.close()

    # -- the page -----------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/ui")

    async def index(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def static_file(self, request: web.Request) -> web.StreamResponse:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.StreamResponse:
        path = self.static / name
        kind = TYPES.get(path.suffix)
        parts = name.split("/")
        safe = len(parts) <= 3 and all(FILE_NAME.fullmatch(part) for part in parts)
        if not safe or kind is None or not path.is_file():
            return self._error(NotFound(f"the page has no file {name!r}", code="not_found"))
        return web.FileResponse(path, headers={"Content-Type": kind, "Cache-Control": "no-cache"})

    @staticmethod
    def _error(exc: RouterError) -> web.Response:
        return error_response(exc, "admin")

    # -- the data -----------------------------------------------------------------------------

    async def state(self, request: web.Request) -> web.StreamResponse:
        response = _json(await self.build_state())
        response.enable_compression()  # a grid of a thousand instances compresses ~10x
        return response

    async def series_of(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("route", "")
        if not name:
            return self._error(
                BadRequest(
                    f"name the route: /ui/series?route=NAME ({', '.join(self.routes)})",
                    code="no_route",
                )
            )
        if name not in self.routes:
            return self._error(
                NotFound(
                    f"unknown route {name!r}; routes: {', '.join(self.routes)}",
                    code="unknown_route",
                )
            )
        await self.trail.refresh()
        return _json(
            {
                "route": name,
                "step_seconds": self.series.describe_step(),
                "versions": self.series.series(name),
                "marks": self.trail.marks(name, time.time() - HOUR),
            }
        )

    async def build_state(self) -> dict[str, Any]:
        await self.trail.refresh()
        chain = await self.trail.chain()
        grid = await self.grid.cells()
        routes = {}
        pacer = Pacer()
        for name, state in list(self.control.core.states.items()):
            route = self.routes.get(name)
            if route is not None:
                routes[name] = self._route(name, state, route)
            await pacer.pause()
        return {
            "generated_at": utc_now(),
            "process": self._process(),
            "routes": routes,
            "grid": grid,
            "audit": {"records": self.trail.last(AUDIT_SHOWN), "chain": chain},
            # As in `status`: changes in force that the disk has not taken yet.
            "durability": self.control.store.durability(),
        }

    def _process(self) -> dict[str, Any]:
        fleet = self.fleet
        if isinstance(fleet, Controller):
            seen = fleet.describe()
            return {
                "role": "controller",
                "instance": seen["id"],
                "fleet": seen["fleet"],
                "epoch": seen["epoch"],
                "leading": seen["leading"],
                # Without Redis the grid is the last one read: the banner says so.
                "redis_connected": seen["connected"],
            }
        if isinstance(fleet, Follower):
            return {
                "role": "sidecar",
                "instance": fleet.instance,
                "fleet": fleet.fleet.name,
                "epoch": fleet.applied,
                "leading": None,
                "redis_connected": fleet.connected,
            }
        return {
            "role": "router",
            "instance": self.hostname,
            "fleet": None,
            "epoch": None,
            "leading": None,
        }

    def _route(self, name: str, state: RouteState, route: LiveRoute) -> dict[str, Any]:
        control = self.control
        ramp = views.rollout(control, name)
        waves = views.waves(self.fleet, name)
        drills = views.drills(state)
        return {
            "stack": [self._version(name, state, route, v) for v in views.stack(state, route)],
            "rollout": {key: ramp.get(key) for key in ROLLOUT_KEYS} if ramp else None,
            "waves": waves,
            "next_step": views.next_step(state, control.rollouts.plan(name), ramp, waves),
            "blast_radius": route.blast_radius(),
            "guardrails": [v.as_dict() for v in control.watcher.verdicts(name) or []],
            "drills": {key: drills[key] for key in ("history", "median_seconds", "trend")},
        }

    def _version(
        self, name: str, state: RouteState, route: LiveRoute, version: str
    ) -> dict[str, Any]:
        bundle = route.targets[version].bundle
        return {
            **views.version_row(state, route, version),
            "metadata": {str(key): _text(value) for key, value in bundle.metadata.items()},
            "live_since": self.trail.live_since.get((name, version)),
            "trip": self._trip(name, state, version),
        }

    def _trip(self, name: str, state: RouteState, version: str) -> dict[str, Any] | None:
        """Why a rolled-back version was rolled back: the candidate's trip, or the record
        that rolled a version back from active."""
        if state.role(version) != ROLLED_BACK:
            return None
        if version == state.candidate and state.trip:
            return {key: state.trip.get(key) for key in ("rule", "description", "at")}
        return self.trail.trips.get((name, version))
