"""The console script: `bundle-router COMMAND ...` (also `python -m router`).

The admin commands (status, weights, deploy, promote, rollback, drill, reload) talk to a
running router over its admin socket and import only the standard library, so that a
rollback typed during an incident starts at once. The other commands import what they
need inside their own function.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from router import __version__

DEFAULT_CONFIG = Path("config/router.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bundle-router",
        description="Route agent traffic to pinned bundle versions by weight.",
    )
    parser.add_argument("--version", action="version", version=f"bundle-router {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy and its health endpoints")
    serve.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    serve.add_argument(
        "--fake-provider",
        metavar="HOST:PORT",
        nargs="?",
        const="127.0.0.1:9000",
        help="also run the fake provider in this process (default 127.0.0.1:9000), "
        "so the example config works with no keys and no network",
    )

    control = commands.add_parser(
        "control",
        help="lead a fleet of sidecars on Redis: the fleet's state, audit log and changes "
        "(config needs a fleet: block)",
    )
    control.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    publish = commands.add_parser(
        "publish",
        help="upload a bundle version to the fleet's Redis, so every sidecar can fetch it "
        "(deploy refuses a version that is not published)",
    )
    publish.add_argument("route")
    publish.add_argument("version")
    publish.add_argument("--config", type=Path, default=DEFAULT_CONFIG)

    fake = commands.add_parser("fake-provider", help="run the scripted local provider")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9000)
    fake.add_argument("--profile", type=Path, help="YAML or JSON behaviour per model snapshot")

    audit = commands.add_parser(
        "audit", help="print the audit trail from state_dir; --verify checks its hash chain"
    )
    audit.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    audit.add_argument("--route", help="only this route's records")
    audit.add_argument("-n", "--last", type=int, metavar="N", help="only the last N records")
    audit.add_argument("--json", action="store_true", help="one JSON record a line")
    audit.add_argument("--verify", action="store_true", help="check the chain; exit 1 if broken")
    audit.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    audit.add_argument(
        "--archive",
        action="store_true",
        help="move the log aside (kept as evidence) and start a new chain; run with the "
        "router stopped",
    )

    demo = commands.add_parser(
        "demo", help="a canary rollout, a regression and its rollback, on this machine alone"
    )
    demo.add_argument(
        "--no-regression", action="store_true", help="a healthy ramp through to promotion"
    )
    demo.add_argument(
        "--bake", type=float, default=3.0, help="seconds each step (and each wave) bakes"
    )
    demo.add_argument(
        "--fleet",
        action="store_true",
        help="a canary, then a rolling release across 20 sidecars in 4 regions, a regression "
        "in one region, the halt and the reverse-roll (needs redis-server)",
    )
    demo.add_argument(
        "--halt-only", action="store_true", help="with --fleet: halt, without the reverse-roll"
    )

    validate = commands.add_parser("validate", help="check the config and every bundle")
    validate.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    _admin_commands(commands)
    return parser


ADMIN_COMMANDS = (
    "status",
    "weights",
    "deploy",
    "promote",
    "rollback",
    "rollout",
    "drill",
    "reload",
)


def _admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, help: str) -> argparse.ArgumentParser:
        command = commands.add_parser(name, help=help)
        command.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
        command.add_argument(
            "--socket", type=Path, help="the admin socket (default: admin_socket in --config)"
        )
        command.add_argument("--actor", default="", help="a label for the audit log")
        command.add_argument("--json", action="store_true", help="print the answer as JSON")
        return command

    status = add("status", "every route at a glance: versions, weights, windows, guardrails")
    status.add_argument(
        "--fleet", action="store_true", help="every sidecar of the fleet: labels, epoch, lag"
    )
    weights = add("weights", "set a route's weights: weights ROUTE v1.4=90 v1.5=10")
    weights.add_argument("route")
    weights.add_argument("weights", nargs="+", metavar="VERSION=PERCENT")
    weights.add_argument("--reason", default="")
    deploy = add("deploy", "make a version the route's candidate, at weight 0")
    deploy.add_argument("route")
    deploy.add_argument("version")
    deploy.add_argument("--reason", default="")
    # argparse %-formats help strings: a percent sign is written %%.
    promote = add("promote", "make the candidate active at 100%%; the old active stays warm")
    promote.add_argument("route")
    promote.add_argument("--reason", default="")
    rollback = add("rollback", "drain a live candidate, or else go back to the last warm version")
    rollback.add_argument("route", nargs="?")
    rollback.add_argument("--reason", default="")
    rollback.add_argument("--to", metavar="VERSION", help="a version off the warm stack")
    rollback.add_argument("--force", action="store_true", help="needed with --to")
    rollback.add_argument(
        "--rolling",
        action="store_true",
        help="a fleet's rolling release: walk the flipped waves back one by one",
    )
    rollout = add(
        "rollout", "walk the candidate up the rollout plan: start|pause|resume|abort|status"
    )
    rollout.add_argument("action", choices=["start", "pause", "resume", "abort", "status"])
    rollout.add_argument("route")
    rollout.add_argument("--reason", default="")
    drill = add("drill", "a timed real rollback, then rolled forward")
    drill.add_argument("route")
    drill.add_argument("--force", action="store_true", help="needed on a prod router")
    reload = add("reload", "read config and bundles again; keep the old ones on any error")
    reload.add_argument("--reason", default="")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.halt_only and not args.fleet:
        parser.error("demo --halt-only is for the fleet's rolling release: add --fleet")
    if args.command in ADMIN_COMMANDS:
        return _admin(args)
    import logging

    from router.control.durable import DurabilityError, StateError
    from router.errors import ConfigError

    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "control":
            from router.server import run, serve

            return run(lambda: serve(args.config, controller=True))
        if args.command == "publish":
            from router.fleet.publish import publish_command

            return publish_command(args.config, args.route, args.version)
        if args.command == "fake-provider":
            return _fake_provider(args)
        if args.command == "validate":
            return _validate(args.config)
        if args.command == "audit":
            return _audit(args)
        if args.command == "demo":
            if args.fleet:
                from router.dev.fleet_demo import run_fleet_demo

                return run_fleet_demo(args.bake, not args.no_regression, args.halt_only)
            from router.dev.demo import run_demo

            return run_demo(args.bake, regression=not args.no_regression)
    except ConfigError as exc:
        print(
            f"bundle-router: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (StateError, DurabilityError) as exc:
        print(f"bundle-router: {exc}", file=sys.stderr)
        return 2
    return 1


def _serve(args: argparse.Namespace) -> int:
    from router.server import Extra, run, serve

    also: list[Extra] = []
    if args.fake_provider:  # HOST:PORT: the fake provider in the same process
        from router.dev.fake_provider import FakeProvider, load_profile

        also.append(("fake provider", FakeProvider(load_profile(None)).app(), args.fake_provider))
    return run(lambda: serve(args.config, also=also))


def _fake_provider(args: argparse.Namespace) -> int:
    from router.dev.fake_provider import FakeProvider, load_profile
    from router.server import run, serve_app

    app = FakeProvider(load_profile(args.profile)).app()
    return run(lambda: serve_app("fake provider", app, f"{args.host}:{args.port}"))


def _validate(config: Path) -> int:
    from router.catalog import load_catalog

    catalog = load_catalog(config)
    for warning in catalog.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for name, spec in catalog.routes.items():
        weights = spec.config.basis_points()
        print(f"route {name} ({spec.dialect}):")
        for version, bundle in sorted(spec.bundles.items()):
            role = (
                "active"
                if version == spec.config.active
                else "candidate"
                if version == spec.config.candidate
                else "available"
            )
            print(
                f"  {version:<10} {role:<10} {weights.get(version, 0) / 100:>6.2f}%  "
                f"{bundle.model}  digest {bundle.short_digest}  tools {len(bundle.tools)}"
            )
    print(f"{config}: OK")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from router.config import load_config
    from router.control.durable import AUDIT_FILE, archive, read_records, verify

    config = load_config(args.config)
    state_dir = config.state_dir
    path = state_dir / AUDIT_FILE
    if args.archive:
        if _serving(config.admin_socket):
            print(
                f"bundle-router audit --archive: a router is serving {config.admin_socket} and "
                f"writing to {path}; stop it first, then archive",
                file=sys.stderr,
            )
            return 2
        archived, log = archive(state_dir)
        log.close()
        print(
            f"archived {archived} and started a new chain in {path}"
            if archived
            else f"started a new chain in {path}"
        )
        return 0
    if args.verify:
        result = verify(path)
        if not result.ok:
            print(
                f"{path}: BROKEN at line {result.line}: {result.problem} "
                f"({result.records} good records before it)",
                file=sys.stderr,
            )
            return 1
        print(f"{path}: OK, {result.records} records, head {result.head[:16]}")
        return 0

    def wanted(record: dict[str, Any]) -> bool:
        return not args.route or record.get("route") == args.route

    records = [r for r in read_records(path) if wanted(r)]
    for record in records[-args.last :] if args.last else records:
        _print_record(record, args.json)
    if args.follow:
        seen = records[-1]["seq"] if records else 0
        try:
            while True:  # the log is append-only: poll for records after the last one seen
                time.sleep(0.5)
                for record in read_records(path):
                    if record["seq"] > seen and (
                        not args.route or record.get("route") == args.route
                    ):
                        _print_record(record, args.json)
                    seen = max(seen, record["seq"])
        except KeyboardInterrupt:
            return 0
    return 0


def _serving(socket_path: Path) -> bool:
    """Does a router answer on its admin socket?"""
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(socket_path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _print_record(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
        return
    print(
        f"{record['seq']:>5} {record['at']} {record.get('route') or '-':<16} "
        f"{record['action']:<14} by {record.get('actor', '?')}: {record.get('reason', '')}",
        flush=True,
    )


def _admin(args: argparse.Namespace) -> int:
    from router.admin.client import (
        AdminError,
        call,
        render_fleet,
        render_rollout,
        render_status,
        socket_path,
    )

    try:
        path = socket_path(args.config, args.socket)
        if args.command == "rollout" and args.action == "status":
            answer = call(path, "GET", "/status", actor=args.actor)
            route = answer["routes"].get(args.route)
            if route is None:
                raise AdminError(f"unknown route {args.route!r}")
            shown = render_rollout(args.route, route)
            print(
                json.dumps(route, indent=2) if args.json else shown, end="\n" if args.json else ""
            )
            return 0
        if args.command == "status":
            fleet = args.fleet
            answer = call(path, "GET", "/fleet" if fleet else "/status", actor=args.actor)
            shown = render_fleet(answer) if fleet else render_status(answer)
            print(json.dumps(answer, indent=2) if args.json else shown, end="")
            if args.json:
                print()
            return 0
        body = _admin_body(args)
        answer = call(path, "POST", f"/{args.command}", body, actor=args.actor)
    except AdminError as exc:
        print(f"bundle-router {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else _summary(args.command, answer))
    return 0


def _admin_body(args: argparse.Namespace) -> dict[str, object]:
    from router.admin.client import AdminError

    body: dict[str, object] = {"reason": getattr(args, "reason", "")}
    if getattr(args, "route", None):
        body["route"] = args.route
    if args.command == "weights":
        weights = {}
        for pair in args.weights:
            version, sep, percent = pair.partition("=")
            try:
                weights[version] = float(percent)
            except ValueError:
                raise AdminError(f"{pair!r} is not VERSION=PERCENT (e.g. v1.4=90)") from None
            if not sep or not version:
                raise AdminError(f"{pair!r} is not VERSION=PERCENT (e.g. v1.4=90)")
        body["weights"] = weights
    if args.command == "deploy":
        body["version"] = args.version
    if args.command == "rollback" and args.to:
        body.update(to=args.to, force=args.force)
    if args.command == "rollback" and args.rolling:
        body["rolling"] = True
    if args.command == "drill":
        body["force"] = args.force
    if args.command == "rollout":
        body["action"] = args.action
    return body


def _summary(command: str, answer: dict[str, Any]) -> str:
    """One line a person reads after a change."""
    if command == "drill":
        reached = (
            f"last of {answer['sidecars']} sidecars swapped"
            if "sidecars" in answer
            else "first request"
        )
        return (
            f"drill on {answer['route']}: rolled back to {answer['rolled_back_to']}; swap "
            f"{float(answer['command_to_swap_seconds']) * 1000:.1f} ms, durable "
            f"{float(answer['command_to_durable_seconds']) * 1000:.1f} ms, {reached} "
            f"{float(answer['command_to_first_request_seconds']) * 1000:.1f} ms; rolled forward"
        )
    if command == "reload":
        changes = {k: v for k, v in answer.items() if v and k != "notes"}
        notes = "".join(f"\n  note: {n}" for n in answer.get("notes") or [])
        return f"reloaded: {changes or 'no routes, versions or providers changed'}{notes}"
    after = answer.get("after") or {}
    weights = " ".join(f"{v}={p / 100:g}%" for v, p in after.get("weights", {}).items() if p)
    candidate = after.get("candidate")
    if candidate:
        candidate = f"{candidate} ({after.get('candidate_state')})"
    what = f"; {answer['what']}" if answer.get("what") else ""
    ramp = after.get("ramp")
    if ramp:
        what += f"; rollout {ramp['status']} at {ramp['percent']:g}%"
    recorded = (
        f"audit record {answer['seq']}"
        if answer.get("durable", True)
        else f"WARNING: {answer.get('warning')}; the router writes it as soon as it can "
        "(bundle-router status shows when)"
    )
    fleet = answer.get("fleet")
    if fleet:
        recorded += (
            f"; fleet epoch {fleet['epoch']}"
            if fleet["published"]
            else f"; NOT PUBLISHED to the fleet: {fleet['note']}; check bundle-router "
            "status --fleet"
        )
    return (
        f"{command} on {answer['route']}: active {after.get('active')}, candidate "
        f"{candidate or 'none'}, weights {weights}{what}\n"
        f"{recorded}; by {answer['actor']}: {answer['reason']}"
    )
