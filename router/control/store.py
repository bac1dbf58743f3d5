"""Where changes become durable. `Store` is what the change core (`ChangeCore`) needs of it;
`LocalStore` keeps changes in `state_dir`, in the audit log and the state file. In fleet mode
every process keeps its own `LocalStore` too: the controller's is the fleet's truth, which
`router.fleet` publishes; a sidecar's is its last-known-good.

`ChangeCore` decides what a change is; the store makes it durable, in this order:

    append the audit record (fsynced: the commitment; a start replays it)
 -> rewrite the state file when its snapshot is due (after every routes/8 records, at least
    one, so the bytes written per change stay bounded however many routes there are)

When the disk refuses, nothing half-written stays behind (see `router.control.durable`). A
change the caller keeps in force anyway (a rollback) waits in `pending`, in order, and is
written before anything else as soon as the disk takes it; the store is *degraded* until
then, and says so once through the notifier when it starts and once when it clears. The
caller holds its own lock around every call: the store is not safe for concurrent use on its
own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from router.control.durable import AuditLog, DurabilityError, StateFile, read_records, utc_now
from router.control.notify import Notifier

log = logging.getLogger("router.store")
ROUTES_PER_SNAPSHOT = 8

# Every route's state as the store keeps it: {route: RouteState.as_dict()}, routes no
# longer in the config included. Called only when the store writes a snapshot.
Snapshot = Callable[[], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Saved:
    """What a store holds at start: each route's last state (as saved: the caller checks it),
    where each came from (for messages), notes for the operator, and whether records newer
    than the last snapshot were replayed (the caller then saves a snapshot once)."""

    routes: dict[str, Any]
    sources: dict[str, str]
    notes: list[str]
    replayed: bool


class Store(Protocol):
    """Durable changes: an append-only record of every change, plus snapshots of every
    route's state. Writes raise DurabilityError with nothing written."""

    @property
    def degraded(self) -> bool:
        """True while a change in force is not durable yet."""
        ...

    def load(self) -> Saved:
        """Open the store and read what it holds (raises StateError when it cannot be
        trusted). Called once, before anything else."""
        ...

    def records(self) -> Iterator[dict[str, Any]]:
        """The audit trail, oldest first."""
        ...

    def durability(self) -> dict[str, Any]:
        """For status, /readyz and /healthz: is every change in force also durable?"""
        ...

    async def append(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Make `entries` durable, after anything pending; returns their records."""
        ...

    def keep(self, entry: dict[str, Any], exc: DurabilityError) -> None:
        """`entry` is in force although it could not be written: write it when possible."""
        ...

    async def recorded(self, count: int, routes: int, snapshot: Snapshot) -> None:
        """`count` records are in force, in a router with `routes` routes: save a snapshot
        when one is due."""
        ...

    async def save(self, snapshot: Snapshot) -> None:
        """Save a snapshot now."""
        ...

    async def flush(self, snapshot: Snapshot) -> None:
        """Retry what was refused (the core calls it while `degraded`)."""
        ...

    async def close(self, snapshot: Snapshot) -> None:
        """A last try, then stop."""
        ...


class LocalStore:
    """`Store` on the local disk: `audit.jsonl` and `state.json` in `folder` (made, private,
    if missing)."""

    def __init__(self, folder: Path, notifier: Notifier) -> None:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_file = StateFile(folder)
        self.audit = AuditLog(folder)
        self.notifier = notifier
        self.pending: list[dict[str, Any]] = []  # in force in memory, not yet in the log
        self.state_behind = False  # the last state file write failed
        self.unsnapshotted = 0  # audit records newer than the state file
        self.fault: str | None = None  # the last write error while degraded
        self.fault_since: str | None = None
        self.written_while_degraded = 0

    @property
    def degraded(self) -> bool:
        return bool(self.pending) or self.state_behind

    def load(self) -> Saved:
        """The state file, plus the audit records it missed (a crash between the record and
        the state file): those are replayed, so a change that reached the log is never
        lost. Raises StateError, naming the file and the way out, for a state file that is
        not the router's or an audit log that is broken or has records missing."""
        notes = []
        data = self.state_file.load() or {"audit_seq": 0, "routes": {}}
        repair = self.audit.open(expect_seq=data["audit_seq"])
        if repair:
            notes.append(f"audit log: {repair}")
        routes: dict[str, Any] = dict(data["routes"])
        sources = dict.fromkeys(routes, str(self.state_file.path))
        replays = []
        for record in read_records(self.audit.path):
            if record["seq"] > data["audit_seq"] and record.get("after") is not None:
                routes[record["route"]] = record["after"]
                sources[record["route"]] = f"{self.audit.path}, record {record['seq']}"
                replays.append(f"{record['seq']} ({record['action']} on {record['route']})")
        if replays:
            shown = ", ".join(replays[:5]) + (
                f" and {len(replays) - 5} more" if replays[5:] else ""
            )
            notes.append(f"replayed audit record {shown}, newer than the state file")
        return Saved(routes, sources, notes, bool(replays))

    def records(self) -> Iterator[dict[str, Any]]:
        return read_records(self.audit.path)

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

    async def recorded(self, count: int, routes: int, snapshot: Snapshot) -> None:
        """`count` records landed in the log of a router with `routes` routes."""
        self.unsnapshotted += count
        if self.unsnapshotted >= max(1, routes // ROUTES_PER_SNAPSHOT):
            await self.save(snapshot)

    async def save(self, snapshot: Snapshot) -> None:
        """Replace the state file. On failure the log holds the changes (a start replays
        them) and `flush` retries."""
        data = {"audit_seq": self.audit.seq, "routes": snapshot()}
        try:
            await asyncio.to_thread(self.state_file.save, data)
        except DurabilityError as exc:
            self.state_behind = True
            self._failed(exc)
        else:
            self.state_behind = False
            self.unsnapshotted = 0
            self._maybe_recovered(0)

    async def flush(self, snapshot: Snapshot) -> None:
        """Write what is pending, then the state file (the durability loop's retry)."""
        if not self.degraded:
            return
        try:
            await self.append([])
        except DurabilityError as exc:
            self._failed(exc)
            return
        await self.save(snapshot)

    async def close(self, snapshot: Snapshot) -> None:
        """A last try, then a clean stop leaves nothing to replay, or says what is lost."""
        await self.flush(snapshot)
        if self.unsnapshotted and not self.pending:
            await self.save(snapshot)
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
