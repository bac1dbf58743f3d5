"""The admin API: HTTP over a Unix socket, for `bundle-router status`, `rollback` and friends.

The socket is mode `admin_socket_mode` (0600) with group `admin_socket_group`, and every
connection's peer is identified with SO_PEERCRED: only uids on the allowlist (`admin_allow`;
by default the router's own uid and root) get an answer. The actor written to the audit log
is the peer's user name, plus the label the CLI sends (`--actor`). Every change goes
through `ChangeCore.change`.

    GET  /status                       every route at a glance (the CLI prints it as a table)
    GET  /routes                       live deploy state
    GET  /windows                      sliding windows
    GET  /audit?route=R&n=N&after=SEQ  the audit trail
    GET  /fleet                        fleet mode: every sidecar, its epoch and lag
    POST /weights   {route, weights: {version: percent}, reason}
    POST /deploy    {route, version, reason}
    POST /promote   {route, reason}
    POST /rollback  {route?, reason, to?, force?}
    POST /drill     {route, force?}
    POST /rollout   {route, action: start|pause|resume|abort, reason}
    POST /reload    {reason}
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from redis.exceptions import RedisError

from router.admin import views
from router.config import RouterConfig, split_address
from router.control.durable import DurabilityError, StateError, utc_now
from router.control.moves import RouteState, promote, reverse_waves, rollback, set_weights
from router.control.plane import ControlPlane
from router.control.reload import Reloader
from router.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    NotFound,
    Problem,
    Refused,
    RouterError,
    StateNotDurable,
    Unavailable,
    error_response,
)
from router.fleet.build import FleetPart
from router.fleet.controller import Controller
from router.fleet.follower import Follower
from router.fleet.status import fleet_view
from router.proxy.live import LiveRoute

log = logging.getLogger("router.admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PEERCRED = struct.Struct("3i")  # pid, uid, gid


def allowed_uids(config: RouterConfig) -> set[int]:
    if not config.admin_allow:
        return {os.getuid(), 0}
    uids = set()
    for entry in config.admin_allow:
        if isinstance(entry, int):
            uids.add(entry)
            continue
        try:
            uids.add(pwd.getpwnam(entry).pw_uid)
        except KeyError:
            log.warning("admin_allow: no user named %r on this machine; ignored", entry)
    return uids


def peer_uid(request: web.Request) -> int | None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return None
    _, uid, _ = PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    )
    return int(uid)


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def socket_gid(config: RouterConfig) -> int | None:
    """The gid `admin_socket_group` names (a group name or a gid), or None."""
    group = config.admin_socket_group
    if group is None or isinstance(group, int):
        return group
    if group.isdigit():  # a gid written as a string
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise _socket_problem(
            config,
            "admin_socket_group",
            f"there is no group named {group!r} on this machine",
            "create the group, or name an existing group (or its gid)",
        ) from None


def prepare_socket(config: RouterConfig) -> AdminSocket:
    """Bind the admin socket at `admin_socket`, with `admin_socket_mode` and
    `admin_socket_group`, and return it (not yet listening).

    Only what the router made is changed: a missing folder is created (0700, plus search
    permission for the classes the socket mode lets in); an existing folder is left as it is.
    A socket this uid left behind (a router that did not stop cleanly) is replaced; any other
    file at the path is refused. Refuses when another router is serving the socket."""
    path, mode, gid = config.admin_socket, config.admin_socket_mode, socket_gid(config)
    folder = path.parent
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        pass  # not ours: its mode and owner stay as they are
    else:
        # Search (x) on the folder for the classes that may use the socket; never listing.
        os.chmod(folder, 0o700 | (0o010 if mode & 0o060 else 0) | (0o001 if mode & 0o006 else 0))
        if gid is not None:
            _give_group(config, folder, gid)
    _clear_stale(config)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # the socket is born 0600: no moment with a wider mode
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(umask)
    try:
        if gid is not None:
            _give_group(config, path, gid)
        os.chmod(path, mode)  # before listen(): nobody can connect until this is set
    except BaseException:
        sock.close()
        path.unlink()  # made here a moment ago
        raise
    made = os.lstat(path)
    return AdminSocket(sock, path, (made.st_dev, made.st_ino))


class AdminSocket:
    """The bound admin socket, and the file it made, which `remove` deletes only while
    it is still that same file."""

    def __init__(self, sock: socket.socket, path: Path, identity: tuple[int, int]) -> None:
        self.sock = sock
        self.path = path
        self.identity = identity

    def remove(self) -> None:
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) == self.identity:
            self.path.unlink()


def _clear_stale(config: RouterConfig) -> None:
    path = config.admin_socket
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        kind = _kind(found.st_mode)
        raise _socket_problem(
            config,
            "admin_socket",
            f"{path} is a {kind}, not a socket; the router does not replace it",
            "point admin_socket at a path of its own (the default is admin_socket: "
            f"run/admin.sock, beside the config), or move the {kind} away",
        )
    if found.st_uid != os.geteuid():
        raise _socket_problem(
            config,
            "admin_socket",
            f"{path} is a socket owned by uid {found.st_uid}, not by this router "
            f"(uid {os.geteuid()}); the router replaces only a socket of its own",
            "point admin_socket at a path of its own, or remove that socket if nothing uses it",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a router of this uid that did not stop cleanly
    else:
        raise StateError(
            f"another router is serving the admin socket {path}; stop it, or give this "
            "one its own admin_socket (and state_dir)"
        )
    finally:
        probe.close()


def _give_group(config: RouterConfig, path: Path, gid: int) -> None:
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        raise _socket_problem(
            config,
            "admin_socket_group",
            f"the router (uid {os.geteuid()}) may not give {path} to group "
            f"{config.admin_socket_group} (gid {gid})",
            "run the router as a member of that group, or name a group it belongs to",
        ) from None


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "regular file"
    return "special file"


def _socket_problem(config: RouterConfig, key: str, message: str, fix: str) -> ConfigError:
    return ConfigError([Problem(str(config.source), key, message, fix)])


def unreachable(path: Path, uids: set[int]) -> list[str]:
    """Why each of `uids` (root and the router's own uid aside) could not connect to the
    socket at `path`: the first folder it may not search, or the socket it may not write."""
    path = path.absolute()
    found = []
    for uid in sorted(uids - {0, os.geteuid()}):
        gids: set[int] = set()
        with contextlib.suppress(KeyError):
            user = pwd.getpwuid(uid)
            gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
        for step in [*reversed(path.parents), path]:
            try:
                st = os.stat(step)
            except OSError:
                break
            need = 0o2 if step == path else 0o1  # write on the socket, search on a folder
            shift = 6 if st.st_uid == uid else 3 if st.st_gid in gids else 0
            if not (st.st_mode >> shift) & need:
                what = "write to the socket" if step == path else "search the folder"
                who = user_name(uid)
                who = who if who == f"uid {uid}" else f"{who} (uid {uid})"
                found.append(
                    f"admin_allow names {who}, who cannot reach the "
                    f"admin socket {path}: they may not {what} {step} (mode "
                    f"{stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}, group gid "
                    f"{st.st_gid}); give them a group with admin_socket_group and "
                    "admin_socket_mode: '0660', or drop them from admin_allow"
                )
                break
    return found


class Admin:
    def __init__(
        self,
        config: RouterConfig,
        routes: Mapping[str, LiveRoute],
        control: ControlPlane,
        reloader: Reloader,
        fleet: FleetPart | None = None,
    ) -> None:
        self.config = config
        self.fleet = fleet
        self.routes = routes
        self.control = control
        self.core = control.core
        self.reloader = reloader
        self.allowed = allowed_uids(config)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._peer_check, self._refusals])
        app.router.add_get("/status", self.status)
        app.router.add_get("/routes", self.route_states)
        app.router.add_get("/windows", self.windows)
        app.router.add_get("/audit", self.audit)
        app.router.add_get("/fleet", self.fleet_status)
        app.router.add_post("/weights", self.weights)
        app.router.add_post("/deploy", self.deploy)
        app.router.add_post("/promote", self.promote)
        app.router.add_post("/rollback", self.rollback)
        app.router.add_post("/drill", self.drill)
        app.router.add_post("/rollout", self.rollout)
        app.router.add_post("/reload", self.reload)
        return app

    @web.middleware
    async def _peer_check(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        uid = peer_uid(request)
        if uid is None or uid not in self.allowed:
            who = "an unknown peer" if uid is None else f"{user_name(uid)} (uid {uid})"
            log.warning("admin: refused %s %s from %s", request.method, request.path, who)
            forbidden = Forbidden(
                f"{who} may not use this router's admin socket; run as the router's user or "
                "root, or add the user to admin_allow in the config",
            )
            return error_response(forbidden, "admin")
        label = request.headers.get("X-Actor", "").strip()
        name = user_name(uid)
        request["actor"] = f"{name} ({label})" if label and label != name else name
        return await handler(request)

    @web.middleware
    async def _refusals(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer is JSON the CLI can print, whatever went wrong."""
        try:
            return await handler(request)
        except RouterError as exc:
            return error_response(exc, "admin")
        except DurabilityError as exc:
            error: RouterError = StateNotDurable(
                f"{exc}. Nothing was changed: a change is made only once it is durable "
                "(a rollback is the exception: it takes effect at once and is written as "
                "soon as the disk takes it)",
            )
        except web.HTTPException as exc:  # aiohttp's own 404/405/413: JSON too
            error = RouterError(f"{request.method} {request.path}: {exc.reason}", code="http_error")
            error.status = exc.status
        except Exception as exc:
            log.exception("admin: %s %s failed", request.method, request.path)
            error = RouterError(
                f"{request.method} {request.path} failed inside the router "
                f"({type(exc).__name__}); the router log has the traceback",
                code="internal_error",
            )
        return error_response(error, "admin")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError:
            raise BadRequest("the body is not JSON", code="invalid_json") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object", code="invalid_json")
        return body

    def _route(self, body: Mapping[str, Any], *, optional: bool = False) -> str:
        name = body.get("route")
        if not name and optional and len(self.core.states) == 1:
            return next(iter(self.core.states))
        if not name:
            raise BadRequest(f"name the route: {', '.join(self.core.states)}", code="no_route")
        if name not in self.core.states:
            raise NotFound(
                f"unknown route {name!r}; routes: {', '.join(self.core.states)}",
                code="unknown_route",
            )
        return str(name)

    @staticmethod
    def _reason(body: Mapping[str, Any], default: str) -> str:
        return str(body.get("reason") or default)

    # -- reading --------------------------------------------------------------------------

    async def route_states(self, request: web.Request) -> web.Response:
        return _json(self.control.describe())

    async def windows(self, request: web.Request) -> web.Response:
        return _json(
            {
                name: {v: t.stats.window().as_dict() for v, t in route.targets.items()}
                for name, route in self.routes.items()
            }
        )

    async def audit(self, request: web.Request) -> web.Response:
        route = request.query.get("route")
        after = int(request.query.get("after", "0") or 0)
        n = int(request.query.get("n", "0") or 0)
        records = [
            r
            for r in self.control.store.records()
            if r["seq"] > after and (not route or r.get("route") == route)
        ]
        return _json(records[-n:] if n else records)

    async def status(self, request: web.Request) -> web.Response:
        last = views.last_records(self.control.store.records())
        watcher = self.control.watcher
        routes = {}
        for name, state in self.core.states.items():
            route = self.routes[name]
            verdicts = watcher.verdicts(name) or []
            versions = []
            for version in views.ordered(state, route):
                window = route.targets[version].stats.window()
                versions.append(
                    {
                        **views.version_row(state, route, version),
                        "window": {
                            "seconds": window.seconds,
                            "requests": window.requests,
                            "error_rate": window.error_rate,
                            "p95_seconds": window.p95_seconds,
                            "cost_per_request_usd": window.cost_per_request,
                        },
                    }
                )
            drills = views.drills(state)
            del drills["history"]  # status shows the summary; the page draws the history
            routes[name] = {
                "dialect": route.dialect.name,
                "guarded": watcher.guarded(name),
                "active": state.active,
                "candidate": state.candidate,
                "candidate_state": state.candidate_state,
                "trip": dict(state.trip) if state.trip else None,
                "warm": [w.version for w in state.warm],
                "versions": versions,
                "blast_radius": route.blast_radius(),
                "guardrails": [v.as_dict() for v in verdicts],
                "last_change": last.get(name),
                "rollout": views.rollout(self.control, name),
                "waves": views.waves(self.fleet, name),
                "drills": drills,
            }
        return _json(
            {
                "routes": routes,
                "environment": self.config.environment,
                "durability": self.control.store.durability(),
                **({"fleet": self.fleet.describe()} if self.fleet is not None else {}),
            }
        )

    async def fleet_status(self, request: web.Request) -> web.Response:
        if self.fleet is None:
            raise NotFound(
                "this router is not in a fleet (no fleet: block in its config)", code="no_fleet"
            )
        try:
            view = await fleet_view(self.fleet.redis, self.fleet.keys, self.fleet.fleet.heartbeat)
        except RedisError as exc:
            raise Unavailable(
                f"Redis is not reachable ({type(exc).__name__}), so the fleet cannot be "
                "listed; this process's own view is in bundle-router status",
                code="redis_unreachable",
            ) from None
        return _json({**view, "this": self.fleet.describe()})

    async def _changed(self, answer: dict[str, Any]) -> web.Response:
        """A change's answer; on the controller, once the fleet's snapshot is published."""
        if isinstance(self.fleet, Controller):
            answer = {**answer, "fleet": await self.fleet.published()}
        return _json(answer)

    # -- changing -------------------------------------------------------------------------

    async def weights(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = self._route(body)
        given = body.get("weights")
        if not isinstance(given, dict) or not given:
            raise BadRequest(
                "give weights as VERSION=PERCENT, e.g. v1.4=90 v1.5=10",
                code="no_weights",
            )
        known = self.routes[name].targets
        points = {}
        for version, percent in given.items():
            if version not in known:
                raise BadRequest(
                    f"route {name} has no version {version!r}; its versions are "
                    f"{', '.join(known)} (deploy a new one first)",
                    code="unknown_version",
                )
            if not isinstance(percent, int | float) or not 0 <= percent <= 100:
                raise BadRequest(
                    f"weight of {version} must be a percent from 0 to 100, not {percent!r}",
                    code="bad_weight",
                )
            points[str(version)] = round(float(percent) * 100)
        record = await self.core.change(
            name,
            lambda state: set_weights(state, points),
            actor=request["actor"],
            action="weights",
            reason=self._reason(body, "weights set by hand"),
        )
        return await self._changed(record)

    async def deploy(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name, version = self._route(body), body.get("version")
        if not isinstance(version, str) or not version:
            raise BadRequest("name the version to deploy", code="no_version")
        record = await self.reloader.deploy(
            name, version, actor=request["actor"], reason=self._reason(body, f"deploy {version}")
        )
        return await self._changed(record)

    async def promote(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name = self._route(body)
        now = utc_now()
        record = await self.core.change(
            name,
            lambda state: promote(state, now),
            actor=request["actor"],
            action="promote",
            reason=self._reason(body, "promoted by hand"),
        )
        return await self._changed(record)

    async def rollback(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await self._body(request)
        name = self._route(body, optional=True)
        to, force, now = body.get("to"), bool(body.get("force")), utc_now()
        if to is not None and to not in self.routes[name].targets:
            raise BadRequest(f"route {name} has no version {to!r}", code="unknown_version")
        if body.get("rolling"):
            return await self._rollback_rolling(request, name, to, body)
        done: dict[str, str] = {}

        def move(state: RouteState) -> RouteState:
            if isinstance(self.fleet, Follower) and not state.canary_live:
                # On a sidecar only a drain is taken (a trip by hand, for the whole fleet);
                # a trip landed since the gate let this through: nothing is left to do.
                raise Refused(
                    f"route {name} has no live canary on this sidecar any more (drained "
                    "meanwhile); a sidecar rolls back only a live canary",
                    code="fleet_follower",
                )
            after, done["what"] = rollback(state, now, to=to, force=force)
            return after

        record = await self.core.change(
            name,
            move,
            actor=request["actor"],
            action="rollback",
            reason=self._reason(body, "rolled back by hand"),
            details={"to": to} if to is not None else None,
            decided=started,
        )
        timing = self.core.last_change(name)
        return await self._changed({**record, "what": done["what"], "timing": timing})

    async def _rollback_rolling(
        self, request: web.Request, name: str, to: Any, body: Mapping[str, Any]
    ) -> web.Response:
        """`rollback --rolling`: walk a rolling release back wave by wave (the controller's
        rolling releases do the walking, with the plan's reverse bake)."""
        if to is not None:
            raise BadRequest(
                "rollback --rolling walks the flipped waves back to the version they left; "
                "it takes no --to",
                code="rolling_with_to",
            )
        if not isinstance(self.fleet, Controller):
            raise BadRequest(
                "rollback --rolling walks a fleet's rolling release back, wave by wave; run "
                "it on the fleet's controller (--socket CONTROLLER_SOCKET). Here, "
                "`bundle-router rollback ROUTE` rolls back at once",
                code="not_a_fleet_controller",
            )
        record = await self.core.change(
            name,
            reverse_waves,
            actor=request["actor"],
            action="rollback_rolling",
            reason=self._reason(body, "rolled back wave by wave by hand"),
        )
        state = self.core.states[name]
        waves = state.ramp.waves if state.ramp else None
        what = f"walking {len(waves.flipped) if waves else 0} flipped instance(s) back"
        return await self._changed({**record, "what": what})

    async def drill(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = await self._body(request)
        name = self._route(body)
        if self.config.environment == "prod" and not body.get("force"):
            raise BadRequest(
                "a drill rolls back live traffic for a moment; this router runs with "
                "environment: prod, so add --force if you mean it",
                code="force_needed",
            )
        if isinstance(self.fleet, Controller):
            # A fleet's drill is timed to the last sidecar's swap, not a request here.
            fleet, reached = self.fleet, {}

            async def probe() -> str:
                version, reached["sidecars"] = await fleet.everywhere(name)
                return version

            result = await self.control.drills.drill(
                name, probe, actor=request["actor"], started=started
            )
            return _json({**result, "timed_to": "last sidecar's swap", **reached})
        result = await self.control.drills.drill(
            name, lambda: self._probe(name), actor=request["actor"], started=started
        )
        return _json({**result, "timed_to": "first request"})

    async def _probe(self, name: str) -> str:
        """One real request through the proxy listener; the version that served it."""
        route = self.routes[name]
        host, port = split_address(self.config.listen)
        host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        content = "bundle-router drill probe: answer with one word"
        body: dict[str, Any] = {
            "model": name,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": content}],
        }
        headers = {"X-Route": name}
        key = f"drill-{time.time_ns()}"
        if route.session_header:
            headers[route.session_header] = key
        elif route.session_field:
            *parents, last = route.session_field
            node = body
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = key
        url = f"http://{host}:{port}{route.dialect.path}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(url, json=body, headers=headers) as answer,
        ):
            await answer.read()
            return answer.headers.get("X-Bundle-Version", f"none (HTTP {answer.status})")

    async def rollout(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        name, action = self._route(body), body.get("action")
        if action not in ("start", "pause", "resume", "abort"):
            raise BadRequest(
                "say what to do with the rollout: start, pause, resume or abort",
                code="bad_action",
            )
        record = await self.control.rollouts.command(
            name, action, actor=request["actor"], reason=self._reason(body, f"rollout {action}")
        )
        return await self._changed(record)

    async def reload(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        summary = await self.reloader.reload(
            actor=request["actor"], reason=self._reason(body, "reload")
        )
        return _json(summary)
