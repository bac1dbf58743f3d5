"""A rollback is never lost to a disk fault: real full disks (a tiny tmpfs under state_dir),
real routers, real restarts. A trip or a manual rollback on a full disk stays in force in
memory, is reported, and is written as soon as the disk takes it; every other change is
refused whole with a JSON error naming state_dir; guardrail checking never stops."""

from __future__ import annotations

import asyncio
import copy
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router.control.durable import AuditLog, DurabilityError, read_records, verify
from testing.bundles import new_version, own_bundles, with_bundles
from testing.servers import ProviderProcess, Router
from tests.e2e.admin.test_api import cli
from tests.e2e.admin.test_metrics import scrape, value
from tests.e2e.control.test_core import CANARY_MODEL, drive_until_trip, half_canary
from tests.e2e.disk import PAGE, TinyDisk, tiny_disk
from tests.e2e.traffic import burst, served_by

DURABLE_WITHIN = 15.0  # seconds to wait for the retry loop once the disk has room again


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[TinyDisk]:
    with tiny_disk(tmp_path / "disk") as mounted:
        yield mounted


def on_disk(config: dict[str, Any], disk: TinyDisk) -> dict[str, Any]:
    config["state_dir"] = str(disk.path / "state")
    return config


def two_canaries(provider_url: str, disk: TinyDisk) -> dict[str, Any]:
    """refund-agent and refund-b (the same bundles) with their canaries at 50 %."""
    config = half_canary(provider_url)
    config["routes"]["refund-b"] = copy.deepcopy(config["routes"]["refund-agent"])
    return on_disk(config, disk)


def durability(router: Router) -> dict[str, Any]:
    status = httpx.get(f"{router.metrics_url}/readyz", timeout=5)
    assert status.status_code == 200, status.text  # degraded still routes: it stays ready
    answer: dict[str, Any] = status.json()
    return answer


def align_audit_log(router: Router, route: str = "refund-agent") -> None:
    """Make the audit log end exactly on a page, so that the next record needs a new page
    and fails at once on a full disk (otherwise a small record may fit in the slack of the
    log's last page). Two weights changes of the same shape: the first measures a record,
    the second, with its reason padded, fills the page."""
    path = router.state_dir / "audit.jsonl"
    weights = [f"{v}={p / 100:g}" for v, p in router.rollouts()[route]["weights"].items()]
    size = path.stat().st_size
    assert cli(router, "weights", route, *weights, "--reason=x").returncode == 0
    record = path.stat().st_size - size
    room = PAGE - path.stat().st_size % PAGE
    if room < record:
        room += PAGE
    padded = "x" * (room - record + 1)
    assert cli(router, "weights", route, *weights, f"--reason={padded}").returncode == 0
    assert path.stat().st_size % PAGE == 0


def wait_durable(router: Router) -> None:
    deadline = time.monotonic() + DURABLE_WITHIN
    while time.monotonic() < deadline:
        if durability(router)["durability"] == "ok":
            return
        time.sleep(0.2)
    raise AssertionError(f"still degraded after {DURABLE_WITHIN}s: {durability(router)}")


