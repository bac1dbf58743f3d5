"""Durable state and the audit log, both in `state_dir`.

- `state.json` holds the live state of every route (weights, roles, trips). It is replaced
  whole and durably: write a temp file, fsync it, rename it over the old one, fsync the
  folder. A crash leaves the old file or the new one, never a mix.
- `audit.jsonl` is append-only, one JSON record a line. Each record has a sequence number
  and the sha256 of the previous record, so an edited, dropped or reordered line breaks the
  chain. Each append is fsynced before the change is acknowledged.

The audit record of a change is written before the state file, and the state file names the
last record it includes (`audit_seq`). A crash between the two is repaired at start by
replaying the newer records, so a change that reached the log is never lost.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

log = logging.getLogger("router.state")
GENESIS = "0" * 64
STATE_FILE = "state.json"
AUDIT_FILE = "audit.jsonl"


class StateError(Exception):
    """The durable state cannot be used as it is; the message says what to do."""


class DurabilityError(Exception):
    """A write to `state_dir` failed (a full disk, an I/O error, lost permissions). Like
    PostgreSQL with its WAL, the router never carries on as if a failed or short write had
    landed: the file is put back as it was and the caller decides what the change becomes."""

    def __init__(self, path: Path, cause: OSError) -> None:
        self.path = path
        self.errno = cause.errno
        name = errno.errorcode.get(cause.errno or 0, "EIO")
        self.reason = f"{cause.strerror or cause} ({name})"
        fix = {
            errno.ENOSPC: "free space on the disk that holds it",
            errno.EDQUOT: "raise the disk quota of the router's user",
            errno.EACCES: "give the router's user write access to it",
            errno.EROFS: "mount it read-write",
        }.get(cause.errno or 0, "check the disk and the kernel log (dmesg)")
        super().__init__(
            f"could not write {path}: {self.reason}. state_dir is {path.parent}; {fix}"
        )


def utc_now() -> str:
    """'2026-11-26T14:03:12.123Z'."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte or raise: `os.write` may write less than asked (a short write when
    the disk fills mid-record), and what it returns must be checked."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file.
    Raises DurabilityError, with the old file untouched and no temp file left behind."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()  # a partial temp file would hold the space the disk needs
        raise DurabilityError(path, exc) from exc


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


REBUILD = (
    "Restore it from a backup, or move it away: the router then rebuilds live state from "
    "the audit log and the config"
)


class _SavedState(BaseModel):
    """The envelope of `state.json`; each route's content is checked by `RouteState`."""

    model_config = ConfigDict(extra="allow")
    audit_seq: StrictInt = Field(ge=0)
    routes: dict[str, dict[str, Any]]


