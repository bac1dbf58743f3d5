"""`bundle-router audit` on a real audit log: print, verify, archive (the log itself is tested
in process in tests/unit/control/test_durable.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import yaml

from tests.unit.control.test_durable import _log_with


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args], capture_output=True, text=True, timeout=60
    )


def test_audit_command_prints_verifies_and_archives(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _log_with(state_dir, 3).close()
    config = tmp_path / "router.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": "state",
                "providers": {"p": {"dialect": "openai", "base_url": "http://127.0.0.1:1"}},
                "routes": {"r": {"bundles": "b", "active": "v1"}},
            }
        )
    )
    shown = _cli("audit", "--config", str(config), "--last", "2")
    assert shown.returncode == 0 and shown.stdout.count("by alice") == 2, shown
    as_json = _cli("audit", "--config", str(config), "--json")
    assert [orjson.loads(line)["seq"] for line in as_json.stdout.splitlines()] == [1, 2, 3]
    ok = _cli("audit", "--config", str(config), "--verify")
    assert ok.returncode == 0 and "OK, 3 records" in ok.stdout
    path = state_dir / "audit.jsonl"
    path.write_bytes(path.read_bytes().replace(b"step 1", b"step 9"))
    broken = _cli("audit", "--config", str(config), "--verify")
    assert broken.returncode == 1 and "BROKEN at line 2" in broken.stderr
    archived = _cli("audit", "--config", str(config), "--archive")
    assert archived.returncode == 0 and "started a new chain" in archived.stdout
    assert _cli("audit", "--config", str(config), "--verify").returncode == 0
