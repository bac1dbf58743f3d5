"""The fleet tests' Redis harness itself: real redis-server processes that crash, restart with
or without their data, pause and require a password; a Sentinel; and the Partition forwarder
that cuts a client off Redis and heals."""

from __future__ import annotations

import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from testing.redis import MASTER_NAME, RedisServer, SentinelServer, require_redis
from tests.e2e.faults import Partition


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    require_redis()
    with RedisServer(tmp_path) as running:
        yield running


@pytest.fixture
def partition(server: RedisServer) -> Iterator[Partition]:
    running = Partition(server.port)
    yield running
    running.stop()


def client_at(port: int, timeout: float = 0.5, password: str | None = None) -> redis.Redis:
    """A client that tries once: a fault shows as the error itself, not after retries."""
    return redis.Redis(
        port=port,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )


def connected_clients(server: RedisServer, expected: int, seconds: float = 5.0) -> int:
    """How many clients besides this probe the server has, once that is `expected` or
    `seconds` have passed."""
    with server.client() as probe:
        deadline = time.monotonic() + seconds
        while (count := len(probe.client_list()) - 1) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return count


def open_connections(partition: Partition, expected: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while partition.open != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return partition.open


def test_a_persistent_server_keeps_its_data_through_kill_9_and_a_wipe_empties_it(
    tmp_path: Path,
) -> None:
    require_redis()
    with RedisServer(tmp_path, persist=True) as server:
        port = server.port
        server.client().set("epoch", "7")
        server.kill()
        assert not server.running
        server.start()
        assert server.port == port and server.client().get("epoch") == "7"
        server.kill()
        server.start(wipe=True)
        assert server.client().get("epoch") is None
        assert server.client().dbsize() == 0


def test_an_in_memory_server_comes_back_empty_and_stops_cleanly(server: RedisServer) -> None:
    server.client().set("epoch", "7")
    server.kill()
    server.start()
    assert server.client().get("epoch") is None
    server.stop()
    assert server.proc is not None and server.proc.returncode == 0


def test_a_wipe_while_running_is_refused(server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="kill\\(\\) or stop\\(\\) it before a wipe"):
        server.start(wipe=True)


def test_the_password_is_required_and_never_shown(tmp_path: Path) -> None:
    require_redis()
    password = secrets.token_hex(16)
    with RedisServer(tmp_path, password=password) as server:
        with pytest.raises(redis.AuthenticationError):
            client_at(server.port).ping()
        with pytest.raises(redis.AuthenticationError):
            client_at(server.port, password=secrets.token_hex(16)).ping()
        assert server.client().ping()
        assert redis.Redis.from_url(server.url).ping()
        assert server.url == f"redis://:{password}@127.0.0.1:{server.port}/0"
        for shown in (repr(server), str(server), server.log_tail(), server.log.read_text()):
            assert password not in shown
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert password.encode() not in cmdline  # it is in the config file, not on `ps`
        assert stat.S_IMODE(server.config_path.stat().st_mode) == 0o600


def test_a_password_that_would_need_quoting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="letters, digits and"):
        RedisServer(tmp_path, password=secrets.token_hex(8) + '"@')


def test_a_start_that_fails_says_why_with_the_log(server: RedisServer, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited 1 while starting") as failed:
        RedisServer(tmp_path, port=server.port, name="second")  # the port is taken
    assert "Address already in use" in str(failed.value)


def test_a_paused_server_answers_again_after_resume(server: RedisServer) -> None:
    client = client_at(server.port, password=server.password)
    assert client.ping()
    server.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            client.ping()
    finally:
        server.resume()
    assert client.ping()


def test_a_sentinel_gives_the_master(tmp_path: Path) -> None:
    require_redis()
    password = secrets.token_hex(16)
    with (
        RedisServer(tmp_path, password=password) as master,
        SentinelServer(tmp_path, master) as sentinel,
    ):
        # redis-py's Sentinel is untyped.
        sentinels = Sentinel([sentinel.address], socket_timeout=2)  # type: ignore[no-untyped-call]
        found = sentinels.discover_master(MASTER_NAME)  # type: ignore[no-untyped-call]
        assert found == master.address
        client = sentinels.master_for(  # type: ignore[no-untyped-call]
            MASTER_NAME, password=password, socket_timeout=2
        )
        client.set("through", "sentinel")
        assert master.client().get("through") == "sentinel"
        assert password not in repr(sentinel) and password not in sentinel.log_tail()


def test_a_partition_forwards_then_holds_and_heals(
    server: RedisServer, partition: Partition
) -> None:
    client = client_at(partition.port)
    assert client.ping() and client.set("k", "v")
    with socket.create_connection(partition.address, timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(100) == b"+PONG\r\n"
        partition.cut()  # hold
        with pytest.raises(ConnectionResetError):
            raw.recv(100)  # open connections are reset
    # redis-py finds its connection reset, dials again and is held: it times out.
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert connected_clients(server, 0) == 0
    partition.heal()
    assert client.get("k") == "v"


def test_a_partition_in_reset_mode_refuses_at_once(
    server: RedisServer, partition: Partition
) -> None:
    client = client_at(partition.port, timeout=5)
    assert client.ping()
    partition.cut("reset")
    for _ in range(2):  # the open connection, then a new one
        with pytest.raises(redis.ConnectionError):
            client.ping()
    assert connected_clients(server, 0) == 0  # Redis's end of the forwarded one is gone too
    partition.heal()
    assert client.ping()


def test_a_blackhole_stalls_open_connections_and_heal_delivers_late(
    server: RedisServer, partition: Partition
) -> None:
    with socket.create_connection(partition.address, timeout=5) as raw:
        raw.sendall(b"PING\r\n")
        assert raw.recv(100) == b"+PONG\r\n"
        partition.cut("blackhole")
        assert connected_clients(server, 1) == 1  # nothing was reset
        raw.sendall(b"PING\r\n")
        raw.settimeout(0.3)
        with pytest.raises(TimeoutError):
            raw.recv(100)
        with pytest.raises(redis.TimeoutError):
            client_at(partition.port).ping()
        partition.heal()
        raw.settimeout(5)
        assert raw.recv(100) == b"+PONG\r\n"


def test_a_partition_outlives_a_redis_restart_and_stops_cleanly(
    server: RedisServer, partition: Partition
) -> None:
    client = client_at(partition.port)
    assert client.ping()
    server.kill()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    server.start()
    assert client.ping()
    client.close()
    partition.cut()
    held = socket.create_connection(partition.address, timeout=5)
    assert open_connections(partition, 1) == 1
    partition.stop()
    assert not partition.thread.is_alive() and partition.open == 0
    assert held.recv(100) == b""  # closed by stop(), not left hanging
    held.close()
    assert connected_clients(server, 0) == 0


def test_an_unknown_cut_mode_names_the_ones_there_are(partition: Partition) -> None:
    with pytest.raises(ValueError, match="use one of hold, reset, blackhole"):
        partition.cut("drop")  # type: ignore[arg-type]
