"""The audit log as the page reads it: followed from where it was last read, never re-read.

`AuditTrail.refresh` reads only the bytes appended since the last read (the first read, of
the whole log, and any large read runs in a thread), and keeps what the page shows:

    recent      the last KEPT records, slimmed to seq, at, route, action, actor, reason and
                the version they concern: the page's trail, and its marks on the time axis
    live_since  per route and version, when it last began to serve (its weight went from 0,
                or its first instances flipped in a rolling release)
    trips       per route and version, why a version that was active was rolled back

A log moved aside and restarted (`bundle-router audit --archive`) is read afresh. The chain
check (`verify`) reads the whole log, so it runs in a thread, at most every CHECK_EVERY
seconds and only when the log's size changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from router.control.durable import Verification, verify
from router.pacing import Pacer

KEPT = 10_000  # records kept for the trail and the marks
CHECK_EVERY = 5.0  # seconds between chain checks at most
READ_INLINE = 64 * 1024  # bytes read on the loop; more goes to a thread


@dataclass(frozen=True, slots=True)
class Entry:
    """One audit record, as the page shows it."""

    seq: int | None
    at: str | None
    unix: float | None
    route: str | None
    action: str | None
    actor: str | None
    reason: str | None
    version: str | None  # the version the change was about, for a mark

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "route": self.route,
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
        }

    def as_mark(self) -> dict[str, Any]:
        return {
            "t": self.unix,
            "action": self.action,
            "version": self.version,
            "reason": self.reason,
        }


def unix_time(at: Any) -> float | None:
    """'2026-11-26T14:03:12.123Z' -> unix seconds; None when it is not such a time."""
    if not isinstance(at, str):
        return None
    try:
        return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def serving(state: Any) -> set[str]:
    """The versions a saved route state serves: weight above 0, or flipped instances."""
    if not isinstance(state, Mapping):
        return set()
    weights = state.get("weights") or {}
    found = {str(v) for v, points in weights.items() if isinstance(points, int) and points > 0}
    waves = (state.get("ramp") or {}).get("waves") or {}
    if waves.get("flipped") and waves.get("to"):
        found.add(str(waves["to"]))
    return found


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def concerned(before: Any, after: Any) -> str | None:
    """The version a change was about: the one whose weight moved most, else the candidate
    (a rolling release's flip moves no weight), else the active version."""
    if not isinstance(after, Mapping):
        return None
    old, new = _mapping(_mapping(before).get("weights")), _mapping(after.get("weights"))
    moves = {}
    for version in {*old, *new}:
        a, b = old.get(version, 0), new.get(version, 0)
        if isinstance(a, int) and isinstance(b, int):
            moves[str(version)] = abs(b - a)
    # On a tie (a drain moves both versions alike) the candidate is the one concerned.
    candidate = _text(after.get("candidate") or _mapping(before).get("candidate"))
    ordered = sorted(moves, key=lambda v: (v != candidate, v))
    moved = max(ordered, key=lambda v: moves[v], default=None)
    if moved is not None and moves[moved] > 0:
        return moved
    return _text(after.get("candidate") or _mapping(before).get("candidate") or after.get("active"))


@dataclass(frozen=True, slots=True)
class Read:
    """What one read of new lines found."""

    entries: list[Entry]
    began: list[tuple[str, str, str]]  # route, version, at
    rolled_back: list[tuple[str, str, dict[str, Any]]]  # route, version, trip


def digest(lines: list[bytes]) -> Read:
    """Parse complete lines (no I/O, no shared state: safe in a thread)."""
    entries, began, rolled = [], [], []
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the chain check reports it
        if not isinstance(record, dict):
            continue
        route, at = _text(record.get("route")), _text(record.get("at"))
        before, after = record.get("before"), record.get("after")
        entries.append(
            Entry(
                seq=record.get("seq") if isinstance(record.get("seq"), int) else None,
                at=at,
                unix=unix_time(at),
                route=route,
                action=_text(record.get("action")),
                actor=_text(record.get("actor")),
                reason=_text(record.get("reason")),
                version=concerned(before, after),
            )
        )
        if route is None or at is None or not isinstance(after, Mapping):
            continue
        for version in serving(after) - serving(before):
            began.append((route, version, at))
        was = set(_mapping(before).get("rolled_back") or [])
        earlier_trip = _mapping(before).get("trip")
        for version in set(after.get("rolled_back") or []) - was:
            if version == _mapping(before).get("candidate") and earlier_trip:
                # A rolled-back candidate that a deploy moved aside: its own trip, kept.
                trip = dict(earlier_trip)
            else:
                trip = {"rule": "manual", "description": _text(record.get("reason")), "at": at}
            rolled.append((route, str(version), trip))
    return Read(entries, began, rolled)


class AuditTrail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.recent: deque[Entry] = deque(maxlen=KEPT)
        self.live_since: dict[tuple[str, str], str] = {}
        self.trips: dict[tuple[str, str], dict[str, Any]] = {}
        self._identity: tuple[int, int] | None = None  # the file read: (device, inode)
        self._offset = 0  # bytes of whole lines read
        self._reading = asyncio.Lock()
        self._checking = asyncio.Lock()
        self._check: tuple[int, float, Verification] | None = None  # size, when, result
        self._rechecking: asyncio.Task[None] | None = None  # a check in the background

    async def refresh(self) -> None:
        """Take in the records appended since the last call."""
        async with self._reading:
            try:
                found = os.stat(self.path)
            except FileNotFoundError:
                return
            identity = (found.st_dev, found.st_ino)
            if identity != self._identity or found.st_size < self._offset:
                self._start_over(identity)
            if found.st_size == self._offset:
                return
            if found.st_size - self._offset <= READ_INLINE:
                lines, used = self._read_new()
                read = digest(lines)
            else:
                lines, used = await asyncio.to_thread(self._read_new)
                read = await asyncio.to_thread(digest, lines)
            self._offset += used
            await self._take(read)

    def _start_over(self, identity: tuple[int, int]) -> None:
        self._identity, self._offset = identity, 0
        self.recent.clear()
        self.live_since.clear()
        self.trips.clear()

    def _read_new(self) -> tuple[list[bytes], int]:
        """The complete lines after the offset, and their length in bytes."""
        with self.path.open("rb") as file:
            file.seek(self._offset)
            data = file.read()
        end = data.rfind(b"\n") + 1  # a line being written is left for the next read
        return data[:end].splitlines(), end

    async def _take(self, read: Read) -> None:
        pacer = Pacer()
        for entry in read.entries:
            self.recent.append(entry)
            await pacer.pause()
        for route, version, at in read.began:
            self.live_since[(route, version)] = at
        for route, version, trip in read.rolled_back:
            self.trips[(route, version)] = trip

    def last(self, n: int) -> list[dict[str, Any]]:
        """The last `n` records, oldest first."""
        return [e.as_dict() for e in list(self.recent)[-n:]]

    def marks(self, route: str, since: float) -> list[dict[str, Any]]:
        """The route's records at or after `since` (unix seconds), as marks on a time axis."""
        return [
            e.as_mark()
            for e in self.recent
            if e.route == route and e.unix is not None and e.unix >= since
        ]

    async def chain(self) -> dict[str, Any]:
        """Whether the hash chain holds, as last checked. The first call checks; later ones
        answer at once from the last check, and start a new one in the background when the
        log grew (at most every CHECK_EVERY seconds): a long log never delays the page."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        if self._check is None:
            async with self._checking:
                if self._check is None:
                    await self._verify(size)
        else:
            grown = self._check[0] != size
            due = time.monotonic() - self._check[1] >= CHECK_EVERY
            idle = self._rechecking is None or self._rechecking.done()
            if grown and due and idle:
                self._rechecking = asyncio.ensure_future(self._verify(size))
        assert self._check is not None
        found = self._check[2]
        problem = found.problem
        if problem is not None and found.line is not None:
            problem = f"line {found.line}: {problem}"
        return {"ok": found.ok, "records": found.records, "problem": problem}

    async def _verify(self, size: int) -> None:
        result = await asyncio.to_thread(verify, self.path)
        self._check = (size, time.monotonic(), result)

    async def close(self) -> None:
        """Stop a check in the background, if one runs."""
        if self._rechecking is not None and not self._rechecking.done():
            self._rechecking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rechecking
