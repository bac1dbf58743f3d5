"""`bundle-router demo --fleet` end to end (a real redis-server, 24 real processes): the story's
key lines, and no process of it left behind, after the end and after a Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from testing.redis import require_redis
from testing.servers import REPO

DEMO = [sys.executable, "-m", "router", "demo", "--fleet"]


def left_behind(workspace: str, redis_address: str) -> list[str]:
    """The processes still running from the demo's workspace, or the Redis it started (which
    names itself by its address, not its config)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # it exited meanwhile
            continue
        if workspace in command or redis_address in command:
            found.append(f"{entry.name}: {command}")
    return found


def places(out: str) -> tuple[str, str]:
    workspace = re.search(r"workspace +(\S+)", out)
    redis = re.search(r"redis-server +redis://(\S+)/0", out)
    assert workspace and redis, out
    return workspace.group(1), redis.group(1)


def run_demo(*args: str) -> str:
    require_redis()
    done = subprocess.run(
        [*DEMO, "--bake", "2", *args], capture_output=True, text=True, timeout=240, cwd=REPO
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_fleet_demo_halts_in_us_east_reverse_rolls_and_leaves_nothing_behind() -> None:
    out = run_demo()
    assert "24 processes up in" in out
    assert "$ bundle-router rollout start refund-agent" in out
    assert "canary running: v1.5 at 50% in pool canary" in out
    assert re.search(r"^waves running: wave 1/\d+ \(us-west\)$", out, re.M), out
    assert ">>> injecting a regression in us-east" in out
    # The halt names us-east, before its next wave, and the reverse-roll follows. (The wave's
    # number depends on the plan: a sidecar starved of CPU for 3 s when the waves are planned
    # is in none; and a us-east wave may bake before its errors are sure.)
    assert re.search(
        r"^HALTED in us-east: us-east: guardrail error_rate .* halted before wave \d+;", out, re.M
    ), out
    assert "reverse-rolled in " in out
    # From the agents' X-Bundle-Version headers: who served v1.5, who never did.
    for region, most in (("us-west", 5), ("us-east", 4)):
        served = rf"^  {region} .* [1-{most}]/5 sidecars served v1\.5; all back on v1\.4$"
        assert re.search(served, out, re.M), out
    for region in ("eu", "apac"):
        assert re.search(rf"^  {region} +v1\.4 +\d+ +v1\.5 +0 +never received v1\.5$", out, re.M), (
            out
        )
    assert "never received v1.5: eu, apac" in out
    # The blast radius over time, and the controller's audit trail of the rollout.
    assert "controller, last 60 s" in out and "agents, last second" in out
    assert re.search(r"wave_halt +by guardrail: us-east: guardrail error_rate", out), out
    assert len(re.findall(r" wave_reverse +by guardrail: ", out)) == 2, out
    assert "refund-agent wave_halt by guardrail at " in out  # the webhook's announcement
    assert "all 24 stopped" in out
    assert left_behind(*places(out)) == []


def test_halt_only_keeps_the_flipped_sidecars_flipped() -> None:
    out = run_demo("--halt-only")
    assert "auto_rollback: halt only" in out
    assert re.search(r"^HALTED in us-east: ", out, re.M), out
    assert "halt only: the flipped sidecars stay flipped until a person decides" in out
    for region, most in (("us-west", 5), ("us-east", 4)):
        served = rf"^  {region} .* [1-{most}]/5 sidecars served v1\.5; now on v1\.5: {region}-"
        assert re.search(served, out, re.M), out
    assert "never received v1.5: eu, apac" in out
    assert " wave_reverse " not in out
    assert "all 24 stopped" in out
    assert left_behind(*places(out)) == []


def test_ctrl_c_while_the_sidecars_start_stops_every_process() -> None:
    require_redis()
    demo = subprocess.Popen(DEMO, stdout=subprocess.PIPE, text=True, cwd=REPO)
    lines = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # bounded: the demo prints a few lines, then ends
            lines.append(line)
            if line.startswith("  controller "):  # the sidecars are being started now
                break
        workspace, redis = places("".join(lines))
        assert left_behind(workspace, redis), "".join(lines)  # the check sees them running
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(lines) + rest
    assert demo.returncode == 130, out
    assert "interrupted" in out and "all 24 stopped" in out
    assert left_behind(workspace, redis) == []


def test_without_redis_server_it_says_how_to_get_it_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # an empty folder: no redis-server on it
    done = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "redis-server is not on PATH" in done.stderr
    assert "apt-get install redis-server" in done.stderr
    assert "docs/fleet.md" in done.stderr
    assert "workspace" not in done.stdout  # nothing was started
