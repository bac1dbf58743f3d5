"""Copies of the example bundles that a test or a benchmark may add to and break."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from testing.servers import EXAMPLE_BUNDLES


def own_bundles(tmp: Path) -> Path:
    """A copy of the example bundles that a test may add to and break."""
    folder = tmp / "bundles"
    shutil.copytree(EXAMPLE_BUNDLES, folder)
    return folder


def with_bundles(config: dict[str, Any], folder: Path) -> dict[str, Any]:
    for name, route in config["routes"].items():
        route["bundles"] = str(folder / name)
    return config


def new_version(folder: Path, route: str, source: str, version: str) -> None:
    shutil.copytree(folder / route / source, folder / route / version)
    bundle = folder / route / version / "bundle.yaml"
    bundle.write_text(bundle.read_text().replace(f"version: {source}", f"version: {version}"))


def alias_bomb(levels: int, indent: str = "  ") -> str:
    """YAML mapping lines whose key `l{levels-1}` expands to 10**levels leaves in a few
    hundred bytes: each level is a list of ten aliases to the level before ("billion laughs")."""
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * 10)}]"]
    for level in range(1, levels):
        lines.append(f"{indent}l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    return "\n".join(lines) + "\n"


def set_pattern(bundle: Path, pattern: str, example: str = "A-1234") -> None:
    """Give the first tool's `order_id` this pattern, and an example the fake provider sends."""
    tools = bundle / "tools.yaml"
    data = yaml.safe_load(tools.read_text())
    data[0]["input_schema"]["properties"]["order_id"] = {
        "type": "string",
        "pattern": pattern,
        "examples": [example],
    }
    tools.write_text(yaml.safe_dump(data, allow_unicode=True))
