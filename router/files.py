"""Reading config and bundle files within bounds, so that a hostile file is cheap to refuse.

A file's size is checked before it is read, and the read stops at the limit even if the file
grows meanwhile. YAML goes through `BoundedLoader`. PyYAML gives an anchor and its aliases
one shared node, so a few hundred bytes can stand for 10**8 values ("billion laughs") that
only blow up later, when pydantic, orjson or every proxied request walks them. The loader
weighs the composed node graph before any Python object is built: each node's expanded size
and depth follow from its children's, computed once per node, so the check costs one visit
per node however large the expansion would be. (Kubernetes' YAML parser refuses excessive
aliasing for the same reason.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
import yaml.cyaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from router.errors import ConfigError, Problem

KiB = 1024
MiB = 1024 * KiB
# Defaults for router.yaml and the fake provider's profile; bundle files pass tighter ones.
MAX_YAML_BYTES = 16 * MiB
MAX_YAML_NODES = 1_000_000  # values and keys once every alias is expanded
MAX_YAML_DEPTH = 64  # nesting, aliases expanded (orjson refuses past 254; Python recurses)


class FileRefused(Exception):
    """A file that is not read or not used: not a plain file, too large, or an alias bomb."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def human(size: int) -> str:
    """2097152 -> '2 MiB'; sizes that are not whole units also show their bytes."""
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if size >= scale:
            text = f"{size / scale:g} {unit}"
            return text if size % scale == 0 else f"{text} ({size:,} bytes)"
    return f"{size} bytes"


def read_bytes(path: Path, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes. Raises FileNotFoundError or
    FileRefused. A FIFO or device is refused unread (opening a FIFO would wait for a writer)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(f"{path} is not a regular file", "point at a plain file")
        if info.st_size > limit:
            raise _too_large(path, info.st_size, limit)
        data = file.read(limit + 1)
    if len(data) > limit:  # it grew between the check and the read
        raise _too_large(path, len(data), limit)
    return data


def _too_large(path: Path, size: int, limit: int) -> FileRefused:
    return FileRefused(
        f"{path} is {human(size)}, over the limit of {human(limit)}",
        f"keep it under {human(limit)}",
    )


# libyaml's parser, when PyYAML was built with it.
_CParser: Any = getattr(yaml.cyaml, "CParser", None) if hasattr(yaml, "CSafeLoader") else None

if _CParser is not None:

    class _SafeLoader(Composer, _CParser, SafeConstructor, Resolver):  # type: ignore[misc]
        """libyaml's scanner and parser (several times faster than PyYAML's own, which
        matters with thousands of bundle files) under PyYAML's Composer, whose recursion
        `BoundedLoader` bounds. A safe loader, as `yaml.SafeLoader` is."""

        def __init__(self, stream: str) -> None:
            _CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - PyYAML built without libyaml
    _SafeLoader = yaml.SafeLoader  # type: ignore[misc, assignment]


class BoundedLoader(_SafeLoader):
    """A safe YAML loader refusing documents that nest or expand past the limits."""

    def __init__(self, text: str, max_nodes: int, max_depth: int) -> None:
        super().__init__(text)
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.depth = 0
        self.nodes = 0  # composed so far; with no alias, that is all the document holds
        self.aliased = False

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # Composing recurses once per level: stop before Python's recursion limit does.
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > self.max_depth:
                raise _too_deep(self.max_depth)
            if self.nodes > self.max_nodes:
                raise _too_many(self.max_nodes)
            if self.check_event(yaml.AliasEvent):
                self.aliased = True
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and self.aliased:  # only aliases make it larger than it reads
            weigh(node, self.max_nodes, self.max_depth)
        return node


def _too_many(limit: int) -> FileRefused:
    return FileRefused(
        f"aliases expand it past {limit:,} nodes, the limit for this file (a YAML alias bomb?)",
        "write the values out, or alias less: the limit keeps one file from costing the "
        "router seconds and gigabytes on every load and request",
    )


def _too_deep(limit: int) -> FileRefused:
    return FileRefused(
        f"values nest deeper than {limit} levels",
        f"flatten it to at most {limit} levels",
    )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def weigh(root: yaml.Node, max_nodes: int, max_depth: int) -> tuple[int, int]:
    """(nodes, depth) that `root` stands for with every alias expanded, without expanding:
    an alias is the anchored node itself, whose weight is computed once and reused.
    Raises FileRefused past either limit, or for an alias inside its own anchor."""
    weights: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()  # being weighed: an alias to one of these is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            parts = [weights[id(child)] for child in _children(node)]
            nodes = 1 + sum(n for n, _ in parts)
            depth = 1 + max((d for _, d in parts), default=0)
            if nodes > max_nodes:
                raise _too_many(max_nodes)
            if depth > max_depth:
                raise _too_deep(max_depth)
            weights[key] = (nodes, depth)
        elif key in open_nodes:
            raise FileRefused(
                f"a recursive alias: the value at line {node.start_mark.line + 1} contains an "
                "alias to itself",
                "an alias may only repeat a value, never the value it sits in",
            )
        elif key not in weights:
            open_nodes.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return weights[id(root)]


def parse_yaml(text: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """One YAML document within the limits. Raises FileRefused or yaml.YAMLError."""
    loader = BoundedLoader(text, max_nodes, max_depth)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(
    path: Path,
    max_bytes: int = MAX_YAML_BYTES,
    max_nodes: int = MAX_YAML_NODES,
    max_depth: int = MAX_YAML_DEPTH,
    *,
    missing_fix: str = "create it, or fix the name",
) -> Any:
    """Parse one YAML (or JSON) file within the limits. Raises ConfigError naming the file."""

    def refuse(message: str, fix: str) -> ConfigError:
        return ConfigError([Problem(str(path), "", message, fix)])

    try:
        return parse_yaml(read_bytes(path, max_bytes).decode("utf-8"), max_nodes, max_depth)
    except FileNotFoundError:
        raise refuse("file not found", missing_fix) from None
    except OSError as exc:  # permissions, a symlink loop
        raise refuse(f"cannot read it: {exc.strerror}", "let the router's user read it") from None
    except FileRefused as exc:
        raise refuse(exc.message, exc.fix) from None
    except UnicodeDecodeError:
        raise refuse("the file is not UTF-8 text", "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise refuse(f"not valid YAML: {exc}", "fix the syntax at that line") from None
