"""The folders are the layers (docs/architecture.md): a lower layer never imports a higher one.

    foundations (router/*.py) < proxy/ (data plane) < control/ < fleet/ < admin/ < dev/

The composition at the top (`server.py`, `cli.py`, `__main__.py`) may import any layer, and
no layer may import it."""

from __future__ import annotations

import ast
from pathlib import Path

ROUTER = Path(__file__).resolve().parents[2] / "router"
ORDER = ["proxy", "control", "fleet", "admin", "dev"]  # foundations sit below all of them
COMPOSITION = {"server", "cli", "__main__"}
TOP = len(ORDER) + 1  # the composition's layer


def layer_of(module: Path, root: Path) -> int | None:
    """0 for the foundations, 1.. for the subpackages in ORDER; None for the composition."""
    parts = module.relative_to(root).parts
    if len(parts) == 1:
        return None if parts[0].removesuffix(".py") in COMPOSITION else 0
    return ORDER.index(parts[0]) + 1


def imported_layers(module: Path) -> dict[str, int]:
    """The router modules `module` imports, with their layers."""
    found = {}
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "router" and len(parts) > 1:
                if parts[1] in ORDER:
                    found[name] = ORDER.index(parts[1]) + 1
                else:
                    found[name] = TOP if parts[1] in COMPOSITION else 0
    return found


def upward_imports(root: Path) -> list[str]:
    wrong = []
    for module in sorted(root.rglob("*.py")):
        own = layer_of(module, root)
        if own is None:
            continue
        for name, layer in imported_layers(module).items():
            if layer > own:
                wrong.append(f"{module.relative_to(root.parent)} imports {name}")
    return wrong


def test_no_layer_imports_a_higher_one() -> None:
    wrong = upward_imports(ROUTER)
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check above can fail: a data-plane module importing the control plane."""
    fake = tmp_path / "router"
    (fake / "proxy").mkdir(parents=True)
    (fake / "proxy" / "handler.py").write_text("from router.control.core import ChangeCore\n")
    (fake / "errors.py").write_text("from router.proxy import handler\n")
    (fake / "server.py").write_text("from router.dev import demo\n")  # composition: allowed
    (fake / "control").mkdir()
    (fake / "control" / "reload.py").write_text("from router.server import serve\n")
    assert upward_imports(fake) == [
        "router/control/reload.py imports router.server",
        "router/control/reload.py imports router.server.serve",
        "router/errors.py imports router.proxy",
        "router/errors.py imports router.proxy.handler",
        "router/proxy/handler.py imports router.control.core",
        "router/proxy/handler.py imports router.control.core.ChangeCore",
    ]
