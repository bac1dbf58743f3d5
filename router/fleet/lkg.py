"""The epoch this process last applied (a sidecar) or published (a controller), on disk.

A sidecar's last-known-good routes are its ordinary durable state (`state_dir`: the state
file and the audit log, written by the change core before a snapshot is served). This file
adds the epoch they came from, written after them: a crash in between only makes the
sidecar apply the same epoch once more. Trips this sidecar decided wait in `outbox` beside
it until a snapshot lists them as taken in by the controller (not merely until they reach
Redis, which may lose them), so neither a restart nor an empty Redis can forget them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from router.control.durable import utc_now, write_durably

FILE = "fleet.json"


class Marker:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / FILE
        data = self._read()
        self.epoch: int = int(data.get("epoch") or 0)
        self.outbox: list[dict[str, Any]] = list(data.get("outbox") or [])

    def _read(self) -> dict[str, Any]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError:
            # write_durably never leaves a torn file; this one was edited by hand
            raise ValueError(
                f"{self.path} is not JSON; move it away and the sidecar resyncs from Redis"
            ) from None
        return data if isinstance(data, dict) else {}

    def encode(self, epoch: int | None = None) -> tuple[int, bytes]:
        """The file's new content, taken on the event loop (the outbox may change while a
        thread writes it): (its epoch, its bytes)."""
        new_epoch = self.epoch if epoch is None else epoch
        data = {"epoch": new_epoch, "outbox": list(self.outbox), "at": utc_now()}
        return new_epoch, orjson.dumps(data, option=orjson.OPT_INDENT_2)

    def write(self, epoch: int, content: bytes) -> None:
        """Write what `encode` gave (in a worker thread). Raises DurabilityError, with the
        old file in place and `epoch` unchanged."""
        write_durably(self.path, content)
        self.epoch = epoch
