"""The console script: `bundle-router COMMAND ...` (also `python -m router`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from router import __version__
from router.errors import ConfigError

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
    except ConfigError as exc:
        print(
            f"bundle-router: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr
        )
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
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
