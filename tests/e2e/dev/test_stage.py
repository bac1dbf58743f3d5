"""The demos' children (router/dev/stage.py): one that exits while the demo waits for it is
told at once, with its last words, instead of after the start timeout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import aiohttp
import pytest

from router.dev.ports import free_port
from router.dev.stage import START_TIMEOUT, Children, wait_ready


async def test_a_child_that_exits_while_awaited_is_named_at_once(tmp_path: Path) -> None:
    children = Children(tmp_path)
    code = "import sys; print('metrics_listen: 127.0.0.1:1 is in use'); sys.exit(2)"
    children.start([sys.executable, "-c", code], log="child.log")
    began = time.monotonic()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(SystemExit) as raised:
                url = f"http://127.0.0.1:{free_port()}/readyz"  # nobody will answer
                await wait_ready(session, url, "sidecar x", children)
    finally:
        children.stop()
    told = str(raised.value)
    assert "stopped waiting for the sidecar x" in told and "exited with code 2" in told
    assert "metrics_listen: 127.0.0.1:1 is in use" in told and "child.log" in told
    assert time.monotonic() - began < START_TIMEOUT / 2
