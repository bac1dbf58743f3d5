"""The admin CLI against a real router subprocess: rollback, promote, deploy, weights,
drill, reload, who may use the socket, and the audit trail of it all."""

from __future__ import annotations

import asyncio
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from router.admin.client import call
from testing.bundles import new_version, own_bundles, with_bundles
from testing.servers import REPO, ProviderProcess, Router, router_config
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.traffic import burst, served_by


def cli(router: Router, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--config", str(router.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def ok(router: Router, *args: str) -> str:
    done = cli(router, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def admin_router(fake: ProviderProcess, start_router: Callable[..., Router]) -> Router:
    return start_router(router_config(fake.url))


async def test_rollback_drains_the_canary_then_pops_the_warm_stack(admin_router: Router) -> None:
    router = admin_router
    out = ok(router, "rollback", "refund-agent", "--reason", "canary looks off")
    assert "drained candidate v1.5" in out
    assert served_by(await burst(router.url, 100), "v1.5") == 0

    refused = cli(router, "rollback", "refund-agent")
    assert refused.returncode == 1
    assert "nothing is warm to roll back to" in refused.stderr and "--force" in refused.stderr

    ok(router, "weights", "refund-agent", "v1.4=50", "v1.5=50")  # a person re-enables it
    ok(router, "promote", "refund-agent")
    assert served_by(await burst(router.url, 100), "v1.5") == 100
    status = orjson.loads(ok(router, "status", "--json"))["routes"]["refund-agent"]
    assert status["active"] == "v1.5" and status["warm"] == ["v1.4"]

    out = ok(router, "rollback", "refund-agent", "--reason", "v1.5 answers badly")
    assert "v1.5 rolled back; v1.4 is active at 100%" in out
    results = await burst(router.url, 200, concurrency=50)
    assert served_by(results, "v1.4") == 200, results
    status = orjson.loads(ok(router, "status", "--json"))["routes"]["refund-agent"]
    roles = {v["version"]: v["role"] for v in status["versions"]}
    assert roles == {"v1.4": "active", "v1.5": "rolled_back"} and status["warm"] == []


async def test_rollback_to_a_named_version_needs_force(admin_router: Router) -> None:
    refused = cli(admin_router, "rollback", "refund-agent", "--to", "v1.5")
    assert refused.returncode == 1 and "add --force" in refused.stderr
    ok(admin_router, "rollback", "refund-agent")  # drain the canary first
    ok(admin_router, "rollback", "refund-agent", "--to", "v1.5", "--force")
    assert served_by(await burst(admin_router.url, 50), "v1.5") == 50


async def test_deploy_promote_and_a_changed_digest_is_refused(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    folder = own_bundles(tmp_path)
    router = start_router(with_bundles(router_config(fake.url), folder))
    refused = cli(router, "deploy", "refund-agent", "v1.6")
    assert refused.returncode == 1 and "no bundle" in refused.stderr

    new_version(folder, "refund-agent", "v1.5", "v1.6")
    refused = cli(router, "deploy", "refund-agent", "v1.6")
    assert "candidate v1.5 is live at 5%" in refused.stderr
    ok(router, "rollback", "refund-agent")
    out = ok(router, "deploy", "refund-agent", "v1.6", "--reason", "new refund policy")
    assert "candidate v1.6 (live)" in out
    assert served_by(await burst(router.url, 100), "v1.6") == 0  # deployed at weight 0
    ok(router, "weights", "refund-agent", "v1.4=90", "v1.6=10")
    ok(router, "promote", "refund-agent")
    results = await burst(router.url, 100)
    assert served_by(results, "v1.6") == 100, results

    prompt = folder / "refund-agent" / "v1.5" / "prompt.txt"
    prompt.write_text(prompt.read_text() + "\nA silent edit.\n")
    refused = cli(router, "deploy", "refund-agent", "v1.5")
    assert refused.returncode == 1
    assert "v1.5 changed since it was deployed" in refused.stderr
    assert "bump the version" in refused.stderr


async def test_weights_must_name_known_versions_and_sum_to_100(admin_router: Router) -> None:
    for args, message in [
        (("v1.4=90", "v1.5=5"), "add up to 95%, not 100%"),
        (("v1.4=90", "v9=10"), "has no version 'v9'"),
        (("v1.4",), "is not VERSION=PERCENT"),
    ]:
        refused = cli(admin_router, "weights", "refund-agent", *args)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    ok(admin_router, "weights", "refund-agent", "v1.4=99.5", "v1.5=0.5")
    state = admin_router.rollouts()["refund-agent"]
    assert state["weights"] == {"v1.4": 9950, "v1.5": 50}


async def test_an_override_never_reaches_a_rolled_back_version(admin_router: Router) -> None:
    """support-agent allows X-Bundle-Version; once its canary is rolled back, pinning it is
    refused in the same swap that drained it."""

    def pinned(version: str) -> httpx.Response:
        return httpx.post(
            f"{admin_router.url}/v1/chat/completions",
            json={"model": "support-agent", "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Bundle-Version": version},
            timeout=10,
        )

    answer = await asyncio.to_thread(pinned, "v2.1")
    assert answer.headers["X-Bundle-Version"] == "v2.1"
    ok(admin_router, "rollback", "support-agent")
    refused = await asyncio.to_thread(pinned, "v2.1")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "version_not_live"
    assert "v2.0" in refused.json()["error"]["message"]
    answer = await asyncio.to_thread(pinned, "v2.0")
    assert answer.status_code == 200 and answer.headers["X-Bundle-Version"] == "v2.0"


def _canary_samples(router: Router) -> int:
    verdicts = router.rollouts()["refund-agent"]["verdicts"]
    return int(next(v["samples"] for v in verdicts if v["rule"] == "error_rate"))


async def test_a_drill_records_its_duration(admin_router: Router) -> None:
    await burst(admin_router.url, 200)
    samples = _canary_samples(admin_router)
    assert samples > 0
    refused = cli(admin_router, "drill", "refund-agent")
    assert refused.returncode == 1 and "environment: prod" in refused.stderr
    out = ok(admin_router, "drill", "refund-agent", "--force", "--actor", "monthly drill")
    assert "rolled back to v1.4" in out and "rolled forward" in out
    records = admin_router.audit()
    drill, forward = records[-2], records[-1]
    assert drill["action"] == "drill" and drill["after"]["weights"]["v1.5"] == 0
    assert forward["action"] == "drill_forward"
    assert forward["after"]["weights"] == {"v1.4": 9500, "v1.5": 500}  # rolled forward
    timing = forward["details"]["drill"]
    assert 0 < timing["command_to_swap_seconds"] <= timing["command_to_durable_seconds"]
    assert timing["command_to_durable_seconds"] <= timing["command_to_first_request_seconds"]
    metrics = scrape(admin_router)
    count = value(metrics, "router_rollback_duration_seconds_count", route="refund-agent")
    assert count == 1.0
    status = orjson.loads(ok(admin_router, "status", "--json"))["routes"]["refund-agent"]
    assert status["drills"]["count"] == 1
    assert status["drills"]["median_seconds"] == timing["command_to_first_request_seconds"]
    assert "drills: median" in ok(admin_router, "status")
    assert _canary_samples(admin_router) == samples  # the canary's evidence survives its drill


async def test_reload_with_a_broken_bundle_keeps_the_old_config(
    fake: ProviderProcess, start_router: Callable[..., Router], tmp_path: Path
) -> None:
    folder = own_bundles(tmp_path)
    router = start_router(with_bundles(router_config(fake.url), folder))
    bundle = folder / "support-agent" / "v2.1" / "bundle.yaml"
    good = bundle.read_text()
    bundle.write_text(good.replace("model: gpt-5.4-2026-03-05", "model: gpt-5.4-latest"))
    refused = cli(router, "reload")
    assert refused.returncode == 1
    assert "nothing was changed" in refused.stderr and "latest" in refused.stderr
    results = await burst(router.url, 50)
    assert results.total() == served_by(results, "v1.4") + served_by(results, "v1.5") == 50

    bundle.write_text(good)
    new_version(folder, "refund-agent", "v1.5", "v1.6")
    out = ok(router, "reload", "--reason", "new bundle folder")
    assert "'refund-agent': ['v1.6']" in out
    state = router.rollouts()["refund-agent"]
    assert state["weights"]["v1.6"] == 0 and state["weights"]["v1.5"] == 500  # live wins
    assert router.audit()[-1]["action"] == "reload"


async def test_a_stop_soon_after_a_reload_closes_the_pools_it_replaced(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    """A replaced provider pool stays open a minute for requests still on it; a stop within
    that minute closes it rather than leaving it to the garbage collector."""
    router = start_router(router_config(fake.url))
    assert (await burst(router.url, 10)).total() == 10  # the first pool has connections
    config = dict(router.config)
    config["providers"]["anthropic"]["max_connections"] = 8  # a new pool for anthropic
    router.config_path.write_text(yaml.safe_dump(config))
    out = ok(router, "reload")
    assert "'anthropic'" in out, out  # providers_replaced
    assert (await burst(router.url, 10)).total() == 10
    assert router.stop() == 0
    log = router.process.output()
    assert "Unclosed" not in log, log


def test_the_cli_fails_clearly(admin_router: Router, tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "router", "status", "--socket", str(tmp_path / "nope.sock")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 1 and "no admin socket at" in missing.stderr
    refused = cli(admin_router, "promote", "no-such-route")
    assert refused.returncode == 1 and "unknown route 'no-such-route'" in refused.stderr


def test_a_uid_outside_the_allowlist_is_refused(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    config = router_config(fake.url)
    config["admin_allow"] = [65534]  # only nobody: the router's own root is not on the list
    router = start_router(config)
    refused = cli(router, "rollback", "refund-agent")
    assert refused.returncode == 1
    assert "root (uid 0) may not use this router's admin socket" in refused.stderr
    assert router.rollouts()["refund-agent"]["weights"]["v1.5"] == 500  # nothing happened


@pytest.mark.skipif(os.getuid() != 0, reason="dropping to nobody needs root")
def test_nobody_cannot_reach_the_socket(admin_router: Router) -> None:
    """The socket is 0600 in a 0700 folder: another user is refused before SO_PEERCRED."""
    socket_path = admin_router.tmp / "run" / "admin.sock"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    assert socket_path.parent.stat().st_mode & 0o777 == 0o700
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    done = subprocess.run(
        [python, "-m", "router", "rollback", "refund-agent", "--socket", str(socket_path)],
        capture_output=True,
        text=True,
        timeout=30,
        user="nobody",
        cwd="/",
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done
    assert "permission denied" in done.stderr and "router's own user and root" in done.stderr
    assert admin_router.rollouts()["refund-agent"]["weights"]["v1.5"] == 500


def test_every_change_is_audited_with_its_actor_and_reason(admin_router: Router) -> None:
    steps = [
        ("weights", "refund-agent", "v1.4=80", "v1.5=20", "--reason", "more canary"),
        ("rollback", "refund-agent", "--reason", "canary errors"),
        ("weights", "refund-agent", "v1.4=90", "v1.5=10", "--reason", "try again"),
        ("promote", "refund-agent", "--reason", "bake passed"),
    ]
    for step in steps:
        ok(admin_router, *step, "--actor", "oncall-alex")
    records = [r for r in admin_router.audit() if r["action"] != "init"]
    assert [(r["action"], r["actor"], r["reason"]) for r in records] == [
        ("weights", "root (oncall-alex)", "more canary"),
        ("rollback", "root (oncall-alex)", "canary errors"),
        ("weights", "root (oncall-alex)", "try again"),
        ("promote", "root (oncall-alex)", "bake passed"),
    ]
    assert all(r["before"] and r["after"] for r in records)


async def under_load(
    router: Router, requests: int, change: Callable[[Path, int], object]
) -> tuple[int, int]:
    """`change(admin socket, i)` every 100 ms while `requests` agent requests run; returns
    (changes made, requests answered 200)."""
    socket_path = router.tmp / "run" / "admin.sock"
    stop = threading.Event()
    made = 0

    def keep_changing() -> None:
        nonlocal made
        while not stop.is_set():
            change(socket_path, made)
            made += 1
            time.sleep(0.1)

    changer = threading.Thread(target=keep_changing)
    changer.start()
    try:
        results = await burst(router.url, requests, concurrency=30)
    finally:
        stop.set()
        changer.join(timeout=30)
    return made, sum(count for key, count in results.items() if key.startswith("200 "))


async def test_weight_flips_every_100ms_under_load_lose_no_request(admin_router: Router) -> None:
    def flip(socket_path: Path, i: int) -> None:
        share = (i % 5) * 10
        weights = {"v1.4": 100 - share, "v1.5": share}
        call(socket_path, "POST", "/weights", {"route": "refund-agent", "weights": weights})

    flips, answered = await under_load(admin_router, 3000, flip)
    assert flips >= 5 and answered == 3000


def test_audit_follow_prints_new_records_as_they_land(admin_router: Router) -> None:
    command = ["audit", "--follow", "--config", str(admin_router.config_path)]
    with subprocess.Popen(
        [sys.executable, "-m", "router", *command], stdout=subprocess.PIPE, text=True, cwd=REPO
    ) as follower:
        lines: queue.Queue[str] = queue.Queue()

        def read_lines() -> None:
            for printed in follower.stdout or ():
                lines.put(printed)

        reader = threading.Thread(target=read_lines)
        reader.start()
        try:
            first = [lines.get(timeout=10) for _ in range(2)]  # the first-start records
            assert all(" init " in line for line in first), first
            ok(admin_router, "rollback", "refund-agent", "--reason", "seen by the follower")
            line = lines.get(timeout=10)
            assert " rollback " in line and "seen by the follower" in line
        finally:
            follower.terminate()
            reader.join(timeout=10)


def test_status_reads_at_a_glance(admin_router: Router) -> None:
    text = ok(admin_router, "status")
    assert "refund-agent  (anthropic, guarded)" in text
    assert "v1.5      candidate       5.00%" in text
    assert "guardrails: error_rate waiting (0/10)" in text
    assert "last change: init by config" in text


async def test_reloads_under_load_lose_no_request(admin_router: Router) -> None:
    def reload(socket_path: Path, i: int) -> None:
        call(socket_path, "POST", "/reload", {"reason": f"under load, {i}"})

    reloads, answered = await under_load(admin_router, 2000, reload)
    assert reloads >= 3 and answered == 2000
