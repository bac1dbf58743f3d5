"""Durable state and the hash-chained audit log: writes, verification, repair, archive
(the `audit` command on them is in tests/e2e/control/test_durable.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.control.durable import (
    AuditLog,
    StateError,
    StateFile,
    archive,
    read_records,
    verify,
    write_durably,
)


def _log_with(folder: Path, count: int) -> AuditLog:
    log = AuditLog(folder)
    log.open()
    for i in range(count):
        log.append({"action": "weights", "actor": "alice", "route": "r", "reason": f"step {i}"})
    return log


def test_state_file_is_replaced_whole(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    assert state.load() is None
    state.save({"audit_seq": 1, "routes": {"r": {"active": "v1"}}})
    state.save({"audit_seq": 2, "routes": {"r": {"active": "v2"}}})
    assert state.load() == {"audit_seq": 2, "routes": {"r": {"active": "v2"}}}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == 0o600


def test_a_state_file_written_by_something_else_is_refused(tmp_path: Path) -> None:
    write_durably(tmp_path / "state.json", b"{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        StateFile(tmp_path).load()


def test_records_chain_and_verify(tmp_path: Path) -> None:
    log = _log_with(tmp_path, 3)
    log.close()
    records = list(read_records(log.path))
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[1]["prev"] == records[0]["hash"]
    result = verify(log.path)
    assert result.ok and result.records == 3 and result.head == records[-1]["hash"]
    reopened = AuditLog(tmp_path)
    reopened.open()
    assert reopened.append({"action": "x"})["seq"] == 4  # the chain continues after a restart
    reopened.close()


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda lines: [lines[0], lines[1].replace(b"alice", b"mallory"), lines[2]], "edited"),
        (lambda lines: [lines[0], lines[2]], "prev"),
        (lambda lines: [lines[1], lines[0], lines[2]], "prev"),
    ],
    ids=["edited", "dropped", "reordered"],
)
def test_tampering_breaks_the_chain_and_the_router_refuses_to_start(
    tmp_path: Path, edit: object, problem: str
) -> None:
    _log_with(tmp_path, 3).close()
    path = tmp_path / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(edit(lines)))  # type: ignore[operator]
    result = verify(path)
    assert not result.ok and problem in (result.problem or "")
    with pytest.raises(StateError, match=r"broken at line \d.*bundle-router audit --archive"):
        AuditLog(tmp_path).open()


def test_a_torn_last_line_is_cut_at_start(tmp_path: Path) -> None:
    _log_with(tmp_path, 2).close()
    path = tmp_path / "audit.jsonl"
    with path.open("ab") as file:
        file.write(b'{"seq": 3, "at": "2026-')  # the crash came mid-write
    log = AuditLog(tmp_path)
    assert "removed a torn last audit line" in (log.open() or "")
    assert log.append({"action": "x"})["seq"] == 3
    log.close()
    assert verify(path).ok and verify(path).records == 3


def test_a_complete_record_missing_only_its_newline_is_kept(tmp_path: Path) -> None:
    _log_with(tmp_path, 2).close()
    path = tmp_path / "audit.jsonl"
    path.write_bytes(path.read_bytes()[:-1])
    log = AuditLog(tmp_path)
    assert "completed" in (log.open() or "")
    log.close()
    assert verify(path).records == 2


def test_archive_keeps_the_old_log_and_starts_a_new_chain(tmp_path: Path) -> None:
    _log_with(tmp_path, 2).close()
    path = tmp_path / "audit.jsonl"
    path.write_bytes(path.read_bytes().replace(b"alice", b"mallory", 1))
    archived, log = archive(tmp_path)
    log.close()
    assert archived is not None and archived.exists()
    first = next(read_records(path))
    assert first["action"] == "audit_started"
    assert first["details"]["archived"] == archived.name and first["details"]["archived_line"] == 1
    assert verify(path).ok


def test_archive_folds_records_newer_than_the_state_file_into_it(tmp_path: Path) -> None:
    """The state file is a snapshot; a trip recorded after it, before the chain broke, must
    survive the archive, or the tripped canary would come back at the next start."""
    live = {"active": "v1", "candidate": "v2", "candidate_state": "live"}
    tripped = {**live, "candidate_state": "rolled_back"}
    log = AuditLog(tmp_path)
    log.open()
    log.append({"action": "init", "route": "r", "after": {**live, "weights": {"v1": 5, "v2": 5}}})
    StateFile(tmp_path).save({"audit_seq": 1, "routes": {"r": {**live, "weights": {}}}})
    log.append({"action": "trip", "route": "r", "after": tripped})
    log.append({"action": "weights", "route": "r", "after": {"edited": "later"}})
    log.close()
    path = tmp_path / "audit.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], lines[2].replace(b"later", b"forged")]))
    archive(tmp_path)[1].close()
    state = StateFile(tmp_path).load()
    assert state is not None and state["routes"]["r"] == tripped  # the trip, not the forgery
    assert state["audit_seq"] == 1  # the new chain's first record
    assert next(read_records(path))["details"]["folded_into_state"] == [2]
