"""A real full disk for the tests: a tiny tmpfs mounted on a folder, filled and freed.

Mounting needs root (or CAP_SYS_ADMIN); CI runs as root. Elsewhere the tests that need it
skip with the reason, except in CI (CI=1), where they fail instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

PAGE = 4096


class TinyDisk:
    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.filler = path / "filler"
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            reason = f"cannot mount a tmpfs to fill ({done.stderr.strip()}); run as root"
            if os.environ.get("CI"):
                pytest.fail(reason)
            pytest.skip(reason)

    def fill(self) -> None:
        """Write until the disk is full: every free page is taken."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            chunk = b"\0" * PAGE
            while True:
                try:
                    if os.write(fd, chunk) < len(chunk):
                        continue  # the last partial page; the next write fails
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    return
        finally:
            os.close(fd)

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


@contextlib.contextmanager
def tiny_disk(path: Path, size: int = 1 << 20) -> Iterator[TinyDisk]:
    disk = TinyDisk(path, size)
    try:
        yield disk
    finally:
        disk.unmount()
