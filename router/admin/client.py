"""The CLI side of the admin socket: one HTTP request over a Unix socket, and the status
table. Standard library only, so that `bundle-router rollback` starts in a few tens of
milliseconds (nothing here imports aiohttp, pydantic or the router's own server code).
"""

from __future__ import annotations

import http.client
import json
import socket
import textwrap
from pathlib import Path
from typing import Any

TIMEOUT = 60.0  # a drill or reload may take a while; a rollback takes milliseconds


class AdminError(Exception):
    """The command did not happen; the message says why and what to do."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=TIMEOUT)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(str(self.path))
        self.sock = sock


def socket_path(config: Path, given: Path | None) -> Path:
    """--socket, else `admin_socket` from the config file (relative to its folder)."""
    if given is not None:
        return given
    from router.errors import ConfigError  # only when needed: --socket skips them
    from router.files import load_yaml

    try:
        raw = load_yaml(config, missing_fix="pass --config PATH, or --socket PATH to the socket")
    except ConfigError as exc:
        raise AdminError(str(exc)) from None
    raw = raw or {}
    path = Path(raw.get("admin_socket", "run/admin.sock"))
    return path if path.is_absolute() else config.parent / path


def call(
    path: Path, method: str, target: str, body: dict[str, Any] | None = None, actor: str = ""
) -> Any:
    """One request to the router's admin API; the decoded JSON answer."""
    connection = _UnixConnection(path)
    headers = {"Content-Type": "application/json"}
    if actor:
        headers["X-Actor"] = actor
    try:
        connection.request(
            method,
            target,
            body=json.dumps(body).encode() if body is not None else None,
            headers=headers,
        )
        response = connection.getresponse()
        data = response.read()
    except FileNotFoundError:
        raise AdminError(
            f"no admin socket at {path}: is the router running with this config? "
            "(pass --socket PATH if it listens elsewhere)"
        ) from None
    except PermissionError:
        raise AdminError(
            f"permission denied on {path}: the admin socket is for the router's own user and "
            "root; run the command as one of them"
        ) from None
    except ConnectionRefusedError:
        raise AdminError(
            f"nothing is listening on {path}: the router that made it has stopped"
        ) from None
    except TimeoutError:
        raise AdminError(f"the router did not answer within {TIMEOUT:g} s") from None
    finally:
        connection.close()
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        raise AdminError(f"the router answered HTTP {response.status} with no JSON") from None
    if response.status >= 400:
        error = answer.get("error", {}) if isinstance(answer, dict) else {}
        raise AdminError(f"the router refused: {error.get('message', f'HTTP {response.status}')}")
    return answer


def show_percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def show_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def show_money(value: float | None) -> str:
    return "-" if value is None else f"${value:.4f}"


def show_margin(verdict: dict[str, Any]) -> str:
    rule = verdict["rule"]
    if verdict.get("silent"):
        return f"{rule} silent (no such events yet)"
    if verdict["waiting"]:
        return f"{rule} waiting ({verdict['samples']}/{verdict['min_samples']})"
    observed, threshold, unit = verdict["observed"], verdict["threshold"], verdict["unit"]
    show = {"rate": show_percent, "seconds": show_seconds}.get(unit, lambda v: f"{v:.2f}x")
    state = "TRIPPED" if verdict["tripped"] else "ok"
    return f"{rule} {show(observed)} / {show(threshold)} {state}"


def _ramp_line(ramp: dict[str, Any]) -> str:
    """'rollout running: step 2/5 at 5%, baked 12s of 30s; waiting: ...'."""
    steps = ramp["steps"]
    if ramp.get("phase") == "waves":
        note = f"; {ramp['note']}" if ramp.get("note") else ""
        return f"rollout {ramp['status']}: the canary passed; the fleet flips in waves{note}"
    line = (
        f"rollout {ramp['status']}: step {ramp['step'] + 1}/{len(steps)} at {ramp['percent']:g}%"
        f" (steps {' -> '.join(f'{s:g}' for s in steps)})"
    )
    if ramp["status"] == "running":
        line += _baked(ramp)
    if ramp.get("note"):
        line += f"; {ramp['note']}"
    return line


def _baked(phase: dict[str, Any]) -> str:
    """A running step's or wave's bake, and what extends it."""
    text = f", baked {phase['baked']:.0f}s of {phase['bake']:.0f}s"
    if phase.get("waiting_for"):
        text += f"; bake extended, {phase['waiting_for']}"
    return text


def _waves_lines(waves: dict[str, Any]) -> list[str]:
    """The rolling phase: the wave, the bake, and one line per group."""
    where = f" ({waves['group']})" if waves.get("group") else ""
    line = f"waves {waves['status']}: wave {waves['wave']}/{waves['waves']}{where}"
    if waves["direction"] == "reverse":
        line += ", ROLLING BACK"
    if waves["status"] == "running":
        line += _baked(waves)
    if waves.get("halted_group"):
        line += f"; HALTED in {waves['halted_group']}"
    lines = [line]
    for group, g in waves["groups"].items():
        health = "healthy" if g["healthy"] else "BREACHED"
        margins = "; ".join(show_margin(v) for v in g["verdicts"] if not v.get("silent"))
        lines.append(
            f"  {group:<14} {g['flipped']}/{g['planned']} flipped  {health}"
            + (f"  {margins}" if margins else "")
        )
    return lines


