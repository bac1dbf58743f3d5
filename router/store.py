"""Where changes become durable: the local audit log and state file in `state_dir`.

`Rollouts` decides what a change is; this store makes it durable, in this order:

    append the audit record (fsynced: the commitment; a start replays it)
 -> rewrite the state file when its snapshot is due (after every routes/8 records, at least
    one, so the bytes written per change stay bounded however many routes there are)

When the disk refuses, nothing half-written stays behind (see `router.state`). A change the
caller keeps in force anyway (a rollback) waits in `pending`, in order, and is written before
anything else as soon as the disk takes it; the store is *degraded* until then, and says so
once through the notifier when it starts and once when it clears. The caller holds its own
lock around every call: the store is not safe for concurrent use on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from router.notify import Notifier
from router.state import AuditLog, DurabilityError, StateFile, utc_now

log = logging.getLogger("router.store")
ROUTES_PER_SNAPSHOT = 8


class LocalStore:
    def __init__(
        self,
        state_file: StateFile,
        audit: AuditLog,
        notifier: Notifier,
        snapshot: Callable[[], dict[str, Any]],
    ) -> None:
        """`snapshot()` returns every route's state as the state file holds it."""
        self.state_file = state_file
        self.audit = audit
        self.notifier = notifier
        self.snapshot = snapshot
        self.pending: list[dict[str, Any]] = []  # in force in memory, not yet in the log
        self.state_behind = False  # the last state file write failed
        self.unsnapshotted = 0  # audit records newer than the state file
        self.fault: str | None = None  # the last write error while degraded
        self.fault_since: str | None = None
        self.written_while_degraded = 0

    @property
    def degraded(self) -> bool:
        return bool(self.pending) or self.state_behind

    def durability(self) -> dict[str, Any]:
        """For status, /readyz and /healthz: is every change in force also on disk?"""
        return {
            "degraded": self.degraded,
            "changes_not_durable": [
                {"route": e["route"], "action": e["action"], "reason": e["reason"]}
                for e in self.pending
            ],
            "state_file_behind": self.state_behind,
            "error": self.fault,
            "since": self.fault_since,
        }

    async def append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write what is pending, then `entries`, with one fsync; returns the records of
        `entries`. Raises DurabilityError with nothing written."""
        earlier = len(self.pending)
        records = await asyncio.to_thread(self.audit.append_many, [*self.pending, *entries])
        self.pending.clear()
        if earlier:
            log.warning("wrote %d audit record(s) that were in force in memory only", earlier)
        self._maybe_recovered(earlier)
        return records[earlier:]

    def keep(self, entry: dict[str, Any], exc: DurabilityError) -> None:
        """`entry` stays in force although the disk refused it: write it when it can."""
        self.pending.append(entry)
        self._failed(exc)

    async def recorded(self, count: int, routes: int) -> None:
        """`count` records landed in the log of a router with `routes` routes."""
        self.unsnapshotted += count
        if self.unsnapshotted >= max(1, routes // ROUTES_PER_SNAPSHOT):
            await self.save()

    async def save(self) -> None:
        """Replace the state file. On failure the log holds the changes (a start replays
        them) and `flush` retries."""
        data = {"audit_seq": self.audit.seq, "routes": self.snapshot()}
        try:
            await asyncio.to_thread(self.state_file.save, data)
        except DurabilityError as exc:
            self.state_behind = True
            self._failed(exc)
        else:
            self.state_behind = False
            self.unsnapshotted = 0
            self._maybe_recovered(0)

    async def flush(self) -> None:
        """Write what is pending, then the state file (the durability loop's retry)."""
        if not self.degraded:
            return
        try:
            await self.append([])
        except DurabilityError as exc:
            self._failed(exc)
            return
        await self.save()

    async def close(self) -> None:
        """A last try, then a clean stop leaves nothing to replay, or says what is lost."""
        await self.flush()
        if self.unsnapshotted and not self.pending:
            await self.save()
        if self.pending:
            log.critical(
                "stopping with %d change(s) in force that never reached the audit log (%s); "
                "they are lost, and the next start serves the state before them: %s",
                len(self.pending),
                self.fault,
                "; ".join(f"{e['action']} on {e['route']}" for e in self.pending),
            )
        self.audit.close()

    def _failed(self, exc: DurabilityError) -> None:
        first = self.fault is None
        self.fault = str(exc)
        if first:
            self.fault_since = utc_now()
            text = (
                f"DURABILITY DEGRADED: {exc}. Changes that take risk away (trips, rollbacks) "
                "stay in force in memory and are written as soon as the disk takes them; "
                "every other change is refused. Do not restart the router until this clears."
            )
            log.error("%s", text)
            self.notifier.send({"text": text, "action": "durability_degraded", "at": utc_now()})

    def _maybe_recovered(self, written: int) -> None:
        """After a write that landed: if nothing waits any more, say it is over (whichever
        write it was: the retry loop's, or the next ordinary change's)."""
        self.written_while_degraded += written
        if self.fault is None or self.degraded:
            return
        text = (
            f"durability restored: the disk took the audit log and the state file again "
            f"({self.written_while_degraded} change(s) kept in memory since "
            f"{self.fault_since} are now durable)"
        )
        self.written_while_degraded = 0
        self.fault = self.fault_since = None
        log.warning("%s", text)
        self.notifier.send({"text": text, "action": "durability_restored", "at": utc_now()})