async def test_a_trip_on_a_full_disk_stays_in_force_and_the_guardrails_keep_watching(
    fake: ProviderProcess, start_router: Callable[..., Router], disk: TinyDisk
) -> None:
    router = start_router(two_canaries(fake.url, disk))
    fake.behave(CANARY_MODEL, error_rate=1.0, error_kind="500")
    align_audit_log(router)
    disk.fill()
    trip = await drive_until_trip(router, "refund-agent")

    # In force: the canary is drained, and everyone is told it is not durable yet.
    after = await burst(router.url, 100)
    assert served_by(after, "v1.5") == 0, after
    health = durability(router)
    assert health["durability"] == "degraded", health
    pending = health["durability_detail"]["changes_not_durable"]
    assert [(c["route"], c["action"]) for c in pending] == [("refund-agent", "trip")]
    assert "No space left on device (ENOSPC)" in health["durability_detail"]["error"]
    assert str(disk.path / "state") in health["durability_detail"]["error"]
    metrics = scrape(router)
    assert value(metrics, "router_state_degraded") == 1.0
    rule = trip["rule"]
    assert (
        value(
            metrics,
            "router_guardrail_trips_total",
            route="refund-agent",
            version="v1.5",
            rule=rule,
        )
        == 1.0
    )
    status = cli(router, "status")
    assert status.returncode == 0 and "DURABILITY DEGRADED" in status.stdout, status
    assert "trip" not in [r["action"] for r in router.audit()]

    # Room again: the trip is written by the retry loop, without anyone asking.
    disk.free()
    wait_durable(router)
    assert router.audit()[-1]["action"] == "trip"
    assert value(scrape(router), "router_state_degraded") == 0.0

    # The guardrails never stopped: the other route's canary trips too.
    await drive_until_trip(router, "refund-b")
    assert "durability restored" in router.process.output()

    # A restart brings neither canary back.
    router.stop()
    fake.reset()
    router.start()
    for route in ("refund-agent", "refund-b"):
        assert router.rollouts()[route]["candidate_state"] == "rolled_back"
        results = await burst(router.url, 100, route=route)
        assert served_by(results, "v1.5") == 0, results
    assert verify(router.state_dir / "audit.jsonl").ok


def admin_router(
    fake: ProviderProcess, start_router: Callable[..., Router], disk: TinyDisk, tmp_path: Path
) -> Router:
    config = with_bundles(on_disk(half_canary(fake.url, 10), disk), own_bundles(tmp_path))
    return start_router(config)


REFUSED_ON_A_FULL_DISK = [
    ("weights", "refund-agent", "v1.4=80", "v1.5=20"),
    ("promote", "refund-agent"),
    ("rollout", "start", "refund-agent"),
    ("drill", "refund-agent", "--force"),
]