def render_rollout(name: str, route: dict[str, Any]) -> str:
    """`rollout status ROUTE`: both phases of the plan, the blast radius."""
    lines = [f"{name}: active {route['active']}, candidate {route['candidate'] or 'none'}"]
    if route.get("rollout"):
        lines.append("  " + _ramp_line(route["rollout"]))
    else:
        lines.append("  no rollout started (bundle-router rollout start ROUTE)")
    if route.get("waves"):
        lines += ["  " + line for line in _waves_lines(route["waves"])]
    radius = route.get("blast_radius")
    if radius:
        shares = ", ".join(f"{v} {share * 100:.1f}%" for v, share in radius.items())
        lines.append(f"  blast radius (share of requests, last 60s): {shares}")
    if route.get("trip"):
        lines.append(f"  rolled back: {route['trip'].get('description')}")
    return "\n".join(lines) + "\n"


def _fleet_line(fleet: dict[str, Any]) -> str:
    """This process's place in its fleet, for the top of `status`."""
    if fleet["role"] == "controller":
        lead = "LEADING" if fleet["leading"] else f"standing by (leader: {fleet['leader']})"
        where = f"controller {fleet['id']}, {lead}"
    else:
        where = f"sidecar {fleet['instance']} ({fleet['region']}/{fleet['pool']})"
        if fleet.get("refused"):
            where += f"; REFUSED epoch {fleet['refused']['epoch']}: {fleet['refused']['reason']}"
        if fleet.get("lag_seconds"):
            where += f"; {fleet['lag_seconds']:.1f}s behind"
    redis = "connected" if fleet["connected"] else "REDIS NOT REACHABLE"
    missing = "; Redis holds no fleet state" if fleet.get("state_missing_in_redis") else ""
    return f"fleet {fleet['fleet']}: {where}; epoch {fleet['epoch']}; {redis}{missing}"


def render_fleet(view: dict[str, Any]) -> str:
    """`status --fleet`: one line per sidecar, the ones that need a look marked."""
    summary = ", ".join(f"{n} {k}" for k, n in view["summary"].items() if n)
    lines = [
        f"fleet {view['fleet']}: epoch {view['epoch']}, leader {view['leader'] or 'NONE'}; "
        f"{len(view['sidecars'])} sidecar(s): {summary or 'none yet'}",
        f"  {'instance':<22}{'region':<12}{'pool':<12}{'epoch':>7}{'lag':>8}{'beat':>8}  "
        "state     weights",
    ]
    for car in view["sidecars"]:
        weights = "; ".join(
            f"{name} " + " ".join(f"{v}={p / 100:g}%" for v, p in r["weights"].items() if p)
            for name, r in car["routes"].items()
        )
        mark = car["mark"] if car["mark"] == "ok" else car["mark"].upper()
        lines.append(
            f"  {car['instance']:<22}{car['region'] or '-':<12}{car['pool'] or '-':<12}"
            f"{car['epoch']:>7}{show_seconds(car['lag_seconds']):>8}"
            f"{show_seconds(car['heartbeat_age_seconds']):>8}  {mark:<9} {weights}"
        )
        if car.get("refused"):
            lines.append(
                f"      refused epoch {car['refused']['epoch']}: {car['refused']['reason']}"
            )
    return "\n".join(lines) + "\n"


def render_status(status: dict[str, Any]) -> str:
    """Every route as a block a person reads at a glance."""
    lines = []
    if status.get("fleet"):
        lines += [_fleet_line(status["fleet"]), ""]
    durability = status.get("durability") or {}
    if durability.get("degraded"):
        lines.append(f"DURABILITY DEGRADED since {durability['since']}: {durability['error']}")
        for change in durability["changes_not_durable"]:
            lines.append(
                f"  in force, not yet durable: {change['action']} on {change['route']} "
                f"({change['reason']})"
            )
        if durability["state_file_behind"]:
            lines.append("  the state file is behind the audit log (the next start replays it)")
        lines.append("  the router retries every second; do not restart it until this clears")
        lines.append("")
    for name, route in status["routes"].items():
        guard = "guarded" if route["guarded"] else "UNGUARDED"
        lines.append(f"{name}  ({route['dialect']}, {guard})")
        lines.append(
            f"  {'version':<10}{'role':<13}{'weight':>8}  {'req/60s':>8}{'errors':>8}"
            f"{'p95':>9}{'$/req':>10}  model"
        )
        for v in route["versions"]:
            w = v["window"]
            lines.append(
                f"  {v['version']:<10}{v['role']:<13}{v['weight_percent']:>7.2f}%  "
                f"{w['requests']:>8}{show_percent(w['error_rate']):>8}{show_seconds(w['p95_seconds']):>9}"
                f"{show_money(w['cost_per_request_usd']):>10}  {v['model']}"
            )
        blast = route.get("blast_radius") or {}
        if route.get("candidate") and blast:  # a canary: how much traffic it reaches now
            shares = ", ".join(f"{v} {show_percent(share)}" for v, share in blast.items())
            lines.append(f"  blast radius (share of the last 60s): {shares}")
        if route.get("rollout"):
            lines.append("  " + _ramp_line(route["rollout"]))
        if route.get("waves"):
            lines += ["  " + line for line in _waves_lines(route["waves"])]
        if route["trip"]:
            lines.append(
                f"  rolled back: {route['trip'].get('description')} at {route['trip']['at']}"
            )
        if route["guardrails"]:
            margins = "; ".join(show_margin(v) for v in route["guardrails"])
            lines += textwrap.wrap(
                margins, 100, initial_indent="  guardrails: ", subsequent_indent="    "
            )
        change = route["last_change"]
        if change:
            lines.append(
                f"  last change: {change['action']} by {change['actor']} at {change['at']}"
                f" ({change['reason']})"
            )
        drills = route["drills"]
        if drills["count"]:
            trend = f", {drills['trend']}" if drills["trend"] else ""
            lines.append(
                f"  drills: median {show_seconds(drills['median_seconds'])} over {drills['count']}"
                f", last {show_seconds(drills['last_seconds'])}{trend}"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
