"""Start-up that does not end in serving. A router whose listen or metrics_listen address is
taken exits at once with a message that names the key, the address and the fix: no
traceback, no hang, nothing left open. In fleet mode too, where the fleet's loops were
already running when the bind failed (the CI run that lost the fleet demo found a sidecar
hanging there, silent, for good). And a SIGTERM or SIGINT during start-up (a pod deleted while
its sidecar waits for Redis) stops it cleanly, as one after it does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from router.dev.ports import free_port
from testing.fleet import REDIS_ENV, fleet_block
from testing.redis import RedisServer, require_redis
from testing.servers import REPO, router_config

EXIT_WITHIN = 20.0  # seconds; a sidecar with no fleet state waits 5 s for it first


@pytest.fixture
def taken() -> Iterator[str]:
    """An address another process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def serve(
    tmp: Path, config: dict[str, object], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    path = tmp / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **env},
        timeout=EXIT_WITHIN,
        check=False,
    )


def assert_told(result: subprocess.CompletedProcess[str], key: str, address: str) -> None:
    assert result.returncode == 2, result.stderr
    assert f"{key}: {address} is in use by another process" in result.stderr, result.stderr
    assert f"fix: stop the process that listens there, or choose a free address for {key}" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Unclosed" not in result.stderr, result.stderr


@pytest.mark.parametrize("key", ["listen", "metrics_listen"])
def test_a_taken_address_stops_the_router_with_the_fix(
    tmp_path: Path, taken: str, key: str
) -> None:
    config = router_config("http://127.0.0.1:9", **{key: taken})
    assert_told(serve(tmp_path, config, {}), key, taken)


def test_a_fleet_sidecar_on_a_taken_address_stops_too(tmp_path: Path, taken: str) -> None:
    require_redis()
    with RedisServer(tmp_path / "redis") as redis:
        block = fleet_block("listen-test", "sidecar-0", "us-east", "paid")
        config = router_config("http://127.0.0.1:9", fleet=block, metrics_listen=taken)
        result = serve(tmp_path, config, {REDIS_ENV: redis.url})
    assert_told(result, "metrics_listen", taken)


def test_a_taken_fake_provider_address_is_told_as_the_command_lines(
    tmp_path: Path, taken: str
) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(router_config("http://127.0.0.1:9")))
    result = subprocess.run(
        [sys.executable, "-m", "router", "serve", "--config", str(path), "--fake-provider", taken],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=EXIT_WITHIN,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    told = f"the command line: the fake provider's address: {taken} is in use by another process"
    assert told in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_start_up_stops_the_router_cleanly(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """A sidecar with no last-known-good waits up to first_sync for Redis (here: nobody
    listens on its port) before it serves; a signal meanwhile stops it at once, cleanly."""
    block = fleet_block("startup-test", "sidecar-0", "us-east", "paid", first_sync="30s")
    config = router_config("http://127.0.0.1:9", fleet=block)
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "router.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(path)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, REDIS_ENV: f"redis://127.0.0.1:{free_port()}/0"},
        )
        try:
            deadline = time.monotonic() + EXIT_WITHIN
            while "Redis not reachable yet" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert process.poll() is None, log.read_text()
            process.send_signal(sig)
            code = process.wait(timeout=EXIT_WITHIN)
        finally:
            process.kill()
            process.wait()
    text = log.read_text()
    assert code == 0, text
    assert "stopped during start-up" in text, text
    assert "Traceback" not in text and "Unclosed" not in text, text
    assert not (tmp_path / "run" / "admin.sock").exists()
