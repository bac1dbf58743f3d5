"""Real Redis servers for the fleet tests and benchmarks: Debian's `redis-server` as a subprocess
on 127.0.0.1, killed, paused and started again with or without its data; and a Sentinel that
watches one of them.

Each server writes its settings to a config file in its folder (mode 0600: it may hold the
password, which therefore never shows on a command line) and its output to a log file there.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from router.dev.ports import free_port

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
MASTER_NAME = "fleet-master"
SAFE_PASSWORD = re.compile(r"[A-Za-z0-9._~-]+")
MISSING = "redis-server is not installed (Debian: apt-get install redis-server); CI installs it"
MISSING_IN_CI = "redis-server is not installed, yet CI must have it: .ci/run installs it (Debian)"


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def require_redis() -> str:
    """The redis-server binary. Without it the calling test skips, except in CI (CI=1), where
    it fails, as the Prometheus and tmpfs tests do."""
    import pytest  # here, so that the benchmarks can import this module without pytest

    binary = redis_server_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING_IN_CI)
        pytest.skip(MISSING)
    return binary


class ServerProcess:
    """One `redis-server CONFIG [--sentinel]` subprocess, started again on demand on the same
    port, config and data folder."""

    def __init__(self, folder: Path, port: int | None, password: str | None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.password = password
        self.config_path = folder / "redis.conf"
        self.log = folder / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    # What a subclass decides: its config file's text and its extra command-line arguments.
    def _config(self) -> str:
        raise NotImplementedError

    def _arguments(self) -> list[str]:
        return []

    def _ready(self, client: redis.Redis) -> bool:
        """Ready when this process answers (not another one on the port)."""
        assert self.proc is not None
        info = client.info("server")
        return bool(info["process_id"] == self.proc.pid)

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self!r} was never started"
        return self.proc.pid

    def client(self, timeout: float = 5.0) -> redis.Redis:
        """A synchronous client for the test's own assertions. It tries each command once (no
        retries to hide a fault behind) and gives values back as str."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def start(self) -> None:
        """Start the server and wait (at most START_TIMEOUT) until it answers. Without the
        redis-server binary this skips the calling test (fails it in CI): see require_redis."""
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        binary = require_redis()
        if not self.config_path.exists():
            self.config_path.touch(mode=0o600)
            self.config_path.write_text(self._config())
        with self.log.open("ab") as log:  # the child keeps its own handle
            self.proc = subprocess.Popen(
                [binary, str(self.config_path), *self._arguments()],
                cwd=self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.proc is not None
        probe = self.client(timeout=0.5)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self!r} exited {self.proc.returncode} while starting; "
                        f"its log ({self.log}) ends:\n{self.log_tail()}"
                    )
                try:
                    if self._ready(probe):
                        return
                except (redis.ConnectionError, redis.TimeoutError):  # not listening, loading
                    pass
                time.sleep(0.05)
        finally:
            probe.close()
        self.kill()
        raise RuntimeError(
            f"{self!r} did not answer within {START_TIMEOUT:g}s; "
            f"its log ({self.log}) ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as in a crash: no save, no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM and wait: Redis fsyncs its append-only file (if any) and saves no snapshot
        (the config has no save points), as SHUTDOWN NOSAVE does. A paused server is resumed
        first so that it can hear the signal; one that does not exit in time is killed."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers."""
        assert self.running, f"{self!r} is not running"
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.running, f"{self!r} is not running"
        os.kill(self.pid, signal.SIGCONT)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RedisServer(ServerProcess):
    """A real redis-server on 127.0.0.1 and a free port, started at construction.

    persist=False: no persistence at all; a restart always comes back empty.
    persist=True: an append-only file fsynced on every write, so that after kill() a start()
    comes back with every acknowledged write; start(wipe=True) deletes the data first.
    password: the server requires it (requirepass); it is in url and client(), never in repr.
    """

    def __init__(
        self,
        tmp: Path,
        *,
        persist: bool = False,
        password: str | None = None,
        port: int | None = None,
        name: str = "redis",
    ) -> None:
        if password is not None and not SAFE_PASSWORD.fullmatch(password):
            raise ValueError(
                "RedisServer(password=...): use letters, digits and ._~- only, so that it goes "
                "into a URL and the config file as it is; secrets.token_hex(16) gives one"
            )
        super().__init__(tmp / name, port, password)
        self.persist = persist
        self.data = self.folder / "data"
        self.data.mkdir(exist_ok=True)
        self.start()

    def __repr__(self) -> str:
        auth = "a password" if self.password else "no password"
        mode = "persistent" if self.persist else "in memory"
        return f"RedisServer({HOST}:{self.port}, {mode}, {auth})"

    @property
    def url(self) -> str:
        """redis://[:password@]127.0.0.1:PORT/0 (it carries the password: never log it)."""
        return self.url_via(self.port)

    def url_via(self, port: int) -> str:
        """This server's URL on another port, such as a Partition's in front of it."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{port}/0"

    def start(self, wipe: bool = False) -> None:
        """Start (again); wipe=True deletes the data files first, so it comes back empty."""
        if wipe:
            if self.running:
                raise RuntimeError(f"{self!r} is running: kill() or stop() it before a wipe")
            shutil.rmtree(self.data)
            self.data.mkdir()
        super().start()

    def _config(self) -> str:
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f'dir "{self.data}"',
            'save ""',
            "daemonize no",
            f"appendonly {'yes' if self.persist else 'no'}",
        ]
        if self.persist:
            lines.append("appendfsync always")
        if self.password:
            lines.append(f'requirepass "{self.password}"')
        return "\n".join(lines) + "\n"


class SentinelServer(ServerProcess):
    """A real Redis Sentinel (`redis-server CONFIG --sentinel`) on 127.0.0.1 and a free port,
    watching `master` under the name MASTER_NAME with a quorum of 1, started at construction.
    Clients find the master through it, e.g. with redis-py:
    `redis.sentinel.Sentinel([sentinel.address]).master_for(MASTER_NAME, password=...)`.
    Sentinel rewrites its own config file as it learns; a restart keeps what it learnt."""

    def __init__(
        self,
        tmp: Path,
        master: RedisServer,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        name: str = "sentinel",
    ) -> None:
        # The sentinel itself has no password; it uses the master's to talk to it.
        super().__init__(tmp / name, None, None)
        self.master = master
        self.master_name = MASTER_NAME
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.start()

    def __repr__(self) -> str:
        return (
            f"SentinelServer({HOST}:{self.port}, watching {self.master_name} on {self.master.port})"
        )

    def _arguments(self) -> list[str]:
        return ["--sentinel"]

    def _ready(self, client: redis.Redis) -> bool:
        """Ready when this process answers, with the master's address."""
        if not super()._ready(client):
            return False
        address = client.execute_command(  # type: ignore[no-untyped-call]  # untyped in redis-py
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        return address is not None and tuple(address) == (HOST, str(self.master.port))

    def _config(self) -> str:
        name = self.master_name
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f'dir "{self.folder}"',
            "daemonize no",
            f"sentinel monitor {name} {HOST} {self.master.port} 1",
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
        ]
        if self.master.password:
            lines.append(f'sentinel auth-pass {name} "{self.master.password}"')
        return "\n".join(lines) + "\n"