class StateFile:
    """`state.json`: {"audit_seq": N, "routes": {name: {...}}}."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / STATE_FILE

    def load(self) -> dict[str, Any] | None:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise StateError(
                f"{self.path} is not valid JSON ({exc}); it is only ever replaced whole, so "
                f"something else wrote it. {REBUILD}"
            ) from None
        try:
            _SavedState.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'the file'}: {e['msg']}"
                for e in exc.errors()
            )
            raise StateError(
                f"{self.path} is not a state file the router wrote ({problems}). {REBUILD}"
            ) from None
        result: dict[str, Any] = data
        return result

    def save(self, data: dict[str, Any]) -> None:
        """Raises DurabilityError, the old file left as it was."""
        write_durably(self.path, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _digest(record: dict[str, Any]) -> str:
    body = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class Verification:
    records: int
    head: str  # hash of the last good record
    last_seq: int
    problem: str | None = None  # what is broken, and on which line
    line: int | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete record, in order (a torn last line is skipped)."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as file:
        for line in file:
            if line.endswith(b"\n"):
                yield orjson.loads(line)


def verify(path: Path) -> Verification:
    """Check the chain of every complete line: sequence numbers, previous hashes, hashes."""
    head, seq, count = GENESIS, 0, 0
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return Verification(0, GENESIS, 0)
    with file:
        for number, line in enumerate(file, start=1):
            if not line.endswith(b"\n"):
                break  # a torn last line: repaired at start, not a broken chain
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                return Verification(count, head, seq, "the line is not JSON", number)
            problem = None
            if not isinstance(record, dict):
                problem = "the line is not a JSON object"
            elif record.get("prev") != head:
                problem = "its 'prev' is not the hash of the record before it"
            elif record.get("seq") != seq + 1:
                problem = f"its seq is {record.get('seq')!r}, expected {seq + 1}"
            elif record.get("hash") != _digest(record):
                problem = "its hash does not match its content (the record was edited)"
            if problem:
                return Verification(count, head, seq, problem, number)
            head, seq, count = record["hash"], record["seq"], count + 1
    return Verification(count, head, seq)


class AuditLog:
    """The append-only, hash-chained audit log. `open()` before the first `append()`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / AUDIT_FILE
        self.head = GENESIS
        self.seq = 0
        self._fd: int | None = None
        self._size = 0  # bytes of whole records: a failed append is cut back to this

    def open(self, *, expect_seq: int = 0) -> str | None:
        """Repair a torn last line, verify the chain, open for appending. Returns a note
        about the repair, if one was made. Raises StateError on a broken chain, and when the
        log holds fewer records than `expect_seq` (the state file's `audit_seq`): a deleted
        or cut log would otherwise start a new chain in silence."""
        note = self._repair_torn_tail()
        result = verify(self.path)
        if not result.ok:
            raise StateError(
                f"the audit log {self.path} is broken at line {result.line}: {result.problem}. "
                "The router will not add to a log it cannot vouch for. Keep the old log as "
                "evidence and start a new chain with: bundle-router audit --archive "
                "--config CONFIG"
            )
        if result.last_seq < expect_seq:
            found = "is missing" if not self.path.exists() else f"ends at record {result.last_seq}"
            raise StateError(
                f"the audit log {self.path} {found}, but {self.path.parent / STATE_FILE} "
                f"includes records up to {expect_seq}: records were deleted. Restore the log "
                "from a backup, or start a new chain that records the loss with: "
                "bundle-router audit --archive --config CONFIG"
            )
        self.head, self.seq = result.head, result.last_seq
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        return note

    def _repair_torn_tail(self) -> str | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not data or data.endswith(b"\n"):
            return None
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        with self.path.open("r+b") as file:
            try:
                record = orjson.loads(tail)
                complete = isinstance(record, dict) and record.get("hash") == _digest(record)
            except orjson.JSONDecodeError:
                complete = False
            if complete:  # the crash came between the record and its newline
                file.seek(len(data))
                file.write(b"\n")
                note = "completed the last audit record's line"
            else:
                file.truncate(cut)
                note = f"removed a torn last audit line ({len(tail)} bytes)"
            file.flush()
            os.fsync(file.fileno())
        return note

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add seq, time and the chain to `entry`, write it and fsync. Returns the record."""
        return self.append_many([entry])[-1]

    def append_many(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chain and write several records with one fsync: all of them land, or none does.

        On a failed or short write, or a failed fsync, the file is cut back to its last
        whole record and DurabilityError is raised; the chain stays where it was."""
        if self._fd is None:
            raise RuntimeError("AuditLog.open() was not called")
        records, seq, head, at = [], self.seq, self.head, utc_now()
        for entry in entries:
            seq += 1
            record = {"seq": seq, "at": at, **entry, "prev": head}
            record["hash"] = head = _digest(record)
            records.append(record)
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
        try:
            if os.fstat(self._fd).st_size != self._size:
                self._cut_back()  # an earlier failed append could not be cut back then
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._cut_back()
            raise DurabilityError(self.path, exc) from exc
        self.seq, self.head, self._size = seq, head, self._size + len(data)
        return records

    def _cut_back(self) -> None:
        """Remove the bytes of a failed append. Truncating frees space, so it works on a
        full disk; if even that fails, the next start repairs the torn line."""
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, self._size)
            os.fsync(self._fd)
        except OSError:
            log.critical("could not cut %s back to its last whole record", self.path)
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def good_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of the chain up to where it breaks (all of them when it is whole)."""
    result = verify(path)
    for record in read_records(path):
        if record.get("seq", 0) > result.last_seq:
            return
        yield record


def archive(folder: Path) -> tuple[Path | None, AuditLog]:
    """Move the audit log aside (kept as evidence) and start a new chain whose first record
    names the old file and its last good hash. Returns (archived path, the new open log).

    The state file may be older than the log (it is a snapshot; a start replays the newer
    records). Those good records are folded into it first, so that nothing durable, a trip
    above all, is lost with the old chain; the state file then starts the new chain."""
    log = AuditLog(folder)
    state = StateFile(folder)
    data = state.load()
    archived = None
    details: dict[str, Any] = {"archived_problem": "the audit log was missing"}
    if log.path.exists():
        result = verify(log.path)
        folded = []
        if data is not None:
            for record in good_records(log.path):
                if record["seq"] > data["audit_seq"] and record.get("after") is not None:
                    data["routes"][record["route"]] = record["after"]
                    folded.append(record["seq"])
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        archived = log.path.with_name(f"audit-{stamp}.jsonl")
        os.replace(log.path, archived)
        _fsync_folder(folder)
        details = {
            "archived": archived.name,
            "archived_records": result.records,
            "archived_head": result.head,
            "archived_problem": result.problem,
            "archived_line": result.line,
            "folded_into_state": folded,
        }
    log.open()
    log.append({"action": "audit_started", "actor": "operator", "details": details})
    if data is not None:  # the new chain starts here: nothing in it is missing from the state
        state.save({**data, "audit_seq": log.seq})
    return archived, log
