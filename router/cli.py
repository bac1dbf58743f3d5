"""The console script: `bundle-router COMMAND ...` (also `python -m router`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from router import __version__
from router.errors import ConfigError
from router.state import StateError

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
    audit.add_argument(
        "--archive",
        action="store_true",
        help="move the log aside (kept as evidence) and start a new chain; run with the "
        "router stopped",
    )

    validate = commands.add_parser("validate", help="check the config and every bundle")
    validate.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "fake-provider":
            return _fake_provider(args)
        if args.command == "validate":
            return _validate(args.config)
        if args.command == "audit":
            return _audit(args)
    except ConfigError as exc:
        print(
            f"bundle-router: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except StateError as exc:
        print(f"bundle-router: {exc}", file=sys.stderr)
        return 2
    return 1


def _serve(args: argparse.Namespace) -> int:
    from router.server import run, serve

    return run(lambda: serve(args.config, fake_provider=args.fake_provider))


def _fake_provider(args: argparse.Namespace) -> int:
    from router.server import run, serve_fake_provider

    return run(lambda: serve_fake_provider(f"{args.host}:{args.port}", args.profile))


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
    from router.state import AUDIT_FILE, StateFile, archive, read_records, verify

    state_dir = load_config(args.config).state_dir
    path = state_dir / AUDIT_FILE
    if args.archive:
        archived, log = archive(state_dir)
        log.close()
        state = StateFile(state_dir)
        data = state.load()
        if data is not None:  # the new chain starts at 1: nothing in it is missing from state
            state.save({**data, "audit_seq": log.seq})
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
    records = [r for r in read_records(path) if not args.route or r.get("route") == args.route]
    for record in records[-args.last :] if args.last else records:
        if args.json:
            import orjson

            print(orjson.dumps(record).decode())
        else:
            print(
                f"{record['seq']:>5} {record['at']} {record.get('route') or '-':<16} "
                f"{record['action']:<10} by {record.get('actor', '?')}: {record.get('reason', '')}"
            )
    return 0
