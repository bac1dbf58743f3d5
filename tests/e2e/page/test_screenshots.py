"""The command that regenerates the docs' screenshots of the page works, and keeps them small."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from testing.browser import VIEWPORT, require_chromium
from testing.redis import require_redis
from testing.screenshots import MAX_BYTES
from testing.servers import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_the_screenshots_command_writes_both_pictures(tmp_path: Path) -> None:
    require_chromium()
    require_redis()
    done = subprocess.run(
        [sys.executable, "-m", "testing.screenshots", "--out", str(tmp_path), "--seconds", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("page-router.png", "page-fleet.png"):
        path = tmp_path / name
        assert f"wrote {path}" in done.stdout, done.stdout
        width, height = png_size(path)
        assert width == VIEWPORT["width"] and height >= VIEWPORT["height"] // 2, (width, height)
        assert path.stat().st_size <= MAX_BYTES
