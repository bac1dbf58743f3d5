"""The compatibility suite's stack: one fake provider and one router for the whole suite, the
example config with both routes at 50/50 between their two versions (so a conversation that
hopped would show), and no network for the frameworks.

Run it with the venv that has the `compat` extra: `.venv-compat/bin/pytest tests/compat`
(scripts/setup makes it; scripts/check runs it)."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testing.servers import ProviderProcess, Router, router_config
from tests.compat.harness import ROUTES, Compat

try:
    importlib.metadata.version("openai-agents")
except importlib.metadata.PackageNotFoundError:
    pytest.exit(
        "tests/compat needs the agent frameworks of the `compat` extra: run it with "
        ".venv-compat/bin/pytest tests/compat (scripts/setup makes .venv-compat)",
        returncode=4,
    )

# Before any framework is imported: no tracing, telemetry or downloads, at import or run time.
os.environ.update(
    {
        "OPENAI_AGENTS_DISABLE_TRACING": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGSMITH_TRACING": "false",
        "DO_NOT_TRACK": "1",
    }
)


def _local(host: Any) -> bool:
    if host in (None, "localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else host).is_loopback
    except ValueError:
        return False


def _no_network(event: str, args: tuple[Any, ...]) -> None:
    """An audit hook: a framework that looks up or connects to anything but this machine
    fails the test that made it (before the lookup or the connect goes out)."""
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect" and isinstance(args[1], tuple):
        host = args[1][0]
    else:
        return
    if not _local(host):
        raise RuntimeError(f"tests/compat must need no network: {event} {host!r}")


sys.addaudithook(_no_network)


@pytest.fixture(scope="session")
def compat_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    tmp = tmp_path_factory.mktemp("compat")
    fake = ProviderProcess(tmp, profile={"default": {"answer_tool_results": True}})
    config = router_config(fake.url)
    for route, versions in ROUTES.items():
        config["routes"][route]["weights"] = dict.fromkeys(versions, 50)
        config["routes"][route]["guardrails"] = "off"  # nothing here should trip a canary
    try:
        router = Router(Path(tmp) / "router", config)
    except BaseException:
        fake.stop()
        raise
    yield Compat(fake, router)
    router.stop()
    fake.stop()


@pytest.fixture
def compat(compat_stack: Compat) -> Iterator[Compat]:
    """The suite's stack; the provider's behaviour is reset after each test. A framework's
    ordinary flow must leave nothing a guardrail would count against the version."""
    before = compat_stack.failures()
    yield compat_stack
    compat_stack.fake.reset()
    assert compat_stack.failures() == before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.compat)