async def test_every_admin_change_on_a_full_disk_is_all_or_nothing(
    fake: ProviderProcess, start_router: Callable[..., Router], disk: TinyDisk, tmp_path: Path
) -> None:
    router = admin_router(fake, start_router, disk, tmp_path)
    align_audit_log(router)
    before = router.rollouts()["refund-agent"]
    records = len(router.audit())
    disk.fill()

    for command in REFUSED_ON_A_FULL_DISK:
        done = cli(router, *command)
        assert done.returncode == 1, (command, done.stdout)
        assert "no JSON" not in done.stderr, done.stderr
        assert "ENOSPC" in done.stderr and str(disk.path / "state") in done.stderr, done.stderr
        assert "Nothing was changed" in done.stderr, done.stderr
        now = router.rollouts()["refund-agent"]
        assert (now["weights"], now["active"], now["candidate"], now["ramp"]) == (
            before["weights"],
            before["active"],
            before["candidate"],
            before["ramp"],
        ), command

    # reload that adds a route: refused, and the route does not serve
    config = dict(router.config)
    config["routes"] = {
        **config["routes"],
        "refund-c": copy.deepcopy(config["routes"]["refund-agent"]),
    }
    router.config_path.write_text(__import__("yaml").safe_dump(config))
    done = cli(router, "reload")
    assert done.returncode == 1 and "ENOSPC" in done.stderr, done.stderr
    answer = await asyncio.to_thread(
        httpx.post,
        f"{router.url}/v1/messages",
        json={
            "model": "refund-c",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert answer.status_code == 404, answer.text

    # rollback: takes effect at once, and says it is not durable yet
    done = cli(router, "rollback", "refund-agent", "--reason", "disk full drill")
    assert done.returncode == 0, done.stderr
    assert "WARNING" in done.stdout and "not durable yet" in done.stdout, done.stdout
    results = await burst(router.url, 100)
    assert served_by(results, "v1.5") == 0, results
    assert durability(router)["durability"] == "degraded"

    # deploy of a version new on disk (allowed now that the canary is rolled back):
    # refused, and not left loaded
    new_version(tmp_path / "bundles", "refund-agent", "v1.5", "v1.6")
    done = cli(router, "deploy", "refund-agent", "v1.6")
    assert done.returncode == 1 and "ENOSPC" in done.stderr, done.stderr
    status = orjson.loads(cli(router, "status", "--json").stdout)
    versions = [v["version"] for v in status["routes"]["refund-agent"]["versions"]]
    assert "v1.6" not in versions, versions

    assert len(router.audit()) == records  # nothing refused reached the log

    disk.free()
    wait_durable(router)
    actions = [r["action"] for r in router.audit()[records:]]
    assert actions == ["rollback"], actions

    # the refused reload can now be made, and everything survives a restart
    assert cli(router, "reload").returncode == 0
    router.stop()
    router.start()
    state = router.rollouts()
    assert state["refund-agent"]["candidate_state"] == "rolled_back"
    assert "refund-c" in state
    assert verify(router.state_dir / "audit.jsonl").ok


def _record_length(log_path: Path, scratch: Path, entry: dict[str, Any]) -> int:
    """The bytes `entry` takes when appended to the log at `log_path` (found on a copy)."""
    scratch.mkdir(exist_ok=True)
    shutil.copy(log_path, scratch / log_path.name)
    copy_log = AuditLog(scratch)
    copy_log.open()
    size = (scratch / log_path.name).stat().st_size
    copy_log.append(entry)
    copy_log.close()
    return (scratch / log_path.name).stat().st_size - size


@pytest.mark.parametrize("end", ["mid_page", "page_boundary"])
def test_a_short_or_failed_audit_write_is_cut_back_and_refused(
    disk: TinyDisk, tmp_path: Path, end: str
) -> None:
    """mid_page: the log's last page has room for part of the next record, and the disk
    has no free page, so the write is short. page_boundary: the log ends exactly on a page,
    so the write fails at once."""
    folder = disk.path / "state"
    folder.mkdir()
    log = AuditLog(folder)
    log.open()
    entry = {"action": "weights", "actor": "alice", "route": "r", "reason": "x"}
    for _ in range(3):
        log.append(entry)
    if end == "page_boundary":
        room = PAGE - log.path.stat().st_size % PAGE
        base = _record_length(log.path, tmp_path / "scratch", {**entry, "reason": ""})
        if room < base:
            room += PAGE
        log.append({**entry, "reason": "x" * (room - base)})
        assert log.path.stat().st_size % PAGE == 0
    else:
        assert log.path.stat().st_size % PAGE > 0
    disk.fill()
    size, seq = log.path.stat().st_size, log.seq
    big = {**entry, "reason": "y" * 5000}  # longer than any room left in the last page
    with pytest.raises(DurabilityError, match=r"ENOSPC.*state_dir is .*free space"):
        log.append(big)
    assert log.path.stat().st_size == size  # the torn bytes are gone
    assert verify(log.path).ok and log.seq == seq
    disk.free()
    assert log.append(big)["seq"] == seq + 1
    log.close()
    result = verify(log.path)
    assert result.ok and result.last_seq == seq + 1


async def test_a_weights_change_that_met_a_short_write_is_refused_and_the_router_restarts(
    fake: ProviderProcess, start_router: Callable[..., Router], disk: TinyDisk
) -> None:
    router = start_router(on_disk(half_canary(fake.url, 10), disk))
    assert (router.state_dir / "audit.jsonl").stat().st_size % PAGE > 0
    disk.fill()  # the log's last page has room for part of the record: a short write
    longer_than_a_page = "y" * PAGE
    done = cli(
        router, "weights", "refund-agent", "v1.4=70", "v1.5=30", f"--reason={longer_than_a_page}"
    )
    assert done.returncode == 1 and "ENOSPC" in done.stderr, done.stderr
    assert "audit record" not in done.stdout
    assert router.rollouts()["refund-agent"]["weights"] == {"v1.4": 9000, "v1.5": 1000}
    disk.free()
    ok = cli(router, "weights", "refund-agent", "v1.4=60", "v1.5=40")
    assert ok.returncode == 0, ok.stderr
    router.stop()
    router.start()  # the chain is whole: no torn record in the middle
    assert router.rollouts()["refund-agent"]["weights"] == {"v1.4": 6000, "v1.5": 4000}
    assert [r["action"] for r in read_records(router.state_dir / "audit.jsonl")][-1] == "weights"
    results = await burst(router.url, 20)
    assert sum(results.values()) == 20


def _refused_start(router: Router) -> str:
    with pytest.raises(RuntimeError) as caught:
        router.start()
    output = str(caught.value)
    assert "Traceback" not in output, output
    return output


def test_a_deleted_audit_log_stops_the_start_with_the_way_out(
    fake: ProviderProcess, start_router: Callable[..., Router]
) -> None:
    router = start_router(half_canary(fake.url))
    assert cli(router, "weights", "refund-agent", "v1.4=70", "v1.5=30").returncode == 0
    router.stop()
    (router.state_dir / "audit.jsonl").unlink()
    output = _refused_start(router)
    assert "audit.jsonl is missing" in output and "bundle-router audit --archive" in output
    archived = cli(router, "audit", "--archive")
    assert archived.returncode == 0, archived.stderr
    router.start()
    assert router.rollouts()["refund-agent"]["weights"] == {"v1.4": 7000, "v1.5": 3000}
    first = router.audit()[0]
    assert first["action"] == "audit_started"
    assert first["details"]["archived_problem"] == "the audit log was missing"


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (lambda s: s["routes"]["refund-agent"]["weights"].update({"v1.5": 6000}), "11000"),
        (lambda s: s["routes"]["refund-agent"].pop("active"), "active"),
        (lambda s: s.update(audit_seq="3"), "audit_seq"),
        (lambda s: s["routes"]["refund-agent"]["weights"].update({"v1.5": "500"}), "integer"),
    ],
    ids=["weights_over_100", "no_active", "string_audit_seq", "string_weight"],
)
def test_a_state_file_that_breaks_the_rules_stops_the_start_clearly(
    fake: ProviderProcess,
    start_router: Callable[..., Router],
    breakage: Callable[[dict[str, Any]], Any],
    problem: str,
) -> None:
    router = start_router(half_canary(fake.url))
    router.stop()
    path = router.state_dir / "state.json"
    state = orjson.loads(path.read_bytes())
    breakage(state)
    path.write_bytes(orjson.dumps(state))
    output = _refused_start(router)
    assert "state.json" in output and problem in output, output
    assert "Restore it from a backup, or move it away" in output, output


async def test_a_rollout_on_a_full_disk_pauses_never_and_aborts_at_once(
    fake: ProviderProcess, start_router: Callable[..., Router], disk: TinyDisk, tmp_path: Path
) -> None:
    router = admin_router(fake, start_router, disk, tmp_path)
    assert cli(router, "rollout", "start", "refund-agent").returncode == 0
    align_audit_log(router, "support-agent")  # the ramp owns refund-agent's weights
    disk.fill()
    paused = cli(router, "rollout", "pause", "refund-agent")
    assert paused.returncode == 1 and "ENOSPC" in paused.stderr, paused.stderr
    assert router.rollouts()["refund-agent"]["ramp"]["status"] == "running"
    aborted = cli(router, "rollout", "abort", "refund-agent")
    assert aborted.returncode == 0 and "not durable yet" in aborted.stdout, aborted.stdout
    state = router.rollouts()["refund-agent"]
    assert state["ramp"]["status"] == "aborted" and state["weights"]["v1.5"] == 0
    disk.free()
    wait_durable(router)
    router.stop()
    router.start()
    state = router.rollouts()["refund-agent"]
    assert state["ramp"]["status"] == "aborted" and state["weights"]["v1.5"] == 0
